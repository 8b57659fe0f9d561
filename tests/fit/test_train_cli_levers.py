"""``deepgmm train --context / --potts-weight`` and ``predict`` on such a run, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

TINY = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
        "--min-epochs", "1", "--device", "cpu", "--no-progress", "--train-patients", "101"]


@pytest.fixture(scope="module")
def run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-levers") / "run"
    result = CliRunner().invoke(app, ["train", str(phantom_root), "--out", str(out),
                                      "--model", "deepsvg", "--context", "distance+radius",
                                      "--potts-weight", "0.5", *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_options_are_recorded_and_predict_applies_them(run: Path, phantom_root: Path,
                                                       tmp_path: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    assert config["context"] == "distance+radius" and config["potts_weight"] == 0.5
    assert config["network"]["in_channels"] == 5
    result = CliRunner().invoke(app, ["predict", str(run), str(phantom_root), "--out",
                                      str(tmp_path / "p"), "--patients", "102", "--tta",
                                      "--device", "cpu", "--no-progress", "--no-figures"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["n_slices"] == 3


@pytest.mark.parametrize("argv, message", [
    (["train", "{root}", "--out", "{tmp}/r", "--context", "radius", *TINY], "--context"),
    (["train", "{root}", "--out", "{tmp}/r", "--potts-weight", "-1", *TINY],
     "--potts-weight"),
    (["train", "{root}", "--out", "{run}", "--resume", "--context", "distance", *TINY],
     "context"),
    (["predict", "{run}", "{root}", "--out", "{tmp}/r", "--refine", "2", "--device", "cpu"],
     "trained with context"),
])
def test_bad_input_is_one_error_line(argv: list[str], message: str, run: Path,
                                     phantom_root: Path, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path, root=phantom_root, run=run) for a in argv]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "r").exists()
