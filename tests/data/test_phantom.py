"""The synthetic phantom: layout, determinism, label codes, contrasts, geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepgmm.data.myops import discover_cases
from deepgmm.data.phantom import write_phantom
from deepgmm.errors import InputError


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(root.rglob("*.nii.gz"))}


def test_layout_and_dtypes(phantom_root: Path):
    names = sorted(p.relative_to(phantom_root).as_posix() for p in phantom_root.rglob("*"))
    assert "train25/phantom_training_101_C0.nii.gz" in names
    assert "train25_myops_gd/phantom_training_104_gd.nii.gz" in names
    assert len([n for n in names if n.endswith(".nii.gz")]) == 16
    img = nib.load(str(phantom_root / "train25" / "phantom_training_102_T2.nii.gz"))
    assert img.get_data_dtype() == np.int16 and img.shape == (128, 128, 3)
    assert img.header.get_zooms() == pytest.approx((1.5, 1.5, 10.0))
    assert int(img.header["qform_code"]) > 0 and int(img.header["sform_code"]) > 0
    assert not np.allclose(img.affine[:3, :3], np.diag(np.diag(img.affine[:3, :3])))


def test_deterministic_by_seed(tmp_path: Path):
    a = _arrays(write_phantom(tmp_path / "a", n_cases=2, seed=3))
    b = _arrays(write_phantom(tmp_path / "b", n_cases=2, seed=3))
    c = _arrays(write_phantom(tmp_path / "c", n_cases=2, seed=4))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a)


def test_cases_differ(phantom_root: Path):
    arrays = _arrays(phantom_root)
    gds = [arrays[f"phantom_training_{i}_gd.nii.gz"] for i in range(101, 105)]
    assert all(not np.array_equal(gds[0], g) for g in gds[1:])


def test_label_codes_and_every_slice_has_all_classes(phantom_root: Path):
    for case in discover_cases(phantom_root):
        codes = np.asarray(nib.load(str(case.labels)).dataobj)
        assert set(np.unique(codes).tolist()) == {0, 200, 500, 600, 1220, 2221}
        for z in range(codes.shape[2]):
            present = set(np.unique(codes[:, :, z]).tolist())
            assert {0, 200, 500, 1220, 2221, 600} <= present, (case.case_id, z)
            assert (codes[:, :, z] == 2221).sum() >= 10
            assert (codes[:, :, z] == 1220).sum() >= 10


def test_contrasts(phantom_volumes):
    for vol in phantom_volumes:
        c0, de, t2 = vol.image
        lab = vol.labels

        def mean(img, k, _lab=lab):
            return float(img[_lab == k].mean())

        blood, myo, edema, scar = 1, 2, 3, 4
        assert mean(c0, blood) > 2 * mean(c0, myo)            # bSSFP: blood bright
        assert mean(de, scar) > 3 * mean(de, myo)             # LGE: scar bright
        assert mean(de, blood) > 2 * mean(de, myo)            # LGE: blood medium
        assert mean(de, scar) > mean(de, blood)
        assert mean(t2, edema) > 1.5 * mean(t2, myo)          # T2: edema bright
        assert mean(t2, myo) < mean(t2, scar) < mean(t2, edema)


def test_noise_and_blur_present(phantom_volumes):
    vol = phantom_volumes[0]
    blood = vol.image[0][vol.labels == 1]
    assert blood.std() > 0.02 * blood.mean()  # Rician noise
    air = vol.image[0][:3, :3, :]
    assert air.min() >= 0 and air.max() > 0  # magnitude noise in the air


def test_noise_level(tmp_path: Path):
    """The noise option scales the Rician noise alone: same geometry and labels, and the
    spread of the blood intensity (noise + bias + blur) grows with it."""
    from deepgmm.commands.data import NOISE_FRACTION as CLI_DEFAULT
    from deepgmm.data.phantom import NOISE_FRACTION

    assert CLI_DEFAULT == NOISE_FRACTION
    default = _arrays(write_phantom(tmp_path / "d", n_cases=1, seed=2))
    same = _arrays(write_phantom(tmp_path / "s", n_cases=1, seed=2, noise=NOISE_FRACTION))
    noisy = _arrays(write_phantom(tmp_path / "n", n_cases=1, seed=2, noise=0.18))
    assert all(np.array_equal(default[k], same[k]) for k in default)
    gd = "phantom_training_101_gd.nii.gz"
    assert np.array_equal(default[gd], noisy[gd])
    blood = default[gd] == 500
    for seq in ("C0", "DE", "T2"):
        name = f"phantom_training_101_{seq}.nii.gz"
        quiet_sd, noisy_sd = default[name][blood].std(), noisy[name][blood].std()
        # 3 x the noise; the bias field and the blur spread the blood as well
        assert noisy_sd > 1.5 * quiet_sd, (seq, quiet_sd, noisy_sd)
        assert noisy[name][blood].mean() == pytest.approx(default[name][blood].mean(), rel=0.05)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_cases": 0}, "at least one case"),
    ({"n_slices": 0}, "at least one case and one slice"),
    ({"shape": (32, 128)}, "at least 48"),
    ({"spacing": (1.5, 0.0, 10.0)}, "positive"),
    ({"shape": (64, 64), "spacing": (1.0, 1.0, 8.0)}, "field of view"),
    ({"noise": -0.1}, "noise must be"),
    ({"noise": float("nan")}, "noise must be"),
])
def test_bad_arguments(tmp_path: Path, kwargs, match):
    with pytest.raises(InputError, match=match):
        write_phantom(tmp_path / "p", **kwargs)
    assert not (tmp_path / "p").exists()


def test_refuses_to_write_into_other_data(tmp_path: Path):
    (tmp_path / "train25").mkdir()
    (tmp_path / "train25" / "myops_training_101_C0.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"already holds other data.*myops_training_101_C0"):
        write_phantom(tmp_path)
    assert [p.name for p in (tmp_path / "train25").iterdir()] == ["myops_training_101_C0.nii.gz"]


def test_rewrite_same_folder(tmp_path: Path):
    first = _arrays(write_phantom(tmp_path / "p", n_cases=1, seed=1))
    second = _arrays(write_phantom(tmp_path / "p", n_cases=1, seed=1))
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert len(list((tmp_path / "p").rglob("*"))) == 2 + 4
