"""`shrink report` in a real browser: headless Chromium loads the page offline, every plot draws, no JS error.

No browser-driver dependency: Chromium's own flags do the work. ``--dump-dom`` with a virtual-time budget
prints the DOM once the page has loaded and its timers ran; a copy of the report gets a small probe script as
the first thing in its <head> that records uncaught errors, rejected promises and ``console.error`` calls, and
after load writes onto <html> what the test checks: the errors, for each Plotly div its number of
``svg.main-svg``, of drawn traces and its legend's entries as drawn, the sections' boxes and the page height.
Chromium's stderr log (``--enable-logging=stderr``) is searched for "Uncaught" as a second witness.
``--screenshot`` then keeps a PNG of the page (and one per section) under the test's tmp dir.

Run by hand on any report: ``python tests/test_report_browser.py REPORT.html OUT_DIR`` writes
``OUT_DIR/page.png`` and one PNG per section.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
WIDTH = 1280

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) { errors.push("error: " + e.message); });
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + e.reason); });
  var consoleError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    setTimeout(function () {
      var root = document.documentElement, plots = {}, sections = {};
      document.querySelectorAll(".plotly-graph-div").forEach(function (div) {
        plots[div.id] = {
          svgs: div.querySelectorAll("svg.main-svg").length,
          traces: div.querySelectorAll(".scatterlayer .trace, .barlayer .trace").length,
          legend: Array.prototype.map.call(div.querySelectorAll(".legendtext"), function (t) {
            return t.textContent;
          })
        };
      });
      document.querySelectorAll("h2[id]").forEach(function (h) {
        var box = h.parentElement.getBoundingClientRect();
        sections[h.id] = [Math.round(box.top + window.scrollY), Math.round(box.height)];
      });
      root.setAttribute("data-probe-errors", JSON.stringify(errors));
      root.setAttribute("data-probe-plots", JSON.stringify(plots));
      root.setAttribute("data-probe-sections", JSON.stringify(sections));
      root.setAttribute("data-probe-height", String(root.scrollHeight));
    }, 1000);
  });
})();
</script>"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    """The browser, or a skip (a failure in CI, where ``make test`` installs Debian's chromium)."""
    found = find_chromium()
    if found is None:
        message = "no chromium on PATH: `make chromium` installs Debian's chromium (root + apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def instrumented_copy(report: Path, target: Path) -> Path:
    """The report with the probe script first in its <head> (nothing else changes)."""
    text = report.read_text()
    assert "<head>" in text
    target.write_text(text.replace("<head>", "<head>\n" + PROBE, 1))
    return target


def run_chromium(
    browser: str, profile: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    command = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _attribute(dom: str, name: str):
    match = re.search(rf'{name}="([^"]*)"', dom)
    assert match, f"the probe did not report {name} (page never finished loading?)"
    return json.loads(unescape(match.group(1)))  # Chromium escapes <, > and & too (names may hold them)


def load_page(browser: str, page: Path, profile: Path) -> dict:
    """Load ``page`` headless; returns the probe's findings plus Chromium's "Uncaught" log lines."""
    done = run_chromium(
        browser,
        profile,
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        f"--window-size={WIDTH},1000",
        "--dump-dom",
        page.resolve().as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        "dom": done.stdout,
        "errors": _attribute(done.stdout, "data-probe-errors"),
        "plots": _attribute(done.stdout, "data-probe-plots"),
        "sections": _attribute(done.stdout, "data-probe-sections"),
        "height": _attribute(done.stdout, "data-probe-height"),
        "uncaught": [line for line in done.stderr.splitlines() if "Uncaught" in line],
    }


def screenshot(browser: str, page: Path, profile: Path, out: Path, height: int) -> Path:
    done = run_chromium(
        browser,
        profile,
        "--virtual-time-budget=15000",
        f"--window-size={WIDTH},{height}",
        f"--screenshot={out}",
        page.resolve().as_uri(),
    )
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return out


def section_shots(full_page: Path, sections: dict, out_dir: Path) -> list[Path]:
    """One PNG per section, cut out of the full-page screenshot by the boxes the probe measured."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with Image.open(full_page) as image:
        for key, (top, height) in sections.items():
            box = (0, max(top - 8, 0), image.width, min(top + height + 8, image.height))
            paths.append(out_dir / f"{key}.png")
            image.crop(box).save(paths[-1])
    return paths


def shoot_report(report: Path, out_dir: Path, browser: str | None = None) -> tuple[dict, list[Path]]:
    """Load, check-ready findings and screenshots (page.png + one per section) of a report in ``out_dir``."""
    browser = browser or find_chromium()
    assert browser, "no chromium on PATH"
    out_dir.mkdir(parents=True, exist_ok=True)
    page = instrumented_copy(report, out_dir / "instrumented.html")
    found = load_page(browser, page, out_dir / "profile-load")
    full = screenshot(
        browser, page, out_dir / "profile-shot", out_dir / "page.png", int(found["height"]) + 40
    )
    return found, [full, *section_shots(full, found["sections"], out_dir)]


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def browser_report(tmp_path_factory) -> Path:
    """A report of the toy study helpers.py builds (once per session), with bundles and --data, and beside
    ours a bundle's curve as CompressAI's JSON (``--curves``) and CompressAI's published Kodak curves."""
    from shrink.search.cli import main

    from .helpers import QUALITIES, export_front, shared_toy_study

    url, images = shared_toy_study(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("browser-report")
    bundles = export_front(url, tmp / "bundles")
    first = sorted(path for path in bundles.iterdir() if path.is_dir())[0]
    theirs = tmp / "first-bundle.compressai.json"
    evaluation = ["eval", str(first), "--data", str(images), "--qualities", "20", "80", "--name", "first"]
    assert main([*evaluation, "--json", str(tmp / "first.json"), "--compressai-json", str(theirs)]) == 0
    out = tmp / "report.html"
    argv = ["report", "--storage", url, "--study-name", "toy", "--out", str(out), "--bundles", str(bundles)]
    extra = ["--curves", str(theirs), "--reference", "compressai-kodak"]
    assert main([*argv, "--data", str(images), *QUALITIES, *extra]) == 0
    return out


def extra_curve_names() -> list[str]:
    """Legend names of the browser report's curves from elsewhere: its --curves file, then the references."""
    from shrink.dashboards.references import reference_curves

    return ["first (first-bundle.compressai.json)", *reference_curves("compressai-kodak")]


@pytest.mark.slow
def test_report_loads_offline_in_chromium_with_every_plot_drawn_and_no_js_error(browser_report, tmp_path):
    from shrink.dashboards.report import SECTIONS

    browser = chromium_or_skip()
    found, shots = shoot_report(browser_report, tmp_path / "shots", browser)
    assert found["errors"] == [] and found["uncaught"] == []
    expected = re.findall(r'<div id="(plot-[^"]+)" class="plotly-graph-div"', browser_report.read_text())
    assert len(expected) >= 8 and sorted(found["plots"]) == sorted(expected)
    for div, drawn in found["plots"].items():
        assert drawn["svgs"] >= 1 and drawn["traces"] >= 1, (div, drawn)
    rd_plots = [div for div in found["plots"] if div.startswith(("plot-rd-", "plot-data-"))]
    assert len(rd_plots) == 5
    for div in rd_plots:  # the curves from elsewhere are drawn, named in the legend as the browser shows it
        legend = found["plots"][div]["legend"]
        assert set(extra_curve_names()) <= set(legend) and len(extra_curve_names()) == 9, (div, legend)
    assert list(found["sections"]) == list(SECTIONS)
    assert all(height > 0 for _, height in found["sections"].values())
    for shot in shots:
        assert shot.stat().st_size > 2000, shot  # a real picture, not an empty PNG
    from PIL import Image

    with Image.open(shots[0]) as page:
        assert page.width == 1280 and page.height > 2000
        assert len(np.unique(np.asarray(page.convert("L").resize((64, 256))))) > 20  # drawn, not blank


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """A report of an in-memory study (nothing trained) whose study name, parameters and prune reason carry
    markup, beside a ``--curves`` file whose curve names carry HTML and Plotly label markup."""
    from shrink.dashboards.report import ReportOptions, write_report

    from .test_untrusted_text import hostile_curves_file, hostile_study

    tmp = tmp_path_factory.mktemp("hostile-report")
    options = ReportOptions(curves=[hostile_curves_file(tmp / "hostile.json")])
    return write_report(hostile_study(), tmp / "report.html", options, log=lambda _: None)


class Elements(HTMLParser):
    """Every element of a page as (tag, attributes); a script's text is no element."""

    def __init__(self, page: str):
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {key: value or "" for key, value in attrs}))


def test_markup_in_names_is_drawn_as_text_never_as_links_or_styles(hostile_report, tmp_path):
    """Plotly draws ``<a href>`` in a label as a live link and ``<b style>`` as styled text: neither may
    come out of a name, which shows as written in the legend."""
    from .test_untrusted_text import MARKUP_NAMES

    browser = chromium_or_skip()
    found = load_page(
        browser, instrumented_copy(hostile_report, tmp_path / "page.html"), tmp_path / "profile"
    )
    assert found["errors"] == [] and found["uncaught"] == []
    elements = Elements(found["dom"]).found
    assert [
        attrs
        for _, attrs in elements
        if "evil.example" in attrs.get("href", "") + attrs.get("xlink:href", "")
    ] == []
    assert [attrs for _, attrs in elements if "200px" in attrs.get("style", "")] == []
    rd_plots = [div for div in found["plots"] if div.startswith("plot-rd-")]
    assert len(rd_plots) == 3
    for div in rd_plots:
        legend = found["plots"][div]["legend"]
        assert {f"{name} (hostile.json)" for name in MARKUP_NAMES} <= set(legend), (div, legend)


def test_the_probe_catches_errors_and_undrawn_plots(tmp_path):
    """Negative control: a page with a JS error, a console.error and a plot div nobody draws."""
    browser = chromium_or_skip()
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><head></head><body><div id="plot-x" class="plotly-graph-div"></div>'
        '<h2 id="only">only</h2><script>console.error("bad thing"); undefinedFunction();</script>'
        "</body></html>"
    )
    found = load_page(browser, instrumented_copy(broken, tmp_path / "probe.html"), tmp_path / "profile")
    assert any("bad thing" in e for e in found["errors"])
    assert any("undefinedFunction" in e for e in found["errors"])
    assert any("undefinedFunction" in line for line in found["uncaught"])
    assert found["plots"] == {"plot-x": {"svgs": 0, "traces": 0, "legend": []}}


if __name__ == "__main__":  # pragma: no cover - by hand: python tests/test_report_browser.py REPORT OUT_DIR
    findings, written = shoot_report(Path(sys.argv[1]), Path(sys.argv[2]))
    print(
        json.dumps({k: findings[k] for k in ("errors", "uncaught", "plots", "sections", "height")}, indent=1)
    )
    print("\n".join(map(str, written)))
