"""μ_data: hand-checkable means, seeded draws, JSON round trip and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepgmm.data.mu_data import check_mu_data, compute_mu_data, load_mu_data, save_mu_data
from deepgmm.errors import InputError
from deepgmm.types import SliceBatch


def _batch(image: np.ndarray, labels: np.ndarray | None) -> SliceBatch:
    b = image.shape[0]
    return SliceBatch(image=torch.from_numpy(image.astype(np.float32)),
                      roi=torch.from_numpy(labels > 0) if labels is not None else
                      torch.ones(image.shape[:1] + image.shape[2:], dtype=torch.bool),
                      labels=torch.from_numpy(labels) if labels is not None else None,
                      case_ids=["1"] * b, slice_indices=list(range(b)),
                      crop_origins=np.zeros((b, 2), np.int64),
                      full_shapes=np.tile(image.shape[2:], (b, 1)),
                      sequences=("A", "B"), spacing=np.ones((b, 2)))


def test_hand_computed_means_pool_pixels():
    labels = np.array([[[0, 1, 2], [3, 4, 4]],
                       [[1, 1, 2], [3, 3, 4]]], dtype=np.int64)  # (2, 2, 3)
    image = np.stack([labels * 1.0, -labels * 10.0 + np.arange(6).reshape(2, 3)], axis=1)
    image = image.astype(np.float64)  # (2, 2, 2, 3)
    image[1, 0] += 100.0  # second slice, sequence A shifted
    mu = compute_mu_data(_batch(image, labels), n_slices=2, seed=0)
    # class 1 (blood): slice0 pixel (0,1): A=1, B=-10+1; slice1 (0,0),(0,1): A=101, B=-10+0, -10+1
    np.testing.assert_allclose(mu[0], [(1 + 101 + 101) / 3, (-9 - 10 - 9) / 3])
    # class 4 (scar): slice0 (1,1),(1,2): A=4, B=-40+4, -40+5; slice1 (1,2): A=104, B=-40+5
    np.testing.assert_allclose(mu[3], [(4 + 4 + 104) / 3, (-36 - 35 - 35) / 3])
    assert mu.shape == (4, 2)


def test_draw_is_seeded_and_uses_n_slices(phantom_batch):
    a = compute_mu_data(phantom_batch, n_slices=5, seed=42)
    b = compute_mu_data(phantom_batch, n_slices=5, seed=42)
    c = compute_mu_data(phantom_batch, n_slices=5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    chosen = np.sort(np.random.default_rng(42).choice(len(phantom_batch), 5, replace=False))
    img = phantom_batch.image[chosen].numpy()
    lab = phantom_batch.labels[chosen].numpy()
    expected = [[img[:, m][lab == k].mean() for m in range(3)] for k in range(1, 5)]
    np.testing.assert_allclose(a, expected, rtol=1e-5)


def test_phantom_mu_data_reflects_contrasts(phantom_batch):
    mu = compute_mu_data(phantom_batch, n_slices=10, seed=42)
    blood, myo, edema, scar = mu
    c0, de, t2 = 0, 1, 2
    assert blood[c0] > myo[c0] and scar[de] > myo[de] and edema[t2] > myo[t2]


def test_too_many_slices_uses_all(phantom_batch, caplog):
    mu = compute_mu_data(phantom_batch, n_slices=1000)
    np.testing.assert_allclose(mu, compute_mu_data(phantom_batch, n_slices=len(phantom_batch),
                                                   seed=1), rtol=1e-6)
    assert "only 12 available" in caplog.text


def test_compute_errors():
    labels = np.ones((1, 2, 2), np.int64)
    with pytest.raises(InputError, match="needs ground-truth labels"):
        compute_mu_data(_batch(np.zeros((1, 2, 2, 2)), None))
    with pytest.raises(InputError, match="myocardium, edema, scar absent"):
        compute_mu_data(_batch(np.zeros((1, 2, 2, 2)), labels))
    with pytest.raises(InputError, match="at least 1"):
        compute_mu_data(_batch(np.zeros((1, 2, 2, 2)), labels), n_slices=0)


def test_json_round_trip(tmp_path: Path):
    mu = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    path = save_mu_data(mu, ("C0", "DE", "T2"), tmp_path / "sub" / "mu.json")
    doc = json.loads(path.read_text())
    assert doc["classes"] == ["blood", "myocardium", "edema", "scar"]
    assert doc["sequences"] == ["C0", "DE", "T2"]
    np.testing.assert_array_equal(load_mu_data(path), mu)
    np.testing.assert_array_equal(load_mu_data(path, ["C0", "DE", "T2"]), mu)
    assert [p.name for p in path.parent.iterdir()] == ["mu.json"]


def test_json_errors(tmp_path: Path):
    path = save_mu_data(np.zeros((4, 2)), ("C0", "DE"), tmp_path / "mu.json")
    with pytest.raises(InputError, match=r"mu\.json.*sequences \['C0', 'DE'\].*\['DE', 'C0'\]"):
        load_mu_data(path, ["DE", "C0"])
    with pytest.raises(InputError, match="shape"):
        save_mu_data(np.zeros((4, 3)), ("C0", "DE"), tmp_path / "bad.json")
    with pytest.raises(InputError, match="NaN"):
        save_mu_data(np.full((4, 2), np.nan), ("C0", "DE"), tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(InputError, match="does not exist"):
        load_mu_data(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match=r"broken\.json.*not valid JSON"):
        load_mu_data(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"classes": ["a"], "sequences": [],
                                                     "mu": []}))
    with pytest.raises(InputError, match="has classes"):
        load_mu_data(tmp_path / "other.json")
    (tmp_path / "short.json").write_text(json.dumps(
        {"classes": ["blood", "myocardium", "edema", "scar"], "sequences": ["A"],
         "mu": [[1.0], [2.0]]}))
    with pytest.raises(InputError, match="finite 4 x 1 matrix"):
        load_mu_data(tmp_path / "short.json")


def test_check_mu_data_shapes_values_and_broadcast():
    mu = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    out = check_mu_data(mu, 4, 3)
    assert out.dtype == torch.float32 and out.shape == (4, 3)
    torch.testing.assert_close(out, torch.tensor(mu, dtype=torch.float32), rtol=0, atol=0)
    per_slice = check_mu_data(torch.tensor(mu), 4, 3, n_slices=5, dtype=torch.float64)
    assert per_slice.shape == (5, 4, 3) and per_slice.dtype == torch.float64
    assert torch.equal(per_slice[3], torch.tensor(mu))
    stacked = np.stack([mu, mu + 1])
    assert torch.equal(check_mu_data(stacked, 4, 3, n_slices=2)[1],
                       torch.tensor(mu + 1, dtype=torch.float32))
    with pytest.raises(InputError, match=r"mu_data must have shape \(4, 3\) \(K classes"):
        check_mu_data(np.zeros((3, 3)), 4, 3)
    with pytest.raises(InputError, match=r"\(4, 3\) or \(2, 4, 3\).*got \(3, 4, 3\)"):
        check_mu_data(np.zeros((3, 4, 3)), 4, 3, n_slices=2)
    with pytest.raises(InputError, match=r"shape \(4, 3\) \(K"):  # per slice not allowed
        check_mu_data(stacked, 4, 3)
    with pytest.raises(InputError, match="means holds NaN"):
        check_mu_data(np.full((4, 3), np.inf), 4, 3, name="means")
    with pytest.raises(InputError, match="array of numbers"):
        check_mu_data([["a"] * 3] * 4, 4, 3)


def _prepared(batch: SliceBatch, normalisation: str | None) -> SliceBatch:
    return SliceBatch(**{**batch.__dict__, "normalisation": normalisation})


def test_json_records_preparation_and_refuses_other_slices(tmp_path: Path, phantom_batch):
    mu = compute_mu_data(phantom_batch)
    assert phantom_batch.crop_size == (64, 64) and phantom_batch.normalisation == "crop"
    path = save_mu_data(mu, phantom_batch.sequences, tmp_path / "mu.json",
                        crop_size=phantom_batch.crop_size,
                        normalisation=phantom_batch.normalisation)
    doc = json.loads(path.read_text())
    assert doc["crop_size"] == [64, 64] and doc["normalisation"] == "crop"
    np.testing.assert_array_equal(load_mu_data(path, batch=phantom_batch), mu)
    with pytest.raises(InputError) as err:
        load_mu_data(path, batch=_prepared(phantom_batch, "roi"))
    assert str(err.value) == (f"μ_data file {str(path)!r} was computed from slices prepared "
                              "otherwise than these: normalisation 'crop' vs 'roi'")
    smaller = SliceBatch(**{**phantom_batch.__dict__, "image": phantom_batch.image[..., :32],
                            "roi": phantom_batch.roi[..., :32], "normalisation": "roi"})
    with pytest.raises(InputError, match=r"crop size \[64, 64\] vs \[64, 32\], "
                                         r"normalisation 'crop' vs 'roi'$"):
        load_mu_data(path, batch=smaller)
    # a batch built by hand does not know its normalisation: only the crop is checked
    np.testing.assert_array_equal(load_mu_data(path, batch=_prepared(phantom_batch, None)), mu)
    renamed = SliceBatch(**{**phantom_batch.__dict__, "sequences": ("C0", "T2", "DE")})
    with pytest.raises(InputError, match="is for sequences"):
        load_mu_data(path, batch=renamed)


def test_old_json_without_preparation_loads_unchecked(tmp_path: Path, phantom_batch):
    mu = np.arange(12, dtype=np.float64).reshape(4, 3)
    old = {"format": "deepgmm.mu_data/1", "classes": ["blood", "myocardium", "edema", "scar"],
           "sequences": ["C0", "DE", "T2"], "mu": mu.tolist()}
    (tmp_path / "old.json").write_text(json.dumps(old))
    np.testing.assert_array_equal(
        load_mu_data(tmp_path / "old.json", batch=_prepared(phantom_batch, "roi")), mu)
    (tmp_path / "bad.json").write_text(json.dumps({**old, "crop_size": 64}))
    with pytest.raises(InputError, match=r"bad\.json.*'crop_size' must be \[H, W\]"):
        load_mu_data(tmp_path / "bad.json")
