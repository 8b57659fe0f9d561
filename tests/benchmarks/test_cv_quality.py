"""benchmarks/cv_quality.py: folds, statistics, cache, and that no test fold reaches training."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.myops import MYOPS_DEV_TEST
from deepgmm.data.slices import make_batch
from deepgmm.types import CaseVolume

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cv_quality.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("cv_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cv_quality"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cvq = _load_script()

PHANTOM_CROP = (64, 64)


# --- folds ---------------------------------------------------------------------------------


def test_folds_partition_the_25_patients_with_the_paper_split_first() -> None:
    members = [p for fold in cvq.FOLDS.values() for p in fold]
    assert len(members) == len(set(members)) == 25
    assert set(members) == {str(p) for p in range(101, 126)}
    assert sorted(cvq.FOLDS) == [1, 2, 3, 4, 5]
    assert cvq.FOLDS[1] == tuple(MYOPS_DEV_TEST)
    assert all(len(fold) == 5 for fold in cvq.FOLDS.values())
    assert cvq.fold_of("114") == 1 and cvq.fold_of("101") == 2


def test_literal_folds_are_the_documented_draw() -> None:
    assert cvq.draw_folds() == cvq.FOLDS
    assert cvq.draw_folds(seed=cvq.FOLD_DRAW_SEED + 1) != cvq.FOLDS


def test_mu_seed_follows_the_run_seed_unless_fixed() -> None:
    assert [cvq.mu_seed_for(s) for s in (0, 1, 2)] == [42, 43, 44]
    assert cvq.mu_seed_for(3, fixed=7) == 7


@pytest.mark.myops
def test_every_real_all_class_slice_is_in_exactly_one_test_fold() -> None:
    root = cvq.DEFAULT_ROOT
    if not (root / "train25").is_dir():
        pytest.skip(f"MyoPS 2020 data not found at {root}")
    from deepgmm.data.dataset import load_dataset

    volumes = load_dataset(root)
    seen: list[tuple[str, int]] = []
    for fold, patients in cvq.FOLDS.items():
        train, test = cvq.fold_batches(volumes, patients)
        assert set(test.case_ids) == set(patients), fold
        assert not set(train.case_ids) & set(patients), fold
        assert len(train) + len(test) == cvq.N_ALL_CLASS_SLICES
        seen += list(zip(test.case_ids, test.slice_indices, strict=True))
    assert len(seen) == len(set(seen)) == cvq.N_ALL_CLASS_SLICES == 79
    everything = make_batch(volumes, require_labels=True)
    assert set(seen) == set(zip(everything.case_ids, everything.slice_indices, strict=True))


# --- statistics ----------------------------------------------------------------------------


def test_paired_comparison_hand_computed() -> None:
    a = {"101": 1.0, "102": 0.5, "103": 1.0, "104": 1.0, "105": 1.0}
    b = {"101": 0.875, "102": 0.75, "103": 0.625, "104": 0.5, "105": 0.375, "106": 0.0}
    res = cvq.paired_comparison(a, b)
    assert res.patients == ["101", "102", "103", "104", "105"]  # 106 only in b
    np.testing.assert_array_equal(res.differences, [0.125, -0.25, 0.375, 0.5, 0.625])
    assert res.mean == pytest.approx(1.375 / 5)
    # |d| ranks 1..5, W- = 2: the exact two-sided p is 2 * #{rank sums <= 2} / 2^5 = 6 / 32.
    assert res.p_value == pytest.approx(0.1875)
    assert res.p_value == pytest.approx(wilcoxon(res.differences).pvalue)
    back = cvq.paired_comparison(b, a)
    assert back.mean == pytest.approx(-res.mean) and back.p_value == pytest.approx(0.1875)
    assert np.isnan(cvq.paired_comparison(a, a).p_value)


def test_patient_means_average_each_patients_slices() -> None:
    values = np.array([[1.0, 0.0], [0.5, 1.0], [0.25, np.nan]])
    means = cvq.patient_means(values, ["101", "101", "102"])
    np.testing.assert_allclose(means["101"], [0.75, 0.5])
    np.testing.assert_allclose(means["102"], [0.25, np.nan])


def _unit(fold: int, seed: int, cases: list[str], dice: np.ndarray):
    s = len(cases)
    blank = np.zeros((s, 2, 2), dtype=np.int64)
    return cvq.Unit(fold=fold, seed=seed, case_ids=np.array(cases), slices=np.arange(s),
                    pred=blank, truth=blank, dice=dice, meta={"train_seconds": 1.0})


def test_compare_uses_patient_means_over_slices_and_seeds() -> None:
    folds = {1: ("101",), 2: ("102",)}
    ones = np.ones((1, 4))
    a = cvq.summarise("a", [
        _unit(1, 0, ["101", "101"], np.array([[0.6] * 4, [0.8] * 4])),
        _unit(2, 0, ["102"], 0.5 * ones),
        _unit(1, 1, ["101", "101"], np.array([[0.8] * 4, [1.0] * 4])),
        _unit(2, 1, ["102"], 0.7 * ones)], folds=folds)
    b = cvq.summarise("b", [_unit(1, 0, ["101", "101"], np.full((2, 4), 0.5)),
                            _unit(2, 0, ["102"], 0.9 * ones)], folds=folds)
    assert a.seeds == [0, 1] and not a.partial and a.n_slices == 3
    np.testing.assert_allclose(a.seed_means[:, 0], [1.9 / 3, 2.5 / 3])
    res = cvq.compare(a, b)["scar"]
    # a: 101 -> mean of (0.7, 0.9) per slice = 0.8, 102 -> 0.6; b: 0.5 and 0.9.
    np.testing.assert_allclose(res.differences, [0.3, -0.3])
    assert res.mean == pytest.approx(0.0)
    partial = cvq.summarise("p", [_unit(1, 0, ["101"], ones)], folds=folds)
    assert partial.partial and partial.n_slices == 1


def test_dice_3d_pools_a_cases_slices() -> None:
    # case 101: two 2x2 slices; case 102: one slice with no edema / scar at all.
    pred = np.array([[[4, 4], [3, 1]], [[4, 0], [2, 3]], [[1, 2], [2, 1]]])
    truth = np.array([[[4, 3], [3, 3]], [[4, 4], [2, 2]], [[1, 1], [2, 2]]])
    out = cvq.dice_3d_per_case(pred, truth, ["101", "101", "102"])
    # scar: pred 3 voxels, truth 3, both 2 -> 4/6; edema|scar: pred 5, truth 6, both 4 -> 8/11
    assert out["101"][0] == pytest.approx(4 / 6)
    assert out["101"][1] == pytest.approx(8 / 11)
    assert np.isnan(out["102"][0]) and np.isnan(out["102"][1])


def test_bootstrap_matches_a_loop_over_resampled_patients() -> None:
    rng = np.random.default_rng(5)
    patients = np.array(["a", "a", "b", "c", "c", "c", "d"])
    values = rng.uniform(size=(7, 2))
    lo_hi = cvq.bootstrap_ci(values, patients, n_boot=300, seed=3)
    ids = np.unique(patients)
    draws = np.random.default_rng(3).integers(0, len(ids), size=(300, len(ids)))
    means = np.array([np.concatenate([values[patients == ids[i]] for i in d]).mean(axis=0)
                      for d in draws])
    np.testing.assert_allclose(lo_hi, np.quantile(means, [0.025, 0.975], axis=0).T)
    assert (lo_hi[:, 0] <= values.mean(axis=0)).all()
    assert (values.mean(axis=0) <= lo_hi[:, 1]).all()
    flat = cvq.bootstrap_ci(np.full((7, 2), 0.4), patients, n_boot=50)
    np.testing.assert_allclose(flat, 0.4)


# --- no test fold in training ----------------------------------------------------------------


def _altered(volume: CaseVolume) -> CaseVolume:
    """The same case with other intensities and edema / scar swapped in the ground truth."""
    labels = volume.labels.copy()
    labels[volume.labels == 3], labels[volume.labels == 4] = 4, 3
    return dataclasses.replace(volume, image=volume.image * 1.7 + 30.0, labels=labels)


@pytest.mark.parametrize("config", ["qda", "em-gmm-mu"])
def test_test_patients_never_reach_what_is_learned(phantom_volumes, config) -> None:
    test_ids = ("104",)
    method = cvq.REGISTRY[config]
    train, test = cvq.fold_batches(phantom_volumes, test_ids, crop_size=PHANTOM_CROP)
    assert "104" not in train.case_ids and set(test.case_ids) == {"104"}
    out = cvq.run_unit(method, train, test, seed=0, mu_seed=42, device="cpu")

    train_only = make_batch([v for v in phantom_volumes if v.case_id not in test_ids],
                            crop_size=PHANTOM_CROP, require_labels=True)
    np.testing.assert_array_equal(out.learned["mu_data"],
                                  compute_mu_data(train_only, n_slices=10, seed=42))
    if config == "qda":
        x, y = cvq.roi_pixels(train_only)
        ref = QuadraticDiscriminantAnalysis(store_covariance=True).fit(x, y)
        np.testing.assert_allclose(out.learned["means"], ref.means_)
        np.testing.assert_allclose(out.learned["covariances"], np.stack(ref.covariance_))
        np.testing.assert_allclose(out.learned["priors"], ref.priors_)
    assert out.probs.shape == (len(test), 4, *PHANTOM_CROP)

    changed = [_altered(v) if v.case_id in test_ids else v for v in phantom_volumes]
    train2, test2 = cvq.fold_batches(changed, test_ids, crop_size=PHANTOM_CROP)
    out2 = cvq.run_unit(method, train2, test2, seed=0, mu_seed=42, device="cpu")
    assert out2.learned.keys() == out.learned.keys()
    for key, value in out.learned.items():
        np.testing.assert_array_equal(out2.learned[key], value, err_msg=key)
    assert not np.array_equal(test2.labels.numpy(), test.labels.numpy())  # the test changed


def test_supervised_unet_trains_on_the_chosen_slices_only(phantom_batch) -> None:
    import torch

    chosen = np.array([0, 2])
    net = cvq.train_supervised_unet(phantom_batch, chosen, epochs=1, seed=0, device="cpu")
    altered = dataclasses.replace(phantom_batch, image=phantom_batch.image.clone(),
                                  labels=phantom_batch.labels.clone())
    altered.image[1] += 5.0
    altered.labels[3] = 0
    net2 = cvq.train_supervised_unet(altered, chosen, epochs=1, seed=0, device="cpu")
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)
    two = dataclasses.replace(phantom_batch, image=phantom_batch.image[:2],
                              roi=phantom_batch.roi[:2], labels=None)
    probs = cvq.unet_probs(net, two, device="cpu")
    assert probs.shape == (2, 4, *PHANTOM_CROP)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


# --- cache and command line ------------------------------------------------------------------


def test_cache_round_trip_and_mu_seed_rule(tmp_path, phantom_batch) -> None:
    key = cvq.unit_key("qda", 2, 1, 43)
    assert key == "qda/fold2-seed1-mu43"
    assert cvq.parse_key("fold2-seed1-mu43") == (2, 1, 43)
    assert not cvq.is_cached(tmp_path, key)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(len(phantom_batch), *PHANTOM_CROP))
    out = cvq.MethodOutput(probs=probs.transpose(0, 3, 1, 2).astype(np.float32),
                           train_seconds=2.5, predict_seconds=0.5)
    cvq.save_unit(tmp_path, key, phantom_batch, out, {"train_seconds": 2.5})
    cvq.save_unit(tmp_path, cvq.unit_key("qda", 2, 1, 7), phantom_batch, out,
                  {"train_seconds": 1.0})
    assert cvq.is_cached(tmp_path, key)
    assert not list(tmp_path.rglob("*.tmp*"))
    units = cvq.load_units(tmp_path, "qda")  # default rule: mu seed 42 + seed
    assert [(u.fold, u.seed) for u in units] == [(2, 1)]
    roi = phantom_batch.roi.numpy()
    expected = np.where(roi, out.probs.argmax(axis=1) + 1, 0)
    np.testing.assert_array_equal(units[0].pred, expected)
    np.testing.assert_array_equal(units[0].truth, phantom_batch.labels.numpy())
    assert units[0].case_ids.tolist() == phantom_batch.case_ids
    assert [u.meta["train_seconds"] for u in cvq.load_units(tmp_path, "qda", 7)] == [1.0]
    # --seeds picks the seeds of a report: seed 0 of fold 2 beside seed 1
    cvq.save_unit(tmp_path, cvq.unit_key("qda", 2, 0, 42), phantom_batch, out,
                  {"train_seconds": 3.0})
    every, = cvq.summaries_from_cache(tmp_path, ["qda"], None)
    assert every.seeds == [0, 1] and every.n_units == 2
    only, = cvq.summaries_from_cache(tmp_path, ["qda"], None, seeds=[0])
    assert only.seeds == [0] and only.n_units == 1 and only.train_seconds == 3.0
    assert cvq.summaries_from_cache(tmp_path, ["qda"], None, seeds=[5]) == []


def test_an_lv_name_relabels_the_entrys_units_under_the_anatomy_rule(tmp_path,
                                                                     phantom_batch) -> None:
    from deepgmm.anatomy import anatomical_labels

    assert cvq.split_config("deepsvg+lv") == ("deepsvg", "lv")
    assert cvq.split_config("deepsvg") == ("deepsvg", "none")
    assert "deepsvg-roinorm+lv" in cvq.config_names()
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=(len(phantom_batch), *PHANTOM_CROP))
    out = cvq.MethodOutput(probs=probs.transpose(0, 3, 1, 2).astype(np.float32),
                           train_seconds=1.0, predict_seconds=0.1)
    cvq.save_unit(tmp_path, cvq.unit_key("qda", 1, 0, 42), phantom_batch, out,
                  {"train_seconds": 1.0})
    plain, = cvq.load_units(tmp_path, "qda")
    lv, = cvq.load_units(tmp_path, "qda+lv")
    roi = phantom_batch.roi.numpy()
    stored = out.probs.astype(np.float16)  # what the cache keeps
    expected = anatomical_labels(stored, roi, phantom_batch.spacing)
    np.testing.assert_array_equal(lv.pred, expected)
    assert (lv.pred != plain.pred).any()
    np.testing.assert_array_equal(lv.truth, plain.truth)
    assert cvq.split_config("deepsvg+fuse+lv-dice") == ("deepsvg", "fuse+lv-dice")
    lv_dice, = cvq.load_units(tmp_path, "qda+lv-dice")
    np.testing.assert_array_equal(lv_dice.pred, anatomical_labels(
        stored, roi, phantom_batch.spacing, wall_decision="dice"))
    assert (lv_dice.pred != lv.pred).any()


def test_report_on_an_empty_cache_is_a_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cvq.main(["--report", "--cache", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nothing cached") and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        cvq.main(["--report", "--cache", str(tmp_path / "missing")])
    assert exc.value.code == 2


def test_seed_major_plan_runs_every_config_for_a_seed_first() -> None:
    units = cvq.plan(["a", "b"], [1, 2], [0, 1], "seed-major")
    assert units[:4] == [("a", 1, 0), ("a", 2, 0), ("b", 1, 0), ("b", 2, 0)]
    assert cvq.plan(["a", "b"], [1], [0, 1], "config-major")[:2] == [("a", 1, 0), ("a", 1, 1)]


def test_markdown_replaces_only_the_marked_tables(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# title\n\nintro\n\n{cvq.TABLES_START}\nold\n{cvq.TABLES_END}\n\nend\n")
    cvq.write_markdown(page, "| a |\n|---|\n")
    assert page.read_text() == (f"# title\n\nintro\n\n{cvq.TABLES_START}\n\n| a |\n|---|\n\n"
                                f"{cvq.TABLES_END}\n\nend\n")
    bare = tmp_path / "bare.md"
    cvq.write_markdown(bare, "tables\n")
    assert bare.read_text() == "tables\n"


def test_roi_normalised_entry_gets_roi_normalised_slices_and_mu_data(phantom_volumes) -> None:
    method = cvq.REGISTRY["deepsvg-roinorm"]
    assert method.normalise == "roi" and method.run.keywords["normalise"] == "roi"
    seen = {}

    def capture(fold):
        seen["fold"] = fold
        return cvq.MethodOutput(probs=np.zeros((len(fold.test), 4, *PHANTOM_CROP)),
                                train_seconds=0.0, predict_seconds=0.0)

    train, test = cvq.fold_batches(phantom_volumes, ("104",), normalise="roi",
                                   crop_size=PHANTOM_CROP)
    cvq.run_unit(cvq.Method(capture, "capture", "roi"), train, test, seed=1, mu_seed=43)
    fold = seen["fold"]
    roi_test = make_batch([v for v in phantom_volumes if v.case_id == "104"],
                          crop_size=PHANTOM_CROP, normalisation="roi", require_labels=True)
    np.testing.assert_array_equal(fold.test.image.numpy(), roi_test.image.numpy())
    roi_train = make_batch([v for v in phantom_volumes if v.case_id != "104"],
                           crop_size=PHANTOM_CROP, normalisation="roi", require_labels=True)
    np.testing.assert_array_equal(fold.mu_data, compute_mu_data(roi_train, 10, seed=43))
    crop_train = make_batch([v for v in phantom_volumes if v.case_id != "104"],
                            crop_size=PHANTOM_CROP, require_labels=True)
    assert not np.allclose(fold.mu_data, compute_mu_data(crop_train, 10, seed=43))


def test_a_fuse_name_fuses_with_the_training_folds_class_gaussians(tmp_path, phantom_root,
                                                                   phantom_volumes,
                                                                   monkeypatch) -> None:
    import torch

    from deepgmm.anatomy import anatomical_labels
    from deepgmm.mixture.fusion import fit_class_gaussians, fuse_probabilities

    assert cvq.split_config("deepsvg+fuse+lv") == ("deepsvg", "fuse+lv")
    assert "deepsvg-roinorm+fuse+lv" in cvq.config_names()
    monkeypatch.setattr(cvq, "FOLDS", {1: ("102",)})
    train, test = cvq.fold_batches(phantom_volumes, ["102"], crop_size=PHANTOM_CROP)
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=(len(test), *PHANTOM_CROP)).transpose(0, 3, 1, 2)
    out = cvq.MethodOutput(probs=probs.astype(np.float32), train_seconds=1.0,
                           predict_seconds=0.1)
    cvq.save_unit(tmp_path, cvq.unit_key("qda", 1, 0, 42), test, out,
                  {"train_seconds": 1.0, "normalise": "crop"})
    fused, = cvq.load_units(tmp_path, "qda+fuse+lv", root=phantom_root)
    gaussians = fit_class_gaussians(train, n_slices=cvq.N_MU_SLICES, seed=42)  # μ_data's draw
    stored = torch.as_tensor(out.probs.astype(np.float16).astype(np.float32))
    expected = anatomical_labels(
        fuse_probabilities(stored, test.image, test.roi, gaussians).numpy(),
        test.roi.numpy(), test.spacing)
    np.testing.assert_array_equal(fused.pred, expected)


def test_gap_closed_on_the_common_slices_by_hand() -> None:
    def summary(name: str, keys: list, dice: list) -> object:
        d = np.asarray(dice, dtype=float)
        return cvq.Summary(config=name, seeds=[0], partial=False, n_slices=len(keys),
                           slice_dice=d, patients=np.array([k[0] for k in keys]),
                           seed_means=d.mean(axis=0, keepdims=True), case_3d={},
                           train_seconds=0.0, n_units=1, precision="fp32",
                           slice_keys=keys)

    keys = [("101", 0), ("101", 1), ("102", 0)]
    base = summary("b", keys, [[0.5] * 4, [0.7] * 4, [0.0] * 4])
    cand = summary("c", keys, [[0.6] * 4, [0.8] * 4, [1.0] * 4])
    ref = summary("r", keys[:2], [[0.9] * 4, [0.9] * 4])  # only the first two slices
    n, values = cvq.gap_closed(base, cand, ref)
    assert n == 2  # slice ("102", 0) is not scored by the reference
    # baseline 0.6, candidate 0.7, reference 0.9: a third of the gap closed
    np.testing.assert_allclose(values, [[0.6] * 4, [0.7] * 4, [0.9] * 4, [1 / 3] * 4])
    assert "33.3 %" in cvq.gap_table(base, cand, ref)
    with pytest.raises(ValueError, match="no scored slice"):
        cvq.gap_closed(base, cand, summary("x", [("109", 3)], [[1.0] * 4]))
