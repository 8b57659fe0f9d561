"""The bad-input matrix: every command, every kind of bad or unusual input, through the CLI.

Each row is one invocation on a tiny phantom (2 cases, 64 x 64 x 3 voxels). Every row must
end with exit code 2, exactly one line on stderr starting with ``error:`` that holds the
row's words (the file or option concerned and what was expected), no traceback, and not
one byte changed on disk: the whole test folder (data, earlier outputs, the user's files,
the row's own folder) is snapshotted before and after.

Read-only folders and a full disk are simulated by patching the OS calls that create files
and folders below one folder (:func:`deny_writes`): the tests run as root here, where
``chmod`` does not stop writes, and mounting a small tmpfs needs privileges the suite does
not have. :func:`test_chmod_read_only_folder` checks the real thing where it can (not
root) and is skipped otherwise.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

runner = CliRunner()

EM = ["--crop", "64", "--no-progress", "--no-figures", "--max-iter", "3"]
FIT = ["--crop", "64", "--no-progress", "--no-figures", "--model", "deepg",
       "--base-filters", "4", "--depth", "2", "--max-iter", "2", "--device", "cpu"]
TRAIN = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
         "--min-epochs", "1", "--device", "cpu", "--no-progress", "--no-augment"]
HUGE_SEED = str(2**64)


@dataclass
class Env:
    """The module's shared material: data, an earlier output, a training run, a μ_data
    file (never changed by a row), and the row's own folder ``work``."""

    base: Path
    data: Path
    em_out: Path
    run: Path
    mu: Path
    work: Path

    def img(self, seq: str, case: str = "101", root: Path | None = None) -> Path:
        return (root or self.data) / "train25" / f"phantom_training_{case}_{seq}.nii.gz"

    def gd(self, case: str = "101", root: Path | None = None) -> Path:
        return (root or self.data) / "train25_myops_gd" / f"phantom_training_{case}_gd.nii.gz"

    def copy_data(self) -> Path:
        dest = self.work / "data"
        shutil.copytree(self.data, dest)
        return dest

    def copy(self, src: Path, name: str) -> Path:
        dest = self.work / name
        shutil.copytree(src, dest)
        return dest

    def write(self, name: str, text: str) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def env_base(tmp_path_factory: pytest.TempPathFactory) -> Env:
    base = tmp_path_factory.mktemp("matrix")
    data = base / "ph"
    r = _invoke("phantom", "--out", data, "--cases", "2", "--size", "64")
    assert r.exit_code == 0, r.output
    em_out = base / "out" / "em"
    r = _invoke("em", data, "--out", em_out, *EM)
    assert r.exit_code == 0, r.output
    run = base / "run"
    r = _invoke("train", data, "--out", run, "--model", "deepg", *TRAIN)
    assert r.exit_code == 0, r.output
    mu = base / "mu.json"
    r = _invoke("mu-data", data, "--out", mu, "--crop", "64")
    assert r.exit_code == 0, r.output
    return Env(base=base, data=data, em_out=em_out, run=run, mu=mu, work=base)


