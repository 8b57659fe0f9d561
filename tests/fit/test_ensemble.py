"""`predict RUN1 RUN2 ...`: the ensemble's probabilities are the mean of the runs'."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.errors import InputError
from deepgmm.fit.ensemble import check_ensemble

TINY = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
        "--min-epochs", "1", "--device", "cpu", "--no-progress", "--train-patients", "101"]


def _invoke(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def runs(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("ens")
    out = []
    for seed in (0, 1):
        run = base / f"run{seed}"
        _invoke("train", phantom_root, "--out", run, "--seed", seed, *TINY)
        out.append(run)
    return out


def test_ensemble_of_two_runs_is_the_mean_of_their_probabilities(runs, phantom_root,
                                                                 tmp_path):
    outs = []
    for name, chosen in (("a", runs[:1]), ("b", runs[1:]), ("ab", runs)):
        out = tmp_path / name
        _invoke("predict", *chosen, phantom_root, "--out", out, "--patients", "102",
                "--no-figures", "--no-progress", "--device", "cpu", "--anatomy", "none",
                "--fusion", "none")
        outs.append(out)
    a, b, ab = (np.asanyarray(nib.load(str(o / "102_prob.nii.gz")).dataobj) for o in outs)
    assert not np.allclose(a, b)  # two seeds, two different networks
    np.testing.assert_allclose(ab, (a + b) / 2, rtol=0, atol=1e-6)
    seg = np.asanyarray(nib.load(str(outs[2] / "102_seg.nii.gz")).dataobj)
    codes = np.array([500, 200, 1220, 2221])
    inside = ab.sum(axis=-1) > 0
    np.testing.assert_array_equal(seg[inside], codes[ab.argmax(axis=-1)[inside]])


def test_runs_that_differ_are_refused():
    base = {"sequences": ["C0", "DE", "T2"], "crop_size": [64, 64], "normalisation": "crop",
            "mu_data": [[0.0]], "lam": 1.0}
    check_ensemble([base, dict(base)], ["r1", "r2"])
    with pytest.raises(InputError, match="run 'r2' has crop_size \\[96, 96\\]"):
        check_ensemble([base, {**base, "crop_size": [96, 96]}], ["r1", "r2"])
    with pytest.raises(InputError, match="run 'r2' has sequences"):
        check_ensemble([base, {**base, "sequences": ["C0", "T2", "DE"]}], ["r1", "r2"])
    with pytest.raises(InputError, match="without μ_data"):
        check_ensemble([base, {**base, "lam": 0.0}], ["r1", "r2"])


def test_loose_patient_ids_after_root_are_a_clear_error(runs, phantom_root, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["predict", str(runs[0]), str(phantom_root), "--out",
                                   str(out), "--patients", "101", "102"])
    assert res.exit_code == 2
    assert "give several --patients as one comma list (--patients 101,102)" in res.output
    assert not out.exists()
