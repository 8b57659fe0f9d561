"""evaluate_outputs and ``deepgmm evaluate``: metrics recomputed from saved label maps."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.errors import InputError
from deepgmm.evaluate.recompute import evaluate_outputs
from deepgmm.report.outputs import write_segmentation

CLASSES = ("blood", "myocardium", "edema", "scar")


@pytest.fixture
def written(tmp_path, synth):
    """A data root in MyoPS layout and an output folder of identity-matched (wrong)
    clusters, so Dice differs between classes."""
    volumes = synth.default_cases()
    root = synth.write_myops(tmp_path / "data", volumes)
    batch = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS)
    result, perm = synth.shuffled_onehot_result(batch.labels, seed=4)
    out = tmp_path / "out"
    summary = write_segmentation(out, volumes, batch, result, matching="none", figures=False,
                                 progress=False)
    return root, out, summary, perm


def test_recomputed_metrics_equal_the_written_ones(written):
    root, out, summary, perm = written
    ev = evaluate_outputs(out, root)
    for key in ("dice", "dice_sd", "hd95"):
        for name in CLASSES:
            a, b = ev[key][name], summary[key][name]
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-12)
    expected = (perm == np.arange(4)).astype(float).mean(axis=0)
    np.testing.assert_allclose([ev["dice"][n] for n in CLASSES], expected)
    assert ev["n_slices"] == 3 and ev["cases"] == ["101", "102"]
    assert ev["method"] == "test" and ev["matching"] == "none"
    assert json.loads((out / "evaluation.json").read_text()) == ev
    with open(out / "results.csv", newline="") as fh:
        res = list(csv.DictReader(fh))
    with open(out / "evaluation.csv", newline="") as fh:
        evr = list(csv.DictReader(fh))
    assert [(r["case"], r["slice"]) for r in evr] == [(r["case"], r["slice"]) for r in res]
    for r, e in zip(res, evr, strict=True):
        for n in CLASSES:
            assert r[f"dice_{n}"] == e[f"dice_{n}"] and r[f"hd95_{n}"] == e[f"hd95_{n}"]


def test_patients_subset(written):
    root, out, _, perm = written
    ev = evaluate_outputs(out, root, ["102"], write=False)
    assert ev["n_slices"] == 1 and ev["cases"] == ["102"]
    np.testing.assert_allclose([ev["dice"][n] for n in CLASSES],
                               (perm[2] == np.arange(4)).astype(float))
    assert not (out / "evaluation.json").exists()
    with pytest.raises(InputError, match="not in"):
        evaluate_outputs(out, root, ["999"])


def test_bad_inputs(tmp_path, written, synth):
    root, out, _, _ = written
    with pytest.raises(InputError, match="does not exist"):
        evaluate_outputs(tmp_path / "missing", root)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(InputError, match="not a deepgmm output folder"):
        evaluate_outputs(foreign, root)
    # ground truth missing: a root whose cases have no _gd files
    no_gd = synth.write_myops(tmp_path / "nogd", synth.default_cases(), with_gd=False)
    with pytest.raises(InputError, match="no ground truth"):
        evaluate_outputs(out, no_gd)
    # a case of OUT that is not below ROOT
    only_101 = synth.write_myops(tmp_path / "one", synth.default_cases()[:1])
    with pytest.raises(InputError, match="case 102 is not below"):
        evaluate_outputs(out, only_101)
    # grids that do not match
    gd = root / "gd" / "myops_training_101_gd.nii.gz"
    img = nib.load(str(gd))
    shifted = img.affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), shifted), str(gd))
    with pytest.raises(InputError, match="different affines"):
        evaluate_outputs(out, root)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-1], img.affine), str(gd))
    with pytest.raises(InputError, match="not on one grid"):
        evaluate_outputs(out, root)


def test_cli_prints_table_and_writes_files(written):
    root, out, _, perm = written
    result = CliRunner().invoke(app, ["evaluate", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = (perm == np.arange(4)).astype(float).mean(axis=0)
    lines = result.output.splitlines()
    for name, value in zip(CLASSES, expected, strict=True):
        row = next(line for line in lines if line.startswith(name))
        assert row.split()[1] == f"{value:.3f}"
    assert (out / "evaluation.csv").is_file() and (out / "evaluation.json").is_file()
    sub = CliRunner().invoke(app, ["evaluate", str(root), "--out", str(out),
                                   "--patients", "102"])
    assert sub.exit_code == 0, sub.output
    assert json.loads((out / "evaluation.json").read_text())["cases"] == ["102"]
    both = CliRunner().invoke(app, ["evaluate", str(root), "--out", str(out),
                                    "--patients", "102", "101"])
    assert both.exit_code == 0, both.output
    assert json.loads((out / "evaluation.json").read_text())["cases"] == ["102", "101"]


@pytest.mark.parametrize("args, message", [
    (["{root}", "--out", "{tmp}/missing"], "does not exist"),
    (["{root}", "--out", "{tmp}"], "not a deepgmm output folder"),
    (["{tmp}/nowhere", "--out", "{out}"], "does not exist"),
    (["{root}", "--out", "{out}", "--patients", "555"], "not in"),
])
def test_cli_bad_input_is_one_line(tmp_path, written, args, message):
    root, out, _, _ = written
    argv = [a.format(tmp=tmp_path, root=root, out=out) for a in args]
    result = CliRunner().invoke(app, ["evaluate", *argv])
    assert result.exit_code == 2
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                      SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_rematching_from_the_probability_maps(written):
    """The saved clusters are a permutation of the truth written with matching none:
    Hungarian and greedy re-assignment recover the truth (Dice 1 for every class present),
    none reproduces the written figures, and the saved maps stay as they are."""
    root, out, summary, perm = written
    seg = out / "101_seg.nii.gz"
    before = seg.read_bytes()
    for rule in ("hungarian", "greedy"):
        ev = evaluate_outputs(out, root, matching=rule, write=False)
        assert ev["matching"] == rule
        for name in CLASSES:
            assert ev["dice"][name] == pytest.approx(1.0), (rule, name)
            assert ev["hd95"][name] in (None, pytest.approx(0.0))
    same = evaluate_outputs(out, root, matching="none", write=False)
    for name in CLASSES:
        assert same["dice"][name] == pytest.approx(summary["dice"][name], abs=1e-12)
    assert seg.read_bytes() == before
    result = CliRunner().invoke(app, ["evaluate", str(root), "--out", str(out), "--matching",
                                      "hungarian"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "evaluation.json").read_text())["matching"] == "hungarian"


def test_rematching_needs_valid_rule_and_probability_maps(written):
    root, out, _, _ = written
    bad = CliRunner().invoke(app, ["evaluate", str(root), "--out", str(out),
                                   "--matching", "best"])
    assert bad.exit_code == 2 and "matching must be one of" in bad.output
    (out / "102_prob.nii.gz").unlink()
    with pytest.raises(InputError, match="needs the probability map"):
        evaluate_outputs(out, root, matching="hungarian", write=False)
    (out / "101_prob.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="cannot read the probability map"):
        evaluate_outputs(out, root, ["101"], matching="hungarian", write=False)
    assert not (out / "evaluation.json").exists()


def test_new_layout_and_the_older_one_map_layout(tmp_path, synth):
    """Written with hungarian: no rule scores the matched maps (Dice 1), rule none the own
    clusters; a folder of the older layout (one MyoPS-coded map, no ``maps`` entry) still
    evaluates."""
    volumes = synth.default_cases()
    root = synth.write_myops(tmp_path / "data", volumes)
    batch = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS)
    result, perm = synth.shuffled_onehot_result(batch.labels, seed=4)
    out = tmp_path / "out"
    write_segmentation(out, volumes, batch, result, matching="hungarian", figures=False,
                       progress=False)
    ev = evaluate_outputs(out, root, write=False)
    assert ev["matching"] == "hungarian" and ev["dice"] == dict.fromkeys(CLASSES, 1.0)
    own = evaluate_outputs(out, root, matching="none", write=False)
    expected = (perm == np.arange(4)).astype(float).mean(axis=0)
    np.testing.assert_allclose([own["dice"][n] for n in CLASSES], expected)
    for case in ("101", "102"):  # the older layout: the matched maps under the plain names
        (out / f"{case}_seg_matched.nii.gz").replace(out / f"{case}_seg.nii.gz")
        (out / f"{case}_prob_matched.nii.gz").replace(out / f"{case}_prob.nii.gz")
    summary = json.loads((out / "summary.json").read_text())
    del summary["maps"], summary["class_order"]
    (out / "summary.json").write_text(json.dumps(summary))
    old = evaluate_outputs(out, root, write=False)
    assert old["matching"] == "hungarian" and old["dice"] == dict.fromkeys(CLASSES, 1.0)
    assert evaluate_outputs(out, root, matching="greedy", write=False)["dice"] == dict.fromkeys(
        CLASSES, 1.0)


def test_an_auto_roi_reaches_the_lv_rule_of_the_written_and_the_rematched_maps(
        tmp_path, synth, monkeypatch):
    """write_segmentation tells the anatomy rule when the ROI was predicted (``roi:
    auto``), and evaluate's re-matching reads it back from summary.json."""
    import deepgmm.anatomy as anatomy_module
    from deepgmm.evaluate import recompute

    seen: list[bool] = []
    real = anatomy_module.anatomical_labels

    def spy(*args, **kwargs):
        seen.append(bool(kwargs.get("predicted_roi", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(anatomy_module, "anatomical_labels", spy)
    volumes = synth.default_cases()
    root = synth.write_myops(tmp_path / "data", volumes)
    batch = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS)
    result, _ = synth.shuffled_onehot_result(batch.labels, seed=4)
    for kind, expected in (("gt", False), ("auto", True)):
        seen.clear()
        out = tmp_path / kind
        write_segmentation(out, volumes, batch, result, matching="hungarian", figures=False,
                           progress=False, anatomy="lv", roi_source={"roi": kind})
        assert seen and set(seen) == {expected}, kind
        assert recompute.read_predicted_roi(out) is expected
        seen.clear()
        evaluate_outputs(out, root, matching="hungarian")
        assert seen and set(seen) == {expected}, kind
