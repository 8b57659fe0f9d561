"""report.html: rendered in headless Chromium (a real browser) without console errors,
every image decoded and not blank; rebuilt by `deepgmm report OUT`."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.report.figures import entropy_map

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package "
                                   "(.ci/run installs it)")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]


def _browser(page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *BROWSER_FLAGS, *extra, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


def console_errors(stderr: str) -> list[str]:
    """Chromium's log lines of page console messages at error level and uncaught errors."""
    return [ln for ln in stderr.splitlines()
            if "CONSOLE" in ln and ("ERROR" in ln.split("CONSOLE")[0] or "Uncaught" in ln)]


def _png_pixels(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")


def test_entropy_map_bounds():
    probs = np.zeros((2, 4, 1, 1))
    probs[0, :, 0, 0] = 0.25
    probs[1, 2, 0, 0] = 1.0
    np.testing.assert_allclose(entropy_map(probs)[:, 0, 0], [np.log(4), 0.0], atol=1e-6)


@pytest.fixture(scope="module")
def em_output(tmp_path_factory, phantom_root):
    out = tmp_path_factory.mktemp("html") / "em"
    res = CliRunner().invoke(app, ["em", str(phantom_root), "--out", str(out), "--model",
                                   "em-svgmm", "--patients", "101", "--no-progress",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return out


def test_report_lists_every_section_and_embeds_the_panels(em_output):
    html = (em_output / "report.html").read_text()
    for section in ("summary", "clinical", "dice", "slices", "provenance"):
        assert f'id="{section}"' in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 1 + 3  # the Dice chart and one panel per slice
    for data in images:
        pixels = _png_pixels(base64.b64decode(data))
        assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not blank
    assert str(em_output) in html and ".tmp" not in html  # the final folder name


@needs_browser
def test_report_renders_in_headless_chromium(em_output, tmp_path):
    page = em_output / "report.html"
    shot = tmp_path / "report.png"
    res = _browser(page, "--window-size=1300,2400", f"--screenshot={shot}")
    assert console_errors(res.stderr) == []
    pixels = _png_pixels(shot.read_bytes())[..., :3]
    assert pixels.shape[:2] == (2400, 1300)
    assert pixels.std() > 0.1 and (pixels < 0.2).mean() > 0.02  # text and dark panels drawn
    dom = _browser(page, "--dump-dom").stdout
    body = re.search(r'<body data-images="(\d+)" data-images-loaded="(\d+)"', dom)
    assert body and body.group(1) == body.group(2) == "4"  # every image decoded


@needs_browser
def test_console_error_check_can_fail(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert console_errors(_browser(page, "--dump-dom").stderr)


def test_report_command_rebuilds_the_page(em_output):
    page = em_output / "report.html"
    before = page.read_text()
    page.unlink()
    res = CliRunner().invoke(app, ["report", str(em_output)])
    assert res.exit_code == 0, res.output
    assert page.read_text() == before
    res = CliRunner().invoke(app, ["report", str(em_output / "figures")])
    assert res.exit_code == 2 and "is not a deepgmm output or run folder" in res.output
    assert not (em_output / "figures" / "report.html").exists()
    assert not list(em_output.glob(".*tmp*"))
