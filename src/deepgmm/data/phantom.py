"""A synthetic multi-sequence cardiac MR phantom in the MyoPS layout.

Each case is a short-axis stack: a body with textured background tissue, the left-ventricle
(LV) blood pool (a disc), the myocardium (a ring around it), a scar (a sector of the
myocardium growing from the inner wall outwards), edema (a wider sector around the scar,
inside the myocardium) and the right-ventricle (RV) blood pool (a crescent beside the LV).
Three sequences are simulated with the contrasts of the MyoPS data:

- ``C0`` (bSSFP): blood bright, myocardium dark;
- ``DE`` (LGE): scar bright, blood medium, healthy myocardium dark (nulled);
- ``T2``: edema bright, scar moderately bright, myocardium dark.

Image formation: tissue intensities (jittered per case) -> partial-volume blur
(``scipy.ndimage.gaussian_filter``) -> smooth multiplicative bias field per sequence ->
Rician noise -> int16. The ground truth uses the MyoPS codes (500 LV blood, 200 healthy
myocardium, 1220 edema, 2221 scar, 600 RV). Every slice contains all four classes. The
geometry varies per case (position, size, wall thickness, lesion angle and extent, in-plane
rotation of the affine) and per slice (the LV narrows towards the apex; the lesion drifts).
Everything is deterministic given the seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from deepgmm.data.myops import FILE_PATTERN
from deepgmm.data.nifti import save_nifti
from deepgmm.errors import InputError
from deepgmm.output_paths import check_output_folder
from deepgmm.params import check_seed

PathLike = str | os.PathLike[str]

PHANTOM_PREFIX = "phantom_training"
FIRST_CASE_ID = 101
MAX_SIZE = 1024
"""Largest in-plane size in voxels (a 1024 x 1024 case of 3 slices takes ~200 MB to build)."""
MAX_SLICES = 64
"""Most slices per case."""
MAX_CASES = 1000
"""Most cases (ids 101 .. 1100)."""

# Tissue indices of the simulation (rows of TISSUE_INTENSITY).
AIR, BODY, RV_BLOOD, LV_BLOOD, MYO, EDEMA, SCAR = range(7)
TISSUE_TO_CODE = np.array([0, 0, 600, 500, 200, 1220, 2221], dtype=np.int16)
"""Tissue index -> MyoPS ground-truth code."""

SEQUENCES: tuple[str, ...] = ("C0", "DE", "T2")
TISSUE_INTENSITY = np.array([
    # air  body  RV    LV    myo  edema scar
    [0.0, 420., 1100., 1150., 320., 420., 360.],   # C0 bSSFP: blood bright, myocardium dark
    [0.0, 300., 600., 650., 150., 220., 1150.],    # DE LGE: scar bright, healthy myo nulled
    [0.0, 350., 450., 480., 230., 560., 430.],     # T2: edema bright, scar moderately bright
], dtype=np.float64)
"""``(M, T)`` mean intensity of tissue t in sequence m before blur, bias and noise."""

NOISE_FRACTION = 0.06
"""Rician noise sd as a fraction of the LV blood intensity of each sequence."""


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute angular distance in radians, in [0, pi]."""
    return np.abs(np.angle(np.exp(1j * (a - b))))


