"""MyoPS layout discovery and label codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepgmm.data.myops import discover_cases, labels_to_classes
from deepgmm.errors import InputError


def _touch_case(folder: Path, prefix: str, case: int, tokens=("C0", "DE", "T2")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in tokens:
        (folder / f"{prefix}_{case}_{t}.nii.gz").write_bytes(b"")


def test_discover_phantom_layout(phantom_root: Path):
    cases = discover_cases(phantom_root)
    assert [c.case_id for c in cases] == ["101", "102", "103", "104"]
    first = cases[0]
    assert first.prefix == "phantom_training"
    assert list(first.images) == ["C0", "DE", "T2"]
    assert first.images["DE"] == phantom_root / "train25" / "phantom_training_101_DE.nii.gz"
    assert first.labels == phantom_root / "train25_myops_gd" / "phantom_training_101_gd.nii.gz"


def test_discover_test20_names_without_labels(tmp_path: Path):
    for case in (220, 201, 205):
        _touch_case(tmp_path / "test20", "myops_test", case)
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["201", "205", "220"]
    assert all(c.labels is None and c.prefix == "myops_test" for c in cases)


def test_discover_sorts_numerically_and_mixes_train_and_test(tmp_path: Path):
    _touch_case(tmp_path / "test20", "myops_test", 201)
    _touch_case(tmp_path / "train25", "myops_training", 99)
    _touch_case(tmp_path / "train25", "myops_training", 101)
    _touch_case(tmp_path / "gd", "myops_training", 99, ("gd",))
    _touch_case(tmp_path / "gd", "myops_training", 101, ("gd",))
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["99", "101", "201"]
    assert [c.labels is not None for c in cases] == [True, True, False]


def test_discover_sequence_subset_in_given_order(tmp_path: Path):
    _touch_case(tmp_path, "p", 1)
    (case,) = discover_cases(tmp_path, sequences=("T2", "DE"))
    assert list(case.images) == ["T2", "DE"]


def test_discover_missing_sequence_names_expected_file(tmp_path: Path):
    _touch_case(tmp_path / "train25", "myops_training", 101)
    _touch_case(tmp_path / "train25", "myops_training", 102, ("C0", "T2"))
    expected = str(tmp_path / "train25" / "myops_training_102_DE.nii.gz")
    with pytest.raises(InputError, match="case 102: missing sequence DE") as err:
        discover_cases(tmp_path)
    assert expected in str(err.value)


def test_discover_missing_ground_truth_names_expected_file(tmp_path: Path):
    for case in (101, 102):
        _touch_case(tmp_path / "train25", "myops_training", case)
    _touch_case(tmp_path / "gd", "myops_training", 101, ("gd",))
    with pytest.raises(InputError, match="case 102: missing ground-truth file") as err:
        discover_cases(tmp_path)
    assert str(tmp_path / "gd" / "myops_training_102_gd.nii.gz") in str(err.value)


def test_discover_duplicate_file(tmp_path: Path):
    _touch_case(tmp_path / "a", "p", 1)
    _touch_case(tmp_path / "b", "p", 1, ("C0",))
    with pytest.raises(InputError, match="case 1 has two C0 files"):
        discover_cases(tmp_path)


def test_discover_ignores_hidden_and_other_files(tmp_path: Path):
    _touch_case(tmp_path, "p", 1)
    (tmp_path / ".p_1_C0.nii.tmp.nii.gz").write_bytes(b"")
    (tmp_path / "p_1_C0.txt").write_bytes(b"")
    (tmp_path / "p_1_FLAIR.nii.gz").write_bytes(b"")
    (case,) = discover_cases(tmp_path)
    assert case.images["C0"] == tmp_path / "p_1_C0.nii.gz"


def test_discover_empty_and_missing_root(tmp_path: Path):
    with pytest.raises(InputError, match="no MyoPS-style images"):
        discover_cases(tmp_path)
    with pytest.raises(InputError, match="nowhere.*does not exist"):
        discover_cases(tmp_path / "nowhere")


def test_labels_to_classes_hand_mapping():
    codes = np.array([[0, 500, 200], [1220, 2221, 600]], dtype=np.float32)
    out = labels_to_classes(codes)
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, 4, 0]])
    assert out.dtype == np.int64


def test_labels_to_classes_lists_unknown_codes():
    with pytest.raises(InputError, match=r"gd\.nii\.gz holds label code\(s\) 7, 300 "):
        labels_to_classes(np.array([0, 7, 500, 300, 7]), source="gd.nii.gz")
    with pytest.raises(InputError, match="200.5"):
        labels_to_classes(np.array([0.0, 200.5]))


def test_sequence_names_myops_first_then_sorted(tmp_path: Path):
    from deepgmm.data.myops import sequence_names

    _touch_case(tmp_path / "a", "x", 1, tokens=("T2", "gd", "FLAIR", "C0"))
    _touch_case(tmp_path / ".hidden", "x", 2, tokens=("DE",))
    _touch_case(tmp_path / "b", "x", 3, tokens=("ADC",))
    assert sequence_names(tmp_path) == ("C0", "T2", "ADC", "FLAIR")
