"""Same seed, same result: every method run twice through the CLI writes byte-identical
label maps and the same results.csv apart from its timing columns."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

COMMON = ["--crop", "64", "--no-progress", "--no-figures", "--patients", "101", "--seed", "7"]
NET = ["--base-filters", "4", "--depth", "2", "--device", "cpu"]
TRAIN = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
         "--min-epochs", "1", "--device", "cpu", "--no-progress", "--no-augment",
         "--train-patients", "101", "102", "--seed", "7"]


def _invoke(*args: object) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def _maps(out: Path) -> dict[str, str]:
    maps = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*_seg.nii.gz"))}
    assert maps, f"no label map in {out}"
    return maps


def _table(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    timing = {c for c in rows[0] if "time" in c or c.endswith("_s") or "second" in c}
    return [{c: v for c, v in row.items() if c not in timing} for row in rows]


def _same(a: Path, b: Path) -> None:
    assert _maps(a) == _maps(b)
    assert _table(a) == _table(b)


@pytest.mark.parametrize(("command", "args"), [
    ("em", ["--model", "em-gmm", "--max-iter", "5"]),
    ("em", ["--model", "em-svgmm", "--max-iter", "3"]),
    ("fit", ["--model", "deepg", "--max-iter", "2", "--min-iter", "1", *NET]),
    ("fit", ["--model", "deepsvg", "--max-iter", "2", "--min-iter", "1", *NET]),
])
def test_per_case_methods_are_deterministic(command: str, args: list[str],
                                            phantom_root: Path, tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        _invoke(command, phantom_root, *COMMON, *args, "--out", out)
    _same(*runs)


def test_train_and_predict_are_deterministic(phantom_root: Path, tmp_path: Path) -> None:
    preds = []
    for name in ("a", "b"):
        run = tmp_path / f"run_{name}"
        _invoke("train", phantom_root, "--out", run, "--model", "deepsvg", *TRAIN)
        pred = tmp_path / f"pred_{name}"
        _invoke("predict", run, phantom_root, "--out", pred, "--device", "cpu",
                "--no-progress", "--no-figures")
        preds.append(pred)
    assert ((tmp_path / "run_a" / "model.safetensors").read_bytes()
            == (tmp_path / "run_b" / "model.safetensors").read_bytes())
    _same(*preds)