def _tissue_map(rng: np.random.Generator, shape: tuple[int, int], n_slices: int,
                spacing: tuple[float, float, float]) -> np.ndarray:
    """Hard tissue indices ``(X, Y, Z)`` of one case; geometry drawn from ``rng``."""
    nx, ny = shape
    dx, dy, _ = spacing
    x = ((np.arange(nx) - (nx - 1) / 2) * dx)[:, None, None]  # (X, 1, 1) mm
    y = ((np.arange(ny) - (ny - 1) / 2) * dy)[None, :, None]  # (1, Y, 1) mm
    t = np.linspace(0.0, 1.0, n_slices)[None, None, :] if n_slices > 1 else np.zeros((1, 1, 1))

    half_fov = min(nx * dx, ny * dy) / 2
    # Body: an ellipse filling most of the field of view.
    body = (x / (0.92 * nx * dx / 2)) ** 2 + (y / (0.80 * ny * dy / 2)) ** 2 < 1.0

    # LV geometry per case, drifting a little per slice; narrower towards the apex.
    r_endo0 = rng.uniform(14.0, 19.0)
    thick = rng.uniform(6.0, 9.0)
    max_offset = max(0.0, min(10.0, half_fov - 1.3 * (r_endo0 + thick) - 8.0))
    cx = rng.uniform(-max_offset, max_offset) + rng.uniform(-1.5, 1.5, n_slices)[None, None]
    cy = rng.uniform(-max_offset, max_offset) + rng.uniform(-1.5, 1.5, n_slices)[None, None]
    r_endo = r_endo0 * (1.0 - 0.35 * t)
    r_epi = r_endo + thick * (1.0 - 0.15 * t)
    aspect = rng.uniform(0.9, 1.1)
    rx, ry = (x - cx) * aspect, (y - cy) / aspect
    radius = np.hypot(rx, ry)
    theta = np.arctan2(ry, rx)

    blood = radius < r_endo
    myo = (radius >= r_endo) & (radius < r_epi)

    # RV: a larger disc shifted to one side of the LV, minus the LV and a thin septal
    # margin: a crescent wrapping that side.
    rv_angle = rng.uniform(0.75 * np.pi, 1.25 * np.pi)
    rv_radius = r_epi * rng.uniform(1.3, 1.5)
    rv_dist = r_epi * rng.uniform(0.55, 0.7)
    rv = (np.hypot(rx - rv_dist * np.cos(rv_angle), ry - rv_dist * np.sin(rv_angle))
          < rv_radius) & (radius >= r_epi + 1.0)

    # Lesions: scar sector from the inner wall, edema a wider sector around it.
    scar_angle = rng.uniform(-np.pi, np.pi) + rng.uniform(-0.15, 0.15, n_slices)[None, None]
    scar_half = np.deg2rad(rng.uniform(50.0, 90.0)) / 2
    depth = rng.uniform(0.5, 1.0)
    edema_half = scar_half + np.deg2rad(rng.uniform(20.0, 35.0))
    ang = _angle_diff(theta, scar_angle)
    wall_frac = (radius - r_endo) / (r_epi - r_endo)
    scar = myo & (ang < scar_half) & (wall_frac < depth)
    edema = myo & (ang < edema_half) & ~scar

    tissue = np.where(body, BODY, AIR)
    tissue = np.where(rv, RV_BLOOD, tissue)
    tissue = np.where(blood, LV_BLOOD, tissue)
    tissue = np.where(myo, MYO, tissue)
    tissue = np.where(edema, EDEMA, tissue)
    tissue = np.where(scar, SCAR, tissue)
    return np.broadcast_to(tissue, (nx, ny, n_slices)).astype(np.int64)


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int],
                n_seq: int) -> np.ndarray:
    """``(M, X, Y, 1)`` smooth multiplicative field, exp of a random quadratic, about ±20 %."""
    nx, ny, _ = shape
    u = np.linspace(-1.0, 1.0, nx)[None, :, None, None]
    v = np.linspace(-1.0, 1.0, ny)[None, None, :, None]
    c = rng.uniform(-1.0, 1.0, (5, n_seq))[..., None, None, None] * 0.1
    log_field = c[0] * u + c[1] * v + c[2] * u * v + c[3] * u ** 2 + c[4] * v ** 2
    return np.exp(log_field)


