"""``deepgmm train --prior all`` through the CLI on the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

TINY = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
        "--min-epochs", "1", "--device", "cpu", "--no-progress", "--train-patients", "101",
        "102"]


@pytest.fixture(scope="module")
def run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-prior") / "run"
    result = CliRunner().invoke(app, ["train", str(phantom_root), "--out", str(out),
                                      "--model", "deepsvg", "--prior", "all", "--lam-var",
                                      "0.5", "--lam-weights", "3", *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_prior_all_is_recorded(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    assert config["prior"] == "all"
    assert config["lam_var"] == 0.5 and config["lam_weights"] == 3.0
    assert config["components_per_class"] == 1
    assert len(config["class_prior"]["weights"]) == 4
    assert sum(config["class_prior"]["weights"]) == pytest.approx(1.0)
    # one draw gives both: the prior's means are μ_data (float32 in the config)
    np.testing.assert_allclose(config["class_prior"]["means"], config["mu_data"], rtol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--prior", "some"], "--prior"),
    (["--prior", "all", "--lam-var", "-1"], "--lam-var"),
    (["--prior", "all", "--lam-weights", "nan"], "--lam-weights"),
    (["--out", "{run}", "--resume"], "prior"),
    (["--components-per-class", "0"], "--components-per-class"),
    (["--out", "{run}", "--resume", "--prior", "all", "--lam-var", "0.5", "--lam-weights",
      "3", "--components-per-class", "2"], "components_per_class"),
])
def test_bad_prior_input_is_one_error_line(argv: list[str], message: str, run: Path,
                                           phantom_root: Path, tmp_path: Path) -> None:
    args = ["train", str(phantom_root), "--model", "deepsvg", *TINY,
            *[a.format(run=run) for a in argv]]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_every_lever_at_once_is_recorded_and_predicts(phantom_root: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(phantom_root), "--out", str(out),
                                      "--model", "deepsvg", "--context", "distance+radius",
                                      "--potts-weight", "0.5", "--prior", "all",
                                      "--lam-var", "0.5", "--components-per-class", "2",
                                      *TINY])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("context", "potts_weight", "prior", "lam_var",
                                   "lam_weights", "components_per_class")} == {
        "context": "distance+radius", "potts_weight": 0.5, "prior": "all", "lam_var": 0.5,
        "lam_weights": 1.0, "components_per_class": 2}
    assert config["network"]["in_channels"] == 5 and config["network"]["n_classes"] == 8
    result = CliRunner().invoke(app, ["predict", str(out), str(phantom_root), "--out",
                                      str(tmp_path / "p"), "--patients", "103", "--device",
                                      "cpu", "--no-progress", "--no-figures"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["n_slices"] == 3
