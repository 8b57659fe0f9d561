"""NIfTI input and output: load a 3-D volume as float32, check that volumes share a grid,
and write arrays atomically with the geometry (qform and sform) of their input.

Shapes: a volume is ``(X, Y, Z)``; slices run along Z.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from deepgmm._atomic import atomic_path
from deepgmm.errors import InputError

PathLike = str | os.PathLike[str]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

AFFINE_ATOL_MM: float = 1e-3
"""Largest difference (in mm) between two affines that still counts as the same grid."""


@dataclass
class NiftiVolume:
    """One loaded 3-D NIfTI file.

    Attributes:
        data: ``(X, Y, Z)`` float32 intensities (scaling slope/intercept applied).
        affine: ``(4, 4)`` float64 voxel-to-world matrix.
        zooms: voxel spacing in mm, ``(dx, dy, dz)``.
        header: the file's NIfTI header, to use as a template when writing outputs.
        path: the file it came from.
    """

    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]
    header: nib.Nifti1Header
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` grid shape."""
        return tuple(self.data.shape)  # type: ignore[return-value]


def _check_suffix(path: Path) -> None:
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise InputError(f"{str(path)!r} is not a NIfTI file: expected a name ending in "
                         f".nii or .nii.gz")


def load_nifti(path: PathLike, *, what: str = "image") -> NiftiVolume:
    """Load a 3-D NIfTI file into float32.

    A 2-D image is read as one slice ``(X, Y, 1)``; trailing singleton dimensions beyond the
    third are dropped. Everything else that is not a finite 3-D volume is refused.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        what: what the file is meant to be (``"image"``, ``"ROI mask"``...), for messages.

    Returns:
        The volume: data ``(X, Y, Z)`` float32, affine, spacing and header.

    Raises:
        InputError: missing file, not a NIfTI file, corrupt (e.g. truncated ``.gz``),
            4-D with more than one volume, or NaN/inf voxels. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    _check_suffix(path)
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputError(f"{what} file {str(path)!r} is not a NIfTI-1/2 image "
                             f"({type(img).__name__})")
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except InputError:
        raise
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError,
            gzip.BadGzipFile, EOFError, zlib.error, OSError, ValueError) as err:
        raise InputError(f"{what} file {str(path)!r} could not be read as NIfTI "
                         f"(corrupt or truncated?): {err}") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise InputError(f"{what} file {str(path)!r} has shape {tuple(img.shape)}: expected "
                         f"a 3-D volume (X, Y, Z)")
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - np.count_nonzero(finite))
        raise InputError(f"{what} file {str(path)!r} has {n_bad} NaN or infinite voxel(s): "
                         f"expected finite intensities")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = (zooms + (1.0, 1.0, 1.0))[:3]
    return NiftiVolume(data=np.ascontiguousarray(data, dtype=np.float32),
                       affine=np.asarray(img.affine, dtype=np.float64),
                       zooms=zooms,  # type: ignore[arg-type]
                       header=img.header.copy(), path=path)


def _plain(values: np.ndarray, decimals: int) -> tuple[float, ...]:
    """Rounded values as plain floats (printed ``(1.5, 1.5)``, not ``np.float64(1.5)``)."""
    return tuple(float(v) for v in np.round(np.asarray(values, dtype=np.float64), decimals))


def check_same_space(volumes: Sequence[NiftiVolume], *, atol: float = AFFINE_ATOL_MM) -> None:
    """Check that volumes lie on one grid: same shape and (nearly) the same affine.

    Args:
        volumes: the volumes to compare; the first is the reference.
        atol: largest allowed difference between affine entries, in mm.

    Raises:
        InputError: naming both files and saying how they differ (shape, spacing, origin
            or orientation).
    """
    if len(volumes) < 2:
        return
    ref = volumes[0]
    for vol in volumes[1:]:
        if vol.shape != ref.shape:
            raise InputError(
                f"{str(vol.path)!r} has shape {vol.shape} but {str(ref.path)!r} has shape "
                f"{ref.shape}: all sequences, masks and labels must be co-registered on "
                f"one grid")
        diff = np.abs(vol.affine - ref.affine)
        if diff.max() > atol:
            ref_sp = np.linalg.norm(ref.affine[:3, :3], axis=0)
            vol_sp = np.linalg.norm(vol.affine[:3, :3], axis=0)
            if np.abs(ref_sp - vol_sp).max() > atol:
                how = (f"voxel spacing {_plain(vol_sp, 4)} vs {_plain(ref_sp, 4)} mm")
            elif diff[:3, :3].max() > atol:
                how = "orientation (direction cosines) differs"
            else:
                how = (f"origin {_plain(vol.affine[:3, 3], 3)} vs "
                       f"{_plain(ref.affine[:3, 3], 3)} mm")
            raise InputError(
                f"{str(vol.path)!r} and {str(ref.path)!r} are not in the same space: {how} "
                f"(affines differ by up to {diff.max():.4g} mm); resample them onto one grid")


def save_nifti(array: np.ndarray, affine: np.ndarray, path: PathLike,
               template_header: nib.Nifti1Header | None = None) -> Path:
    """Write an array as NIfTI, atomically, with qform and sform set to ``affine``.

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` (e.g. per-class probability maps); bool is
            written as uint8, other dtypes as they are (int16 labels, float32 maps).
        affine: ``(4, 4)`` voxel-to-world matrix (usually the input's).
        path: output ``.nii`` or ``.nii.gz`` file; it appears only once fully written.
        template_header: header of the input; its qform/sform codes (scanner, aligned...)
            and units are kept so viewers show the output on the input's geometry.

    Returns:
        The written path.

    Raises:
        InputError: for a bad suffix, a bad affine or an array that is not 3-D/4-D.
    """
    path = Path(path)
    _check_suffix(path)
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise InputError(f"cannot write {str(path)!r}: expected a 3-D or 4-D array, got "
                         f"shape {array.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(f"cannot write {str(path)!r}: affine must be a finite 4 x 4 matrix, "
                         f"got shape {affine.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    header = template_header.copy() if template_header is not None else None
    img = nib.Nifti1Image(array, affine, header=header)
    img.header.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    qcode = int(header["qform_code"]) if header is not None else 0
    scode = int(header["sform_code"]) if header is not None else 0
    img.set_qform(affine, code=qcode if qcode > 0 else 1)
    img.set_sform(affine, code=scode if scode > 0 else 1)
    if header is None:
        img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