def simulate_case(rng: np.random.Generator, shape: tuple[int, int] = (128, 128),
                  n_slices: int = 3, spacing: tuple[float, float, float] = (1.5, 1.5, 10.0),
                  noise: float = NOISE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one case.

    Args:
        rng: the random generator (all randomness comes from it).
        shape: ``(X, Y)`` in-plane size in voxels.
        n_slices: Z, number of short-axis slices (base to apex).
        spacing: voxel size in mm ``(dx, dy, dz)``.
        noise: Rician noise sd as a fraction of each sequence's LV blood intensity.

    Returns:
        ``images`` ``(M, X, Y, Z)`` int16 (C0, DE, T2) and ``codes`` ``(X, Y, Z)`` int16
        MyoPS ground-truth codes.
    """
    tissue = _tissue_map(rng, shape, n_slices, spacing)  # (X, Y, Z)
    n_seq, n_tissue = TISSUE_INTENSITY.shape
    levels = TISSUE_INTENSITY * rng.uniform(0.92, 1.08, (n_seq, n_tissue))
    levels *= rng.uniform(0.8, 1.25, (n_seq, 1))  # per-sequence scanner gain
    clean = levels[:, tissue]  # (M, X, Y, Z)
    # Background texture: smooth random modulation of the body tissue (about ±15 %).
    texture = ndimage.gaussian_filter(rng.standard_normal(tissue.shape), sigma=(6, 6, 0))
    texture *= 0.15 / max(float(np.abs(texture).max()), 1e-12)
    clean = clean * np.where(tissue == BODY, 1.0 + texture, 1.0)[None]
    blurred = ndimage.gaussian_filter(clean, sigma=(0, 0.7, 0.7, 0))  # partial volume
    biased = blurred * _bias_field(rng, tissue.shape, n_seq)
    sd = (noise * levels[:, LV_BLOOD])[:, None, None, None]
    noise = rng.standard_normal((2, *biased.shape)) * sd
    rician = np.hypot(biased + noise[0], noise[1])
    images = np.clip(np.rint(rician), 0, np.iinfo(np.int16).max).astype(np.int16)
    return images, TISSUE_TO_CODE[tissue]


def _affine(rng: np.random.Generator, shape: tuple[int, int, int],
            spacing: tuple[float, float, float]) -> np.ndarray:
    """``(4, 4)`` voxel-to-world matrix: the spacing, an in-plane rotation, a centred origin."""
    angle = np.deg2rad(rng.uniform(-20.0, 20.0))
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                    [np.sin(angle), np.cos(angle), 0.0],
                    [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def _refuse_foreign_data(out: Path) -> None:
    """Refuse to write the phantom into a folder that holds other MyoPS-style images."""
    if not out.is_dir():
        return
    for path in out.rglob("*_*_*.nii*"):
        match = FILE_PATTERN.match(path.name)
        if match and match["prefix"] != PHANTOM_PREFIX and not path.name.startswith("."):
            raise InputError(f"phantom output {str(out)!r} already holds other data (e.g. "
                             f"{str(path)!r}); choose a new or empty folder")


def write_phantom(out_dir: PathLike, n_cases: int = 4, seed: int = 0,
                  shape: Sequence[int] = (128, 128), n_slices: int = 3,
                  spacing: Sequence[float] = (1.5, 1.5, 10.0),
                  noise: float = NOISE_FRACTION, layout: str = "myops") -> Path:
    """Write a phantom data set in the MyoPS layout (or the nnU-Net-style one).

    Layout ``"myops"``: ``out_dir/train25/phantom_training_<id>_{C0,DE,T2}.nii.gz`` and
    ``out_dir/train25_myops_gd/phantom_training_<id>_gd.nii.gz``, case ids 101, 102, ...
    Layout ``"nnunet"`` (:mod:`deepgmm.data.nnunet`): ``dataset.json`` (channels C0, DE,
    T2; labels background 0, blood 1, myocardium 2, edema 3, scar 4, right ventricle 5),
    ``imagesTs/phantom_<id>_000{0,1,2}.nii.gz``, ``labelsTs/phantom_<id>.nii.gz`` and
    ``rois/phantom_<id>.nii.gz`` (the left ventricle), the same images and truth.
    Each file is written atomically; existing phantom files of the same names are replaced.

    Args:
        out_dir: folder to write into (created if needed).
        n_cases: number of cases.
        seed: the data depend only on ``seed`` (and the other arguments).
        shape: ``(X, Y)`` in-plane size in voxels (at least 48 each).
        n_slices: slices per case (Z), base to apex.
        spacing: voxel size in mm ``(dx, dy, dz)``.
        noise: Rician noise sd as a fraction of each sequence's LV blood intensity
            (default :data:`NOISE_FRACTION`).
        layout: ``"myops"`` or ``"nnunet"``.

    Returns:
        ``out_dir`` as a :class:`Path`, ready for :func:`deepgmm.data.load_dataset`.

    Raises:
        InputError: for a non-positive count, a too small image or field of view, or a
            non-positive spacing, or a negative or non-finite noise level.
    """
    check_seed(seed, caller="write_phantom")
    if not (1 <= int(n_cases) <= MAX_CASES and 1 <= int(n_slices) <= MAX_SLICES):
        raise InputError(f"phantom needs at least one case and one slice, and at most "
                         f"{MAX_CASES} cases and {MAX_SLICES} slices, got n_cases={n_cases}, "
                         f"n_slices={n_slices}", params=("n_cases", "n_slices"))
    shape_t = tuple(int(s) for s in shape)
    spacing_t = tuple(float(s) for s in spacing)
    if len(shape_t) != 2 or not 48 <= min(shape_t) <= max(shape_t) <= MAX_SIZE:
        raise InputError(f"phantom shape must be two sizes of at least 48 and at most "
                         f"{MAX_SIZE} voxels, got {tuple(shape)}", params=("shape",))
    if len(spacing_t) != 3 or min(spacing_t) <= 0:
        raise InputError(f"phantom spacing must be three positive sizes in mm, got {spacing}")
    if not np.isfinite(noise) or not 0.0 <= float(noise) <= 1.0:
        raise InputError(f"phantom noise must be a fraction of the blood intensity in [0, 1], "
                         f"got {noise}")
    fov = min(shape_t[0] * spacing_t[0], shape_t[1] * spacing_t[1])
    if fov < 90.0:
        raise InputError(f"phantom field of view {fov:.0f} mm is too small for a heart: "
                         f"make shape x spacing at least 90 mm")
    if layout not in LAYOUTS:
        raise InputError(f"phantom layout must be one of {', '.join(LAYOUTS)}, got "
                         f"{layout!r}", params=("layout",))
    out = Path(out_dir)
    check_output_folder(out, replace=False, what="phantom output")
    _refuse_foreign_data(out)
    if layout == "nnunet":
        return _write_nnunet(out, int(n_cases), int(seed), shape_t, int(n_slices), spacing_t,
                             float(noise))
    for i in range(int(n_cases)):
        rng = np.random.default_rng([int(seed), i])
        images, codes = simulate_case(rng, shape_t, int(n_slices),  # type: ignore[arg-type]
                                      spacing_t, float(noise))  # type: ignore[arg-type]
        affine = _affine(rng, codes.shape, spacing_t)  # type: ignore[arg-type]
        case = f"{PHANTOM_PREFIX}_{FIRST_CASE_ID + i}"
        for name, image in zip(SEQUENCES, images, strict=True):
            save_nifti(image, affine, out / "train25" / f"{case}_{name}.nii.gz")
        save_nifti(codes, affine, out / "train25_myops_gd" / f"{case}_gd.nii.gz")
    return out


LAYOUTS: tuple[str, ...] = ("myops", "nnunet")
NNUNET_LABELS: dict[str, int] = {"background": 0, "blood": 1, "myocardium": 2, "edema": 3,
                                 "scar": 4, "right ventricle": 5}
"""The phantom's label codes in the nnU-Net layout (consecutive, as nnU-Net wants)."""


def _write_nnunet(out: Path, n_cases: int, seed: int, shape: tuple[int, int], n_slices: int,
                  spacing: tuple[float, float, float], noise: float = NOISE_FRACTION) -> Path:
    """The phantom in the nnU-Net-style layout (same images and truth as ``"myops"``)."""
    from deepgmm.data.nnunet import IMAGES_DIR, LABELS_DIR, ROIS_DIR, write_dataset_json

    myops_to_nnunet = np.zeros(2222, dtype=np.int16)
    myops_to_nnunet[[500, 200, 1220, 2221, 600]] = [1, 2, 3, 4, 5]
    for i in range(n_cases):
        rng = np.random.default_rng([seed, i])
        images, codes = simulate_case(rng, shape, n_slices, spacing, noise)
        affine = _affine(rng, codes.shape, spacing)
        case = f"phantom_{FIRST_CASE_ID + i}"
        for channel, image in enumerate(images):
            save_nifti(image, affine, out / IMAGES_DIR / f"{case}_{channel:04d}.nii.gz")
        labels = myops_to_nnunet[np.asarray(codes, dtype=np.int64)]
        save_nifti(labels, affine, out / LABELS_DIR / f"{case}.nii.gz")
        lv = ((labels >= 1) & (labels <= 4)).astype(np.uint8)
        save_nifti(lv, affine, out / ROIS_DIR / f"{case}.nii.gz")
    write_dataset_json(out, SEQUENCES, NNUNET_LABELS, n_cases=n_cases)
    return out
