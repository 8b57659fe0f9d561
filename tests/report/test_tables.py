"""Summaries and table cells: NaN/inf conventions, hand-computed means and SDs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deepgmm.report.tables import (
    class_means,
    format_dice_table,
    format_summary,
    slice_rows,
    summarize,
)


def test_class_means_ignore_nan_and_inf():
    values = np.array([[1.0, np.nan, 0.2, np.inf],
                       [0.5, np.nan, 0.4, 3.0],
                       [0.0, np.nan, np.nan, 5.0]])
    mean, sd = class_means(values)
    assert mean["blood"] == pytest.approx(0.5)
    assert sd["blood"] == pytest.approx(0.5)            # sample SD of 1, 0.5, 0
    assert mean["myocardium"] is None and sd["myocardium"] is None
    assert mean["edema"] == pytest.approx(0.3)
    assert sd["edema"] == pytest.approx(math.sqrt(0.02))
    assert mean["scar"] == pytest.approx(4.0)           # inf left out
    one, one_sd = class_means(values[:1])
    assert one["blood"] == 1.0 and one_sd["blood"] is None


def test_summary_is_strict_json_and_table_formats():
    dice = np.array([[0.9, 0.8, np.nan, 0.5], [0.7, 0.6, 0.1, 0.3]])
    hd = np.array([[1.0, 2.0, np.nan, np.inf], [3.0, 4.0, 5.0, 6.0]])
    s = summarize(method="deepg", matching="greedy", dice=dice, hd95=hd,
                  nll=np.array([2.0, np.nan]), seconds=np.array([1.0, 3.0]))
    json.dumps(s, allow_nan=False)
    assert s["n_slices"] == 2 and s["nll"] == 2.0 and s["seconds_per_slice"] == 2.0
    assert s["dice"]["edema"] == pytest.approx(0.1) and s["hd95"]["scar"] == 6.0
    table = format_dice_table(s)
    lines = table.splitlines()
    assert lines[1].split() == ["blood", "0.800", "0.141", "2.00"]
    assert lines[3].split() == ["edema", "0.100", "-", "5.00"]
    assert "2 slices" in lines[-1] and "greedy" in lines[-1]
    full = format_summary(s).splitlines()
    assert full[:-1] == lines and full[-1] == "nll 2.0000, 2.000 s per slice"
    assert format_summary({**s, "nll": None}).splitlines()[-1].startswith("nll -,")


def test_slice_rows_cells():
    rows = slice_rows(["7"], [3], dice=np.array([[np.nan, 1.0, 0.25, 0.0]]),
                      hd95=np.array([[np.nan, np.inf, 1.5, 0.0]]),
                      extra={"nll": [np.float64(1.25)], "iterations": [4]})
    r = rows[0]
    assert (r["case"], r["slice"]) == ("7", "3")
    assert (r["dice_blood"], r["dice_edema"], r["hd95_myocardium"]) == ("nan", "0.25", "inf")
    assert (r["nll"], r["iterations"]) == ("1.25", "4")
    empty = slice_rows(["7"], [3], dice=None, hd95=None)[0]
    assert empty["dice_scar"] == "" and empty["hd95_blood"] == ""
