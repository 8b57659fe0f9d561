"""Label-table sidecars and BIDS-style names: the files parse under their formats' rules
and describe every value of the maps they sit beside."""

from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest

from deepgmm.errors import InputError
from deepgmm.evaluate.recompute import evaluate_outputs
from deepgmm.report.labeltables import class_labels, cluster_labels, itksnap_text, slicer_ctbl
from deepgmm.report.outputs import write_segmentation

# ITK-SNAP label description file, as the header of the files ITK-SNAP exports defines it
# (Segmentation > Export Label Descriptions): lines starting with '#' are comments; every other
# non-blank line is IDX R G B A VIS MSH "LABEL" with IDX an unsigned short voxel value,
# R G B integers 0..255, A the opacity as a float 0..1, VIS and MSH 0 or 1, and the label
# text in double quotes (no quote inside).
ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9]*\.?[0-9]+)\s+([01])\s+'
                          r'([01])\s+"([^"]*)"\s*$')
# 3D Slicer colour table (slicer.readthedocs.io, Colors: "Color table file format"):
# header "# Color table file ...", then "index name R G B A", name without spaces,
# R G B A integers 0..255.
SLICER_LINE = re.compile(r"^(\d+) (\S+) (\d+) (\d+) (\d+) (\d+)$")
HEX = re.compile(r"^#[0-9a-f]{6}$")


def parse_itksnap(text: str) -> dict[int, tuple[tuple[int, int, int], float, int, int, str]]:
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = ITKSNAP_LINE.match(line)
        assert m, f"not an ITK-SNAP label line: {line!r}"
        idx, r, g, b = (int(v) for v in m.group(1, 2, 3, 4))
        alpha = float(m.group(5))
        assert 0 <= idx <= 65535 and all(0 <= c <= 255 for c in (r, g, b))
        assert 0.0 <= alpha <= 1.0
        assert idx not in entries
        entries[idx] = ((r, g, b), alpha, int(m.group(6)), int(m.group(7)), m.group(8))
    return entries


