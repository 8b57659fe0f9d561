"""``deepgmm train`` and ``deepgmm predict`` through the CLI on the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.commands.train import default_train_patients
from deepgmm.types import CLASS_NAMES

TINY = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
        "--min-epochs", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(app, ["train", str(phantom_root), "--out", str(out),
                                      "--model", "deepg", "--train-patients", "101", "102",
                                      *TINY])
    assert result.exit_code == 0, result.output
    assert "trained deepg on 6 slices of 2 case(s): 1 epochs" in result.output
    return out


def test_train_writes_a_complete_run(run: Path) -> None:
    assert {p.name for p in run.iterdir()} == {"config.json", "model.safetensors",
                                               "optimizer.safetensors", "training_curve.png",
                                               "run.json", "report.html",
                                               ".deepgmm-manifest.json"}
    record = json.loads((run / "run.json").read_text())
    assert record["command"] == "train" and record["seeds"] == {"seed": 0}
    assert len(record["inputs"]) == 8  # C0, DE, T2, gd of cases 101 and 102
    assert list(record["outputs"]) == [str(run / "model.safetensors")]
    assert 'id="training"' in (run / "report.html").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["train_patients"] == ["101", "102"]
    assert config["sequences"] == ["C0", "DE", "T2"]
    assert config["crop_size"] == [64, 64] and config["epoch"] == 1
    assert config["network"]["base_filters"] == 4 and config["network"]["depth"] == 2
    assert len(config["mu_data"]) == 4 and config["lam"] == 1.0
    assert config["penalty"] == "batch" and config["clip_norm"] == 12.0


def test_predict_defaults_to_cases_not_trained_on(run: Path, phantom_root: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict", str(run), str(phantom_root), "--out",
                                      str(out), "--device", "cpu", "--no-progress",
                                      "--no-figures"])
    assert result.exit_code == 0, result.output
    for name in CLASS_NAMES:  # the Dice table
        assert any(line.startswith(name) for line in result.output.splitlines())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "deepg" and summary["matching"] == "none"
    inputs = json.loads((out / "run.json").read_text())["inputs"]
    assert str(run / "model.safetensors") in inputs and str(run / "config.json") in inputs
    assert summary["n_slices"] == 6  # 3 all-class slices in each of 103 and 104
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["103_seg.nii.gz",
                                                                "104_seg.nii.gz"]
    sub = CliRunner().invoke(app, ["predict", str(run), str(phantom_root), "--out",
                                   str(tmp_path / "one"), "--patients", "101",
                                   "--no-progress", "--no-figures", "--device", "cpu"])
    assert sub.exit_code == 0, sub.output
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["n_slices"] == 3
    tta = CliRunner().invoke(app, ["predict", str(run), str(phantom_root), "--out",
                                   str(tmp_path / "tta"), "--patients", "101", "--tta",
                                   "--no-progress", "--no-figures", "--device", "cpu"])
    assert tta.exit_code == 0, tta.output
    assert json.loads((tmp_path / "tta" / "summary.json").read_text())["n_slices"] == 3


@pytest.mark.parametrize("argv, message", [
    (["predict", "{tmp}", "{root}", "--out", "{tmp}/o"], "holds no checkpoint"),
    (["predict", "{run}", "{root}", "--out", "{tmp}/o", "--refine", "-2"], "refine"),
    (["predict", "{run}", "{root}", "--out", "{tmp}/o", "--refine", "2", "--tta"], "tta"),
    (["train", "{root}", "--out", "{run}", *TINY], "already holds a checkpoint"),
    (["train", "{root}", "--out", "{tmp}/r", "--model", "deepq", *TINY], "--model"),
    (["train", "{root}", "--out", "{tmp}/r", "--train-patients", "999", *TINY], "999"),
    (["train", "{root}", "--out", "{run}", "--resume", "--lam", "0.5", *TINY], "lam"),
    (["train", "{root}", "--out", "{run}", "--resume", "--penalty", "slice", *TINY],
     "penalty"),
    (["train", "{root}", "--out", "{tmp}/r", "--penalty", "mean", *TINY], "--penalty"),
    (["train", "{root}", "--out", "{tmp}/r", "--clip-norm", "-1", *TINY], "--clip-norm"),
    (["train", "{root}", "--out", "{tmp}/r", "--label-weight", "-1", *TINY],
     "--label-weight"),
    (["train", "{root}", "--out", "{tmp}/r", "--label-weight", "1", "--labelled-slices", "0",
      *TINY], "--labelled-slices"),
])
def test_bad_input_is_one_error_line(argv: list[str], message: str, run: Path,
                                     phantom_root: Path, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path, root=phantom_root, run=run) for a in argv]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_default_split() -> None:
    ids = [str(i) for i in range(101, 126)]
    train = default_train_patients(ids)
    assert len(train) == 20 and not {"109", "114", "117", "120", "122"} & set(train)
    assert default_train_patients(["101", "102"]) == ["101", "102"]
    assert default_train_patients(["109"]) == ["109"]


def test_normalisation_follows_the_recipe_the_mu_data_file_and_a_resumed_run(
        run: Path, phantom_root: Path, tmp_path: Path) -> None:
    assert json.loads((run / "config.json").read_text())["normalisation"] == "roi"

    def train(out: Path, *extra: str) -> str:
        res = CliRunner().invoke(app, ["train", str(phantom_root), "--out", str(out),
                                       "--model", "deepg", "--train-patients", "101",
                                       *TINY, *extra])
        assert res.exit_code == 0, res.output
        return json.loads((out / "config.json").read_text())["normalisation"]

    assert train(tmp_path / "pub", "--recipe", "published") == "crop"
    mu = tmp_path / "mu.json"
    res = CliRunner().invoke(app, ["mu-data", str(phantom_root), "--out", str(mu),
                                   "--patients", "101", "--crop", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads(mu.read_text())["normalisation"] == "crop"  # mu-data's default
    assert train(tmp_path / "mu", "--mu-data", str(mu)) == "crop"  # the file's, not roi
    # a resumed run keeps what it was trained with
    assert train(tmp_path / "pub", "--recipe", "deepgmm", "--resume") == (
        "crop")
