"""report.html in a real browser: headless Chromium renders the page and decodes every image.

Slow tier (``make test-slow``); skipped when Debian's Chromium is not installed. Install it
with ``apt-get install -y chromium`` (about 150 MB; ``apt-get update`` first on a fresh
machine). Chromium runs offline with its own profile, home and caches under ``tmp_path``, and
its whole process group is killed when the test ends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _report_data import candidate, grid, pick
from embedstack.eval.report import render_pick

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic",
)  # fmt: skip
SCRIPT_NAME = "<script>alert(1)</script>"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]

Browser = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture()
def chromium(tmp_path: Path) -> Iterator[Browser]:
    """Run Chromium with the given extra flags; everything it writes stays in ``tmp_path``."""
    started: list[subprocess.Popen[bytes]] = []
    home = tmp_path / "home"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }

    def run(*flags: str) -> subprocess.CompletedProcess[bytes]:
        profile = tmp_path / f"profile{len(started)}"
        argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *flags]
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        started.append(proc)
        out, err = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    yield run
    for proc in started:  # the browser's helpers (zygote, renderers) share its group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture()
def report_html(tmp_path: Path) -> Path:
    data = pick([*grid(), candidate(SCRIPT_NAME, 384, "float32", "dense", 0.5, 40.0)])
    render_pick(data, tmp_path / "report")
    return tmp_path / "report" / "report.html"


def test_chromium_renders_the_report_with_its_images(chromium: Browser, report_html: Path) -> None:
    page = report_html.read_text(encoding="utf-8")
    expected = int(re.search(r'data-images-expected="(\d+)"', page).group(1))  # type: ignore[union-attr]
    assert expected == 5
    done = chromium("--virtual-time-budget=5000", "--dump-dom", report_html.as_uri())
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    dom = done.stdout.decode("utf-8")
    # the page's own script counts the images that painted real pixels on a canvas
    assert f'data-images-loaded="{expected}"' in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # shown as text, never run
    assert dom.count("<script>") == 1


def test_chromium_screenshot_is_not_blank(chromium: Browser, report_html: Path) -> None:
    from matplotlib.image import imread

    shot = report_html.parent / "shot.png"
    done = chromium("--virtual-time-budget=5000", "--window-size=1200,1600",
                    f"--screenshot={shot}", report_html.as_uri())  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    # text, tables and figures: many distinct grey levels, not a blank or error page
    levels = {round(float(v), 2) for v in pixels.mean(axis=2)[::8, ::8].ravel()}
    assert len(levels) > 20