def parse_slicer(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    lines = text.splitlines()
    assert lines[0].startswith("# Color table file ")
    data = [ln for ln in lines if not ln.startswith("#")]
    assert re.fullmatch(r"# (\d+) values", lines[1]) and int(lines[1].split()[1]) == len(data)
    entries = {}
    for line in data:
        m = SLICER_LINE.match(line)
        assert m, f"not a Slicer colour table line: {line!r}"
        rgba = tuple(int(v) for v in m.group(3, 4, 5, 6))
        assert all(0 <= c <= 255 for c in rgba) and int(m.group(1)) not in entries
        entries[int(m.group(1))] = (m.group(2), rgba)
    return entries


def parse_dseg(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        assert reader.fieldnames == ["index", "name", "abbreviation", "color"]
        rows = list(reader)
    assert len({int(r["index"]) for r in rows}) == len(rows)
    assert all(HEX.match(r["color"]) for r in rows)
    return rows


def test_itksnap_and_slicer_tables_of_the_classes():
    """The MyoPS codes with their names and colours; background hidden / transparent."""
    itk = parse_itksnap(itksnap_text(class_labels()))
    assert sorted(itk) == [0, 200, 500, 1220, 2221]
    assert itk[500] == ((0xe4, 0x1a, 0x1c), 1.0, 1, 1, "blood (BP)")
    assert itk[2221][4] == "scar (SC)" and itk[0][1:4] == (0.0, 0, 0)
    slicer = parse_slicer(slicer_ctbl(cluster_labels(), "x.ctbl"))
    assert slicer[0] == ("background", (0, 0, 0, 0))
    assert slicer[3] == ("cluster_3", (0x75, 0x70, 0xb3, 255))
    assert sorted(slicer) == [0, 1, 2, 3, 4]


def test_parsers_refuse_broken_lines():
    """The format checks can fail: an unquoted label, an opacity above 1, a spaced name."""
    with pytest.raises(AssertionError):
        parse_itksnap("  1 255 0 0 1 1 1 blood\n")
    with pytest.raises(AssertionError):
        parse_itksnap('  1 255 0 0 2.5 1 1 "blood"\n')
    with pytest.raises(AssertionError):
        parse_slicer("# Color table file x\n# 1 values\n1 blood pool 1 2 3 255\n")


@pytest.fixture
def case(synth):
    volumes = synth.default_cases()
    batch = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS)
    result, _ = synth.shuffled_onehot_result(batch.labels, seed=4)
    return volumes, batch, result


@pytest.mark.parametrize("naming, seg, prob, seg_m, prob_m", [
    ("deepgmm", "_seg", "_prob", "_seg_matched", "_prob_matched"),
    ("bids", "_dseg", "_probseg", "_desc-matched_dseg", "_desc-matched_probseg")])
def test_every_map_has_sidecars_that_describe_its_values(tmp_path, case, naming, seg, prob,
                                                         seg_m, prob_m):
    volumes, batch, result = case
    out = tmp_path / "out"
    summary = write_segmentation(out, volumes, batch, result, matching="hungarian",
                                 figures=False, progress=False, naming=naming)
    assert summary["naming"] == naming
    assert set(summary["maps"]) == {f"<case>{s}.nii.gz" for s in (seg, prob, seg_m, prob_m)}
    top = parse_dseg(out / "dseg.tsv")
    assert [r["name"] for r in top] == ["background", "cluster 1", "cluster 2", "cluster 3",
                                        "cluster 4"]
    for v in volumes:
        for stem, channels in ((f"{v.case_id}{prob}", ["C1", "C2", "C3", "C4"]),
                               (f"{v.case_id}{prob_m}", ["BP", "MYO", "ED", "SC"])):
            n_vol = nib.load(str(out / f"{stem}.nii.gz")).shape[3]
            label_map = json.loads((out / f"{stem}.json").read_text())["LabelMap"]
            assert label_map == channels and len(label_map) == n_vol
        for stem in (f"{v.case_id}{seg}", f"{v.case_id}{seg_m}"):
            values = set(np.unique(np.asanyarray(nib.load(
                str(out / f"{stem}.nii.gz")).dataobj)).tolist())
            rows = parse_dseg(out / f"{stem}.tsv")
            itk = parse_itksnap((out / f"{stem}.itksnap.txt").read_text())
            slicer = parse_slicer((out / f"{stem}.ctbl").read_text())
            indices = {int(r["index"]) for r in rows}
            assert values <= indices and set(itk) == set(slicer) == indices
            for r in rows:  # one table in three formats: same names and colours
                rgb = tuple(int(r["color"][i:i + 2], 16) for i in (1, 3, 5))
                assert itk[int(r["index"])][0] == rgb == slicer[int(r["index"])][1][:3]
                assert slicer[int(r["index"])][0] == r["name"].replace(" ", "_")
    if naming == "bids":
        assert not list(out.glob("*_seg.nii.gz"))


def test_evaluate_reads_bids_named_folders(tmp_path, phantom_root, phantom_volumes,
                                           phantom_batch):
    """`evaluate` finds the maps under the names the summary records."""
    import torch

    from deepgmm.types import SegmentationResult

    truth = phantom_batch.labels
    onehot = torch.nn.functional.one_hot(truth.clamp(min=1) - 1, 4).permute(0, 3, 1, 2)
    n = len(phantom_batch)
    result = SegmentationResult(onehot.float(), torch.zeros(n), torch.ones(n, dtype=torch.int64),
                                torch.zeros(n), torch.zeros(n, 4, 3), "oracle")
    out = tmp_path / "out"
    write_segmentation(out, phantom_volumes, phantom_batch, result, matching="none",
                       figures=False, progress=False, class_identity=True, naming="bids")
    summary = evaluate_outputs(out, phantom_root, write=False)
    assert summary["dice"] == {"blood": 1.0, "myocardium": 1.0, "edema": 1.0, "scar": 1.0}


def test_unknown_naming_is_refused(tmp_path, case):
    volumes, batch, result = case
    with pytest.raises(InputError, match="--naming must be one of deepgmm, bids"):
        write_segmentation(tmp_path / "o", volumes, batch, result, naming="nnunet",
                           progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_naming_bids(tmp_path, phantom_root):
    from typer.testing import CliRunner

    from deepgmm.cli import app

    out = tmp_path / "em"
    res = CliRunner().invoke(app, ["em", str(phantom_root), "--out", str(out), "--patients",
                                   "101", "--no-figures", "--no-progress", "--device", "cpu",
                                   "--naming", "bids"])
    assert res.exit_code == 0, res.output
    assert (out / "101_dseg.nii.gz").is_file() and (out / "101_probseg.json").is_file()
    assert (out / "101_desc-matched_dseg.itksnap.txt").is_file()
    res = CliRunner().invoke(app, ["em", str(phantom_root), "--out", str(tmp_path / "x"),
                                   "--naming", "nnunet"])
    assert res.exit_code == 2 and "error: --naming must be one of" in res.output
    assert not (tmp_path / "x").exists()
