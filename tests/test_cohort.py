"""Per-case runs: serial vs Dask workers, a killed worker, resume, failing cases, and the
nnU-Net-style layout. A tiny phantom (3 cases, 64 x 64 x 2) keeps the Dask tests fast."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

pytest.importorskip("distributed")

EM = ["--model", "em-svgmm", "--crop", "48", "--no-figures", "--no-progress",
      "--max-iter", "20", "--gmm-max-iter", "20"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deepgmm.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("tiny"), n_cases=3, shape=(64, 64),
                         n_slices=2)


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    """A 2-worker local Dask cluster (one thread each) and a client of it."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc, Client(lc) as client:
        yield lc, client


def _maps(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*.nii.gz"))}


def _table(path: Path, drop: tuple[str, ...] = ("seconds",)) -> list[dict[str, str]]:
    with path.open() as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


def _summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds_per_slice")
    return summary


def _same_outputs(a: Path, b: Path) -> None:
    assert _maps(a) and _maps(a) == _maps(b)
    assert _table(a / "results.csv") == _table(b / "results.csv")
    assert _table(a / "cases.csv") == _table(b / "cases.csv")
    assert _summary(a) == _summary(b)


def _no_partial(out: Path) -> None:
    hidden = [p.name for p in (out / "cases").iterdir() if p.name.startswith(".")]
    assert hidden == []
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _em(root: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["em", str(root), "--out", str(out), *EM, *extra])


@pytest.fixture(scope="module")
def serial_em(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "out"
    result = _em(tiny_root, out, "--resume")
    assert result.exit_code == 0, result.output
    assert "cases: 3 segmented" in result.output
    return out


def test_workers_2_gives_the_serial_outputs(tiny_root: Path, serial_em: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "dask"
    result = _em(tiny_root, out, "--workers", "2")
    assert result.exit_code == 0, result.output
    _same_outputs(serial_em, out)
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["101", "102", "103"]
    manifest = json.loads((out / "cases" / "102" / "manifest.json").read_text())
    assert manifest["options"]["model"] == "em-svgmm" and len(manifest["inputs"]) == 4
    record = json.loads((out / "run.json").read_text())
    assert record["resolved"]["cluster"]["workers"] == 2
    assert record["resolved"]["cases_run"] == ["101", "102", "103"]
    assert json.loads((out / "summary.json").read_text())["failed_cases"] == []
    _no_partial(out)


def test_deepsvg_on_an_existing_scheduler_matches_serial(tiny_root: Path, cluster,  # noqa: ANN001
                                                         tmp_path: Path) -> None:
    from deepgmm.cohort import ClusterOptions, segment_cohort

    lc, _ = cluster
    opts = dict(model="deepsvg", crop_size=48, figures=False, progress=False, max_iter=3,
                min_iter=1, base_filters=4, depth=2, device="cpu", patients=["101", "103"])
    serial = segment_cohort(tiny_root, tmp_path / "serial", **opts,
                            cluster=ClusterOptions(resume=True))
    dask = segment_cohort(tiny_root, tmp_path / "dask", **opts,
                          cluster=ClusterOptions(scheduler=lc.scheduler_address))
    assert serial.ids("done") == dask.ids("done") == ["101", "103"]
    _same_outputs(tmp_path / "serial", tmp_path / "dask")


def _executing(dask_worker) -> list[str]:  # noqa: ANN001 - runs on the worker
    return [str(ts.key) for ts in dask_worker.state.executing]


def test_a_killed_worker_is_retried_elsewhere(tiny_root: Path, serial_em: Path, cluster,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    from deepgmm.cohort import ClusterOptions, segment_cohort

    lc, client = cluster
    out = tmp_path / "killed"
    done: dict[str, object] = {}

    def run() -> None:
        done["run"] = segment_cohort(
            tiny_root, out, model="em-svgmm", crop_size=48, figures=False, progress=False,
            max_iter=20, gmm_max_iter=20, init="kmeans",
            cluster=ClusterOptions(scheduler=lc.scheduler_address))

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        running = client.run(_executing)
        for address, keys in running.items():
            if any(k.startswith("deepgmm-case-") for k in keys):
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                killed = keys
                break
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "no worker was seen running a case"
    run_ = done["run"]
    assert run_.ids("done") == ["101", "102", "103"]  # type: ignore[attr-defined]
    _same_outputs(serial_em, out)
    _no_partial(out)


def test_resume_runs_only_the_missing_cases(tiny_root: Path, serial_em: Path,
                                            tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import deepgmm.cohort.case as case

    real = case.segment_one_case
    calls: list[str] = []

    def interrupted(job):  # noqa: ANN001, ANN202
        calls.append(job.case_id)
        if len(calls) == 2:
            raise RuntimeError("stopped while case 102 runs")  # an interrupted run
        return real(job)

    out = tmp_path / "out"
    monkeypatch.setattr(case, "segment_one_case", interrupted)
    result = _em(tiny_root, out, "--resume")
    assert result.exit_code != 0 and calls == ["101", "102"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["101"]
    assert not (out / "summary.json").exists()

    calls.clear()
    monkeypatch.setattr(case, "segment_one_case", lambda job: (calls.append(job.case_id),
                                                               real(job))[1])
    result = _em(tiny_root, out, "--resume")
    assert result.exit_code == 0, result.output
    assert calls == ["102", "103"]
    assert "2 segmented, 1 complete from an earlier run (resumed)" in result.output
    _same_outputs(serial_em, out)

    calls.clear()  # other options: every case again (the manifest, not the folder, decides)
    result = _em(tiny_root, out, "--resume", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert calls == ["101", "102", "103"]


def test_resume_redoes_a_case_whose_input_changed(tiny_root: Path, tmp_path: Path,
                                                  monkeypatch) -> None:  # noqa: ANN001
    import shutil

    import deepgmm.cohort.case as case

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    out = tmp_path / "out"
    assert _em(root, out, "--resume").exit_code == 0
    import gzip

    image = next(root.rglob("phantom_training_102_T2.nii.gz"))  # same voxels, other bytes
    image.write_bytes(gzip.compress(gzip.decompress(image.read_bytes()), compresslevel=1,
                                    mtime=12345))
    real = case.segment_one_case
    calls: list[str] = []
    monkeypatch.setattr(case, "segment_one_case", lambda job: (calls.append(job.case_id),
                                                               real(job))[1])
    assert _em(root, out, "--resume").exit_code == 0
    assert calls == ["102"]


def test_a_case_with_bad_input_is_reported_and_the_others_go_on(tiny_root: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    next(root.rglob("phantom_training_102_DE.nii.gz")).write_bytes(b"not a NIfTI file")
    out = tmp_path / "out"
    result = _em(root, out, "--resume")
    assert result.exit_code == 4, result.output
    assert "error: case 102 failed:" in result.output
    assert "phantom_training_102_DE.nii.gz" in result.output
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [f["case"] for f in summary["failed_cases"]] == ["102"]
    assert {r["case"] for r in _table(out / "results.csv")} == {"101", "103"}
    assert not (out / "cases" / "102").exists()


@pytest.mark.parametrize(("args", "flag"), [
    (["--workers", "0"], "--workers"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
    (["--resources", "GPU"], "--resources"),
    (["--resources", "GPU=1"], "--resources"),
    (["--resume", "--threads", "0"], "--threads"),
])
def test_bad_cluster_options_are_refused(tiny_root: Path, tmp_path: Path, args: list[str],
                                         flag: str) -> None:
    result = _em(tiny_root, tmp_path / "out", *args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and flag in result.output
    assert not (tmp_path / "out").exists()


def test_a_plain_run_does_not_import_dask(tiny_root: Path, tmp_path: Path) -> None:
    code = ("import sys; from typer.testing import CliRunner; from deepgmm.cli import app; "
            f"r = CliRunner().invoke(app, ['em', {str(tiny_root)!r}, '--out', "
            f"{str(tmp_path / 'o')!r}, '--model', 'em-gmm', '--crop', '48', "
            "'--no-figures', '--no-progress']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_nnunet_layout_round_trips_through_info_em_and_predict(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "nn"
    result = runner.invoke(app, ["phantom", "--out", str(root), "--layout", "nnunet",
                                 "--cases", "3", "--size", "64", "--slices", "2"])
    assert result.exit_code == 0, result.output
    spec = json.loads((root / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "C0", "1": "DE", "2": "T2"}
    assert sorted(p.name for p in (root / "imagesTs").iterdir())[:3] == [
        "phantom_101_0000.nii.gz", "phantom_101_0001.nii.gz", "phantom_101_0002.nii.gz"]
    info = runner.invoke(app, ["info", str(root)])
    assert info.exit_code == 0, info.output
    assert "3 patients, 6 slices; with ground truth: 3 patients" in info.output
    assert "phantom_102  C0 DE T2" in info.output

    # the same images and truth as the MyoPS layout: the same EM outputs, case ids aside
    from deepgmm.data.phantom import write_phantom

    myops = write_phantom(tmp_path / "myops", n_cases=3, shape=(64, 64), n_slices=2)
    for data, out in ((root, tmp_path / "em_nn"), (myops, tmp_path / "em_myops")):
        result = runner.invoke(app, ["em", str(data), "--out", str(out), "--model", "em-gmm",
                                     "--crop", "48", "--no-figures", "--no-progress"])
        assert result.exit_code == 0, result.output
    nn_rows = _table(tmp_path / "em_nn" / "results.csv")
    myops_rows = _table(tmp_path / "em_myops" / "results.csv")
    assert [r["case"] for r in nn_rows][:2] == ["phantom_101", "phantom_101"]
    for row in nn_rows:
        row["case"] = row["case"].removeprefix("phantom_")
    assert nn_rows == myops_rows

    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(root), "--out", str(run), "--model", "deepg",
                                 "--train-patients", "phantom_101", "--crop", "48",
                                 "--depth", "2", "--base-filters", "4", "--epochs", "1",
                                 "--min-epochs", "1", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    pred = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(run), str(root), "--out", str(pred),
                                 "--no-figures", "--no-progress", "--resume"])
    assert result.exit_code == 0, result.output
    assert {r["case"] for r in _table(pred / "results.csv")} == {"phantom_102", "phantom_103"}
    assert sorted(p.name for p in (pred / "cases").iterdir()) == ["phantom_102",
                                                                  "phantom_103"]


def test_nnunet_dataset_json_errors(tmp_path: Path) -> None:
    from deepgmm.data.myops import discover_cases
    from deepgmm.errors import InputError

    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(InputError, match="channel_names"):
        discover_cases(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "scar": 1}}))
    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "imagesTs" / "a_0000.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"case a: missing channel 1 \(T2\)"):
        discover_cases(tmp_path)


REPLACED = "replaced the earlier output"


def test_only_a_finished_output_is_announced_as_replaced(tiny_root: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    fresh = _em(tiny_root, out, "--resume")  # the merge replaces only the run's own cases/
    assert fresh.exit_code == 0, fresh.output
    assert REPLACED not in fresh.output and REPLACED not in fresh.stderr
    again = _em(tiny_root, out, "--resume", "--seed", "7")  # every case and OUT replaced
    assert again.exit_code == 0, again.output
    assert again.stderr.count(REPLACED) == 1  # once, for OUT, not for each case folder
    assert f"warning: {REPLACED} in {str(out)!r}" in again.stderr


def test_an_interrupted_run_resumed_is_not_announced_as_replaced(
        tiny_root: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import deepgmm.cohort.case as case

    real = case.segment_one_case

    def interrupted(job):  # noqa: ANN001, ANN202
        if job.case_id == "102":
            raise RuntimeError("stopped while case 102 runs")
        return real(job)

    out = tmp_path / "out"
    monkeypatch.setattr(case, "segment_one_case", interrupted)
    assert _em(tiny_root, out, "--resume").exit_code != 0
    assert [p.name for p in out.iterdir()] == ["cases"]
    monkeypatch.setattr(case, "segment_one_case", real)
    resumed = _em(tiny_root, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert REPLACED not in resumed.stderr


def test_the_merge_computes_and_writes_nothing_twice(tiny_root: Path, serial_em: Path,
                                                     tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Merging reuses the cases' scores and copies their maps, and gives the outputs a
    write of the joined batch from scratch gives."""
    import shutil

    import deepgmm.data.nifti as nifti
    import deepgmm.evaluate.scoring as scoring
    import deepgmm.report.outputs as outputs
    from deepgmm.cohort.case import SLICES_FILE, load_case_arrays
    from deepgmm.cohort.merge import concat_batches, concat_results

    out = tmp_path / "out"
    shutil.copytree(serial_em, out)
    calls: list[str] = []
    for module, name in ((scoring, "hd95_per_class"), (scoring, "assd_per_class"),
                         (nifti, "save_nifti")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _n=name, _f=real, **k: (
            calls.append(_n), _f(*a, **k))[1])
    resumed = _em(tiny_root, out, "--resume")  # every case complete: only the merge runs
    assert resumed.exit_code == 0, resumed.output
    assert "0 segmented, 3 complete from an earlier run (resumed)" in resumed.output
    assert calls == []
    _same_outputs(serial_em, out)

    # the same as writing the joined arrays afresh (scores recomputed, maps written)
    arrays = [load_case_arrays(out / "cases" / c / SLICES_FILE) for c in ("101", "102", "103")]
    assert all(a[4] is not None and a[4][1].shape == (2, 4) for a in arrays)
    record = json.loads((out / "run.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    fresh = tmp_path / "fresh"
    outputs.write_segmentation(
        fresh, [a[0] for a in arrays], concat_batches([a[1] for a in arrays]),
        concat_results([a[2] for a in arrays]), matching="hungarian", figures=False,
        progress=False, class_identity=False,
        roi_source={k: summary[k] for k in ("roi", "roi_path", "roi_skipped")},
        run_options=record["resolved"], summary_extra={"failed_cases": []},
        anatomy=summary["anatomy"])
    assert summary["anatomy"] == "lv-dice"  # the default rule, recorded and applied alike
    assert calls.count("hd95_per_class") == 1 and calls.count("save_nifti") == 12
    _same_outputs(out, fresh)
    sidecars = sorted(p.name for p in fresh.iterdir()
                      if p.name.startswith(("101_", "102_", "103_"))
                      and not p.name.endswith(".nii.gz"))
    assert len(sidecars) == 3 * 2 * 4  # own and matched: .tsv .itksnap.txt .ctbl .json
    for name in sidecars:
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name


def test_a_case_folder_has_no_report_until_asked(serial_em: Path, tmp_path: Path) -> None:
    import shutil

    case_dir = tmp_path / "101"
    shutil.copytree(serial_em / "cases" / "101", case_dir)
    assert not (case_dir / "report.html").exists()
    assert (serial_em / "report.html").is_file()  # the merged report shows every case
    result = CliRunner().invoke(app, ["report", str(case_dir)])
    assert result.exit_code == 0, result.output
    assert "101" in (case_dir / "report.html").read_text()
