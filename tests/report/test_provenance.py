"""run.json: what it records, and that re-running its command reproduces the outputs."""

from __future__ import annotations

import csv
import hashlib
import json
from importlib.metadata import version

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

COMMANDS = {
    "em": ["em", "--model", "em-svgmm", "--seed", "5"],
    "fit": ["fit", "--model", "deepsvg", "--max-iter", "3", "--min-iter", "1",
            "--base-filters", "4", "--depth", "2", "--crop", "64", "--seed", "7"],
}


def _run(args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _tables(out):
    """Every output except wall-clock figures and run.json's times: map data, CSV cells,
    summary values."""
    maps = {p.name: np.asanyarray(nib.load(str(p)).dataobj) for p in out.glob("*.nii.gz")}
    with open(out / "results.csv", newline="") as fh:
        results = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds_per_slice")
    texts = {p.name: p.read_text() for p in out.iterdir()
             if p.suffix in {".tsv", ".txt", ".ctbl"} or p.name == "cases.csv"}
    return maps, results, summary, texts


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_rerun_from_run_json_gives_identical_outputs(tmp_path, phantom_root, command):
    first = tmp_path / "first"
    _run([*COMMANDS[command], phantom_root, "--out", first, "--patients", "101",
          "--no-figures", "--no-progress", "--device", "cpu"])
    run = json.loads((first / "run.json").read_text())
    assert run["command"] == command
    assert run["options"]["seed"] == run["seeds"]["seed"] == int(COMMANDS[command][-1])
    assert run["options"]["patients"] == ["101"] and run["options"]["device"] == "cpu"
    assert run["device"] == "cpu" and run["precision"] in (None, "fp32")
    for name in ("deepgmm", "torch", "numpy", "monai"):
        assert run["versions"][name] == version(name)
    case_files = sorted(phantom_root.rglob("*_101_*.nii.gz"))
    assert len(case_files) == 4  # C0, DE, T2 and the ground truth
    assert run["inputs"] == {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in case_files}
    assert run["started"] < run["finished"]
    rerun = list(run["rerun"])
    assert rerun[:2] == ["deepgmm", command]
    second = tmp_path / "second"
    rerun[rerun.index("--out") + 1] = str(second)
    _run(rerun[1:])
    a, b = _tables(first), _tables(second)
    assert a[0].keys() == b[0].keys() and len(a[0]) >= 4
    for name in a[0]:
        np.testing.assert_array_equal(a[0][name], b[0][name])
    assert a[1:] == b[1:]
    again = json.loads((second / "run.json").read_text())
    assert again["options"] == {**run["options"], "out": str(second)}
    assert again["inputs"] == run["inputs"]


def test_python_api_writes_run_json_with_its_options(tmp_path, phantom_root):
    from deepgmm import segment_dataset

    out = tmp_path / "api"
    segment_dataset(phantom_root, out, model="em-gmm", patients=["102"], figures=False,
                    progress=False, seed=3, device="cpu")
    run = json.loads((out / "run.json").read_text())
    assert run["command"] is None and run["rerun"] is None
    assert run["resolved"]["model"] == "em-gmm" and run["seeds"] == {"seed": 3}
    assert len(run["inputs"]) == 4