@pytest.fixture
def env(env_base: Env, request: pytest.FixtureRequest) -> Iterator[Env]:
    work = env_base.base / "work" / request.node.callspec.id
    work.mkdir(parents=True)
    yield Env(**{**env_base.__dict__, "work": work})
    shutil.rmtree(work, ignore_errors=True)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path below ``root``: (kind, size, SHA-256 of the content, permission bits)."""
    state: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_file():
            state[str(p.relative_to(root))] = ("file", st.st_size, hashlib.sha256(
                p.read_bytes()).hexdigest(), st.st_mode & 0o777)
        else:
            state[str(p.relative_to(root))] = ("dir", 0, "", st.st_mode & 0o777)
    return state


@contextlib.contextmanager
def deny_writes(folder: Path, code: int) -> Iterator[None]:
    """Fail with ``OSError(code)`` every creation of a file or folder below ``folder``
    (``os.open`` with a writing flag, ``open`` in a writing mode, ``os.mkdir``), as a
    read-only (``EROFS``) or full (``ENOSPC``) file system below ``folder`` would."""
    prefix = os.path.abspath(folder)
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def below(path: object) -> bool:
        try:
            p = os.path.abspath(os.fspath(path))  # type: ignore[arg-type]
        except TypeError:
            return False
        return p == prefix or p.startswith(prefix + os.sep)

    def fail(path: object) -> OSError:
        return OSError(code, os.strerror(code), os.fspath(path))  # type: ignore[arg-type]

    def fake_open(file, mode="r", *args, **kwargs):  # noqa: ANN001
        if isinstance(mode, str) and set(mode) & set("wax+") and below(file):
            raise fail(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):  # noqa: ANN001
        if flags & write_flags and below(path):
            raise fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):  # noqa: ANN001
        if below(path):
            raise fail(path)
        return real_mkdir(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", fake_open)
        mp.setattr(io, "open", fake_open)
        mp.setattr(os, "open", fake_os_open)
        mp.setattr(os, "mkdir", fake_mkdir)
        yield


# ------------------------------------------------------------------- damaged inputs
def _replace_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).copy()


def damaged(how: Callable[[Env, Path], None]) -> Callable[[Env], Path]:
    """A copy of the data with one case damaged by ``how(env, root)``."""
    def make(env: Env) -> Path:
        root = env.copy_data()
        how(env, root)
        return root
    return make


def _missing_sequence(env: Env, root: Path) -> None:
    env.img("T2", root=root).unlink()


def _truncated(env: Env, root: Path) -> None:
    p = env.img("C0", root=root)
    p.write_bytes(p.read_bytes()[:300])


def _not_nifti(env: Env, root: Path) -> None:
    with gzip.open(env.img("C0", root=root), "wb") as fh:
        fh.write(b"plain text, not an image\n" * 40)


def _four_d(env: Env, root: Path) -> None:
    _replace_nifti(env.img("C0", root=root), np.zeros((64, 64, 3, 2), np.int16))


def _nan(env: Env, root: Path) -> None:
    data = _array(env.img("T2", root=root)).astype(np.float32)
    data[30, 30, 1] = np.nan
    _replace_nifti(env.img("T2", root=root), data)


def _shifted(env: Env, root: Path) -> None:
    p = env.img("DE", root=root)
    aff = nib.load(str(p)).affine.copy()
    aff[0, 3] += 3.0
    _replace_nifti(p, _array(p), aff)


def _other_shape(env: Env, root: Path) -> None:
    _replace_nifti(env.img("DE", root=root), np.zeros((64, 50, 3), np.int16))


def _unknown_codes(env: Env, root: Path) -> None:
    data = _array(env.gd(root=root))
    data[0, 0, 0] = 777
    _replace_nifti(env.gd(root=root), data)


def _empty_roi(env: Env, root: Path) -> None:
    _replace_nifti(env.gd(root=root), np.zeros(_array(env.gd(root=root)).shape, np.int16))


def _constant_sequence(env: Env, root: Path) -> None:
    p = env.img("T2", root=root)
    _replace_nifti(p, np.full(_array(p).shape, 7, np.int16))


def mu_file(env: Env, edit: Callable[[dict], object]) -> Path:
    doc = json.loads(env.mu.read_text())
    doc = edit(doc) or doc
    path = env.work / "mu.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _nan_mu(doc: dict) -> None:
    doc["mu"][2][1] = float("nan")


def _config_edit(env: Env, key: str, value: object) -> Path:
    run = env.copy(env.run, "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg[key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _corrupt_model(env: Env) -> Path:
    run = env.copy(env.run, "run")
    p = run / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8)
    return run


def _user_file_in_output(env: Env) -> Path:
    out = env.copy(env.em_out, "r")
    (out / "notes.txt").write_text("x")
    return out


def _legacy_output(env: Env) -> Path:
    out = env.copy(env.em_out, "legacy")
    (out / ".deepgmm-manifest.json").unlink()
    return out


def _segment_images(env: Env, root: Path | None = None, t2: Path | None = None) -> list[str]:
    root = root or env.data
    return ["--image", f"C0={env.img('C0', root=root)}", "--image",
            f"DE={env.img('DE', root=root)}", "--image",
            f"T2={t2 or env.img('T2', root=root)}"]


def _segment_constant_t2(env: Env) -> list[object]:
    t2 = env.work / "const.nii.gz"
    shutil.copy(env.img("T2"), t2)
    _replace_nifti(t2, np.full(_array(t2).shape, 7, np.int16))
    return ["segment", *_segment_images(env, t2=t2), "--roi", env.gd(), "--out",
            env.work / "o", "--model", "em-gmm", "--crop", "64", "--no-progress"]


def _segment_constant_t2_in_roi(env: Env) -> list[object]:
    t2 = env.work / "t2roi.nii.gz"
    data = _array(env.img("T2")).astype(np.float32)
    data[_array(env.gd()) > 0] = 7.0
    nib.save(nib.Nifti1Image(data, nib.load(str(env.img("T2"))).affine), str(t2))
    return ["segment", *_segment_images(env, t2=t2), "--roi", env.gd(), "--out",
            env.work / "o", "--model", "em-gmm", "--crop", "64", "--no-progress"]


@dataclass(frozen=True)
class Row:
    """One bad invocation: ``args(env)`` -> the command line; ``words``: what its one
    ``error:`` line must hold; ``fail``: the OS error every write below the folder
    ``fail[1](env)`` meets (simulated read-only / full file system)."""

    id: str
    args: Callable[[Env], list[object]]
    words: tuple[str, ...]
    fail: tuple[int, Callable[[Env], Path]] | None = None


def R(id: str, args: Callable[[Env], list[object]], *words: str,  # noqa: A002
      fail: tuple[int, Callable[[Env], Path]] | None = None) -> Row:
    return Row(id, args, words, fail)


W = lambda env: env.work  # noqa: E731  the row's own folder
ROWS = [
    # ---------------------------------------------------------------------- phantom
    R("phantom-seed-negative", lambda e: ["phantom", "--out", W(e) / "p", "--seed", "-1"],
      "--seed", "range [0, 9223372036854775808)", "-1"),
    R("phantom-seed-huge", lambda e: ["phantom", "--out", W(e) / "p", "--seed", HUGE_SEED],
      "--seed", HUGE_SEED),
    R("phantom-size-huge", lambda e: ["phantom", "--out", W(e) / "p", "--size", "100000"],
      "--size", "at most 1024", "100000"),
    R("phantom-size-small", lambda e: ["phantom", "--out", W(e) / "p", "--size", "16"],
      "--size", "at least 48"),
    R("phantom-cases-zero", lambda e: ["phantom", "--out", W(e) / "p", "--cases", "0"],
      "--cases", "at least one case"),
    R("phantom-slices-huge", lambda e: ["phantom", "--out", W(e) / "p", "--slices", "100000"],
      "--slices", "at most 1000 cases and 64 slices"),
    R("phantom-out-file", lambda e: ["phantom", "--out", e.write("f", "x")],
      "'", "/f'", "is a file, not a folder"),
    R("phantom-out-below-file", lambda e: ["phantom", "--out", e.write("f", "x") / "sub"],
      "/f'", "is a file, not a folder"),
    R("phantom-read-only", lambda e: ["phantom", "--out", W(e) / "ro" / "p", "--cases", "1"],
      "could not write", "/ro", "read-only", fail=(errno.EROFS, lambda e: W(e) / "ro")),
    R("phantom-disk-full", lambda e: ["phantom", "--out", W(e) / "full", "--cases", "1"],
      "could not write", "/full/", "no space left",
      fail=(errno.ENOSPC, lambda e: W(e) / "full")),
    R("phantom-into-other-data", lambda e: ["phantom", "--out", _other_data(e)],
      "already holds other data", "myops_training_101_C0.nii.gz"),
    # ------------------------------------------------------------------------- info
    R("info-missing-folder", lambda e: ["info", W(e) / "nowhere"],
      "/nowhere'", "does not exist"),
    R("info-unknown-patient", lambda e: ["info", e.data, "--patients", "999"],
      "unknown patient id(s) 999", "101, 102"),
    R("info-stray-argument", lambda e: ["info", e.data, "extra"],
      "unexpected argument(s) 'extra'"),
    # ---------------------------------------------------------------------- mu-data
    R("mu-data-out-is-input", lambda e: ["mu-data", e.copy_data(), "--crop", "64", "--out",
                                         e.img("C0", root=W(e) / "data")],
      "phantom_training_101_C0.nii.gz", "lies inside the input folder", "one of its files"),
    R("mu-data-out-inside-root", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                            e.data / "mu.json"],
      "/ph/mu.json'", "lies inside the input folder"),
    R("mu-data-out-folder", lambda e: ["mu-data", e.data, "--crop", "64", "--out", W(e)],
      "is an existing folder", "give a file name"),
    R("mu-data-out-below-file", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                           e.write("f", "x") / "mu.json"],
      "/f'", "is a file, not a folder"),
    R("mu-data-seed-negative", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                          W(e) / "m.json", "--seed", "-1"],
      "--seed", "-1"),
    R("mu-data-n-slices-zero", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                          W(e) / "m.json", "--n-slices", "0"],
      "--n-slices", "at least 1"),
    R("mu-data-selection", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                      W(e) / "m.json", "--selection", "some"],
      "selection", "'some'"),
    R("mu-data-normalisation", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                          W(e) / "m.json", "--normalisation", "z"],
      "normalisation", "'z'"),
    R("mu-data-unknown-patient", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                            W(e) / "m.json", "--patients", "999"],
      "unknown patient id(s) 999"),
    R("mu-data-read-only", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                      W(e) / "ro" / "m.json"],
      "could not write", "/ro/m.json'", "read-only",
      fail=(errno.EROFS, lambda e: W(e) / "ro")),
    R("mu-data-disk-full", lambda e: ["mu-data", e.data, "--crop", "64", "--out",
                                      W(e) / "m.json"],
      "could not write", "/m.json'", "no space left",
      fail=(errno.ENOSPC, lambda e: W(e))),
    # ------------------------------------------------------------------------- demo
    R("demo-out-file", lambda e: ["demo", "--out", e.write("f", "x"), "--no-progress"],
      "/f'", "is a file, not a folder"),
    R("demo-seed-negative", lambda e: ["demo", "--out", W(e) / "d", "--seed", "-1"],
      "--seed", "-1"),
    R("demo-epochs-zero", lambda e: ["demo", "--out", W(e) / "d", "--epochs", "0",
                                     "--no-progress"],
      "--epochs", "range [1, inf)", "Got 0"),
    # --------------------------------------------------------------------------- em
    R("em-user-file-in-output", lambda e: ["em", e.data, "--out", _user_file_in_output(e),
                                           *EM],
      "/r'", "holds files deepgmm did not write", "notes.txt", "choose a new"),
    R("em-output-without-manifest", lambda e: ["em", e.data, "--out", _legacy_output(e), *EM],
      "/legacy'", "not an earlier deepgmm output", ".deepgmm-manifest.json"),
    R("em-out-is-data", lambda e: ["em", e.data, "--out", e.data, *EM],
      "/ph'", "is the input"),
    R("em-out-inside-data", lambda e: ["em", e.data, "--out", e.data / "seg", *EM],
      "/ph/seg'", "lies inside the input folder"),
    R("em-out-contains-data", lambda e: ["em", e.copy_data(), "--out", W(e), *EM],
      "contains the input", "/data'"),
    R("em-out-run-folder", lambda e: ["em", e.data, "--out", e.run, *EM],
      "/run'", "is a training run folder", "never replaced"),
    R("em-out-file", lambda e: ["em", e.data, "--out", e.write("f", "x"), *EM],
      "/f'", "is a file, not a folder"),
    R("em-seed-huge", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--seed", HUGE_SEED],
      "--seed", HUGE_SEED),
    R("em-seed-negative", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--seed", "-1"],
      "--seed", "range [0, 9223372036854775808)"),
    R("em-model", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--model", "deepsvg"],
      "--model", "'deepsvg'", "em-gmm"),
    R("em-max-iter-zero", lambda e: ["em", e.data, "--out", W(e) / "o", "--crop", "64",
                                     "--max-iter", "0", "--no-progress"],
      "--max-iter", "Got 0"),
    R("em-matching", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--matching", "best"],
      "--matching", "'best'"),
    R("em-crop-zero", lambda e: ["em", e.data, "--out", W(e) / "o", "--crop", "0",
                                 "--no-progress"],
      "crop"),
    R("em-stray-argument", lambda e: ["em", e.data, "extra", "--out", W(e) / "o", *EM,
                                      "--patients", "101"],
      "unexpected argument(s) 'extra'"),
    R("em-missing-sequence", lambda e: ["em", damaged(_missing_sequence)(e), "--out",
                                        W(e) / "o", *EM],
      "case 101", "missing sequence T2", "phantom_training_101_T2.nii.gz"),
    R("em-truncated-nifti", lambda e: ["em", damaged(_truncated)(e), "--out", W(e) / "o",
                                       *EM],
      "phantom_training_101_C0.nii.gz", "could not be read as NIfTI"),
    R("em-not-nifti", lambda e: ["em", damaged(_not_nifti)(e), "--out", W(e) / "o", *EM],
      "phantom_training_101_C0.nii.gz", "NIfTI"),
    R("em-4d-image", lambda e: ["em", damaged(_four_d)(e), "--out", W(e) / "o", *EM],
      "phantom_training_101_C0.nii.gz", "3-D"),
    R("em-nan-voxels", lambda e: ["em", damaged(_nan)(e), "--out", W(e) / "o", *EM],
      "phantom_training_101_T2.nii.gz", "NaN"),
    R("em-shifted-affine", lambda e: ["em", damaged(_shifted)(e), "--out", W(e) / "o", *EM],
      "phantom_training_101_DE.nii.gz", "not in the same space", "origin ("),
    R("em-other-shape", lambda e: ["em", damaged(_other_shape)(e), "--out", W(e) / "o", *EM],
      "phantom_training_101_DE.nii.gz", "has shape (64, 50, 3)"),
    R("em-unknown-label-codes", lambda e: ["em", damaged(_unknown_codes)(e), "--out",
                                           W(e) / "o", *EM],
      "phantom_training_101_gd.nii.gz", "777"),
    R("em-empty-roi", lambda e: ["em", damaged(_empty_roi)(e), "--out", W(e) / "o", *EM],
      "phantom_training_101_gd.nii.gz", "region of interest is empty"),
    R("em-constant-sequence", lambda e: ["em", damaged(_constant_sequence)(e), "--out",
                                         W(e) / "o", *EM],
      "case 101", "sequence T2", "phantom_training_101_T2.nii.gz", "constant"),
    R("em-mu-data-nan", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--mu-data",
                                   mu_file(e, _nan_mu)],
      "/mu.json'", "NaN or infinite", "edema in DE"),
    R("em-mu-data-shape", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--mu-data",
                                     mu_file(e, lambda d: d.update(mu=d["mu"][:3]))],
      "/mu.json'", "4 x 3 matrix", "(3, 3)"),
    R("em-mu-data-not-json", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--mu-data",
                                        mu_file(e, lambda d: "{not json")],
      "/mu.json'", "JSON"),
    R("em-mu-data-missing", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--mu-data",
                                       W(e) / "none.json"],
      "/none.json'"),
    R("em-read-only", lambda e: ["em", e.data, "--out", W(e) / "ro" / "o", *EM, "--patients",
                                 "101"],
      "could not write", "/ro/o'", "read-only", fail=(errno.EROFS, lambda e: W(e) / "ro")),
    R("em-disk-full", lambda e: ["em", e.data, "--out", W(e) / "o", *EM, "--patients", "101"],
      "could not write", "/o'", "no space left", fail=(errno.ENOSPC, lambda e: W(e))),
    # -------------------------------------------------------------------------- fit
    R("fit-stray-argument", lambda e: ["fit", e.data, "extra", "--patients", "101",
                                       "--out", W(e) / "o", *FIT],
      "unexpected argument(s) 'extra'"),
    R("fit-min-iter-above-max", lambda e: ["fit", e.data, "--out", W(e) / "o", *FIT,
                                           "--min-iter", "10", "--max-iter", "5"],
      "--min-iter (10) must not exceed --max-iter (5)", "lower --min-iter"),
    R("fit-seed-negative", lambda e: ["fit", e.data, "--out", W(e) / "o", *FIT, "--seed",
                                      "-1"],
      "--seed", "-1"),
    R("fit-lam-without-mu-data", lambda e: ["fit", e.data, "--out", W(e) / "o", *FIT,
                                            "--lam", "1"],
      "--lam", "--mu-data"),
    R("fit-depth-crop", lambda e: ["fit", e.data, "--out", W(e) / "o", *FIT, "--depth", "7"],
      "multiples of 2**depth = 128", "64 x 64"),
    R("fit-user-file-in-output", lambda e: ["fit", e.data, "--out", _user_file_in_output(e),
                                            *FIT],
      "holds files deepgmm did not write", "notes.txt"),
    # ---------------------------------------------------------------------- segment
    R("segment-constant-sequence-file", _segment_constant_t2,
      "sequence T2", "const.nii.gz", "constant"),
    R("segment-constant-in-roi", _segment_constant_t2_in_roi,
      "case 'case', slice 0, sequence T2", "t2roi.nii.gz", "constant inside the ROI"),
    R("segment-image-form", lambda e: ["segment", "--image", "C0", "--roi", e.gd(), "--out",
                                       W(e) / "o"],
      "--image expects NAME=FILE", "'C0'"),
    R("segment-missing-roi", lambda e: ["segment", *_segment_images(e), "--roi",
                                        W(e) / "none.nii.gz", "--out", W(e) / "o"],
      "/none.nii.gz'"),
    R("segment-shifted-affine", lambda e: ["segment", *_segment_images(
        e, root=damaged(_shifted)(e)), "--roi", e.gd(), "--out", W(e) / "o", "--crop", "64"],
      "phantom_training_101_DE.nii.gz", "not in the same space"),
    R("segment-out-is-an-input", lambda e: ["segment", *_segment_images(e), "--roi",
                                            e.gd(), "--out", e.data / "train25"],
      "contains the input"),
    # ------------------------------------------------------------------------ train
    R("train-out-is-data", lambda e: ["train", e.data, "--out", e.data, *TRAIN],
      "run folder", "/ph'", "is the input"),
    R("train-out-inside-data", lambda e: ["train", e.data, "--out", e.data / "run", *TRAIN],
      "run folder", "/ph/run'", "lies inside the input folder"),
    R("train-seed-negative", lambda e: ["train", e.data, "--out", W(e) / "r", *TRAIN,
                                        "--seed", "-1"],
      "--seed", "-1"),
    R("train-existing-checkpoint", lambda e: ["train", e.data, "--out", e.copy(e.run, "r"),
                                              *TRAIN],
      "already holds a checkpoint", "--resume"),
    R("train-read-only", lambda e: ["train", e.data, "--out", W(e) / "ro" / "r", *TRAIN],
      "could not write", "/ro/r", "read-only", fail=(errno.EROFS, lambda e: W(e) / "ro")),
    # ---------------------------------------------------------------------- predict
    R("predict-config-crop-size", lambda e: ["predict", _config_edit(e, "crop_size", [64]),
                                             e.data, "--out", W(e) / "o", "--no-progress"],
      "/run/config.json'", "'crop_size'", "[64]"),
    R("predict-config-sequences", lambda e: ["predict", _config_edit(e, "sequences", []),
                                             e.data, "--out", W(e) / "o", "--no-progress"],
      "/run/config.json'", "'sequences'"),
    R("predict-missing-run", lambda e: ["predict", W(e) / "none", e.data, "--out",
                                        W(e) / "o"],
      "/none'", "does not exist"),
    R("predict-corrupt-model", lambda e: ["predict", _corrupt_model(e), e.data, "--out",
                                          W(e) / "o", "--no-progress"],
      "model.safetensors", "corrupt"),
    R("predict-out-is-run", lambda e: ["predict", e.run, e.data, "--out", e.run,
                                       "--no-progress"],
      "/run'", "is the input"),
    # --------------------------------------------------------------------- evaluate
    R("evaluate-not-an-output", lambda e: ["evaluate", e.data, "--out", W(e)],
      "results.csv"),
    R("evaluate-read-only", lambda e: ["evaluate", e.data, "--out", e.copy(e.em_out, "ev")],
      "could not write", "evaluation.csv", "read-only",
      fail=(errno.EROFS, lambda e: W(e) / "ev")),
    # ----------------------------------------------------------------------- report
    R("report-not-a-folder", lambda e: ["report", W(e) / "none"], "/none'", "not a folder"),
    R("report-read-only", lambda e: ["report", e.copy(e.em_out, "rep")],
      "could not write", "report.html", "read-only",
      fail=(errno.EROFS, lambda e: W(e) / "rep")),
    # -------------------------------------------------------------------------- roi
    R("roi-train-seed-negative", lambda e: ["roi", "train", e.data, "--out", W(e) / "r",
                                            "--seed", "-1", "--no-progress"],
      "seed", "-1"),
    R("roi-train-out-is-data", lambda e: ["roi", "train", e.data, "--out", e.data,
                                          "--no-progress"],
      "/ph'", "is the input"),
    R("roi-predict-out-inside-data", lambda e: ["roi", "predict", e.run, e.data, "--out",
                                                e.data / "roi"],
      "/ph/roi'", "lies inside the input folder"),
]


def _other_data(env: Env) -> Path:
    root = env.write("other/train25/myops_training_101_C0.nii.gz", "x").parents[1]
    return root


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, env: Env) -> None:
    args = row.args(env)
    before = snapshot(env.base)
    if row.fail is not None:
        code, where = row.fail
        with deny_writes(where(env), code):
            result = _invoke(*args)
    else:
        result = _invoke(*args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for word in row.words:
        assert word in errors[0], (word, errors[0])
    assert snapshot(env.base) == before  # nothing new, changed or removed anywhere


def test_matrix_covers_every_command() -> None:
    commands = {r.id.split("-")[0] for r in ROWS}
    assert commands == {"phantom", "info", "mu", "demo", "em", "fit", "segment", "train",
                        "predict", "evaluate", "report", "roi"}
    assert len(ROWS) >= 60


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_chmod_read_only_folder(env_base: Env, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        result = _invoke("mu-data", env_base.data, "--crop", "64", "--out", ro / "m.json")
        assert result.exit_code == 2 and "could not write" in result.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
