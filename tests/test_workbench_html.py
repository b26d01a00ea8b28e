"""The HTML reports of ``config stats``, ``config diff`` and ``coverage`` rendered in a real
browser (Debian's headless Chromium): every chart drew, nothing was logged to the console, the
screenshot shows the charts' colours, the page fetches nothing, and hostile event values stay
text.

Skips with the reason when no Chromium is installed (``apt-get install chromium``; .ci/run
installs it). ``SYSMONX_SCREENSHOTS=DIR`` keeps the screenshots in DIR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sysmonx.cli import main
from sysmonx.config import parse_config
from sysmonx.event import Event
from sysmonx.workbench.common import techniques_in
from sysmonx.workbench.html import embed_json, render_report
from sysmonx.workbench.stats import ConfigStats, report_sections

SWIFT = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"
SIGMA = "sigma/sigmahq_rules_sysmon_categories.tar.gz"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]

needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium to render the report (Debian: apt-get install "
                             "chromium; .ci/run installs it)")


def _chromium(page: Path, tmp: Path, *extra: str) -> tuple[str, str]:
    """Run headless Chromium on ``page``; returns (stdout, console lines from stderr)."""
    assert CHROMIUM is not None
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return proc.stdout, "\n".join(console)


def render(page: Path, tmp: Path, name: str) -> tuple[str, Path]:
    """The DOM after the scripts ran, and a full-page screenshot (PNG)."""
    dom, console = _chromium(page, tmp, "--dump-dom")
    assert console == "", console  # no script error, no CSP violation, no log line
    png = tmp / f"{name}.png"
    _, console = _chromium(page, tmp, "--window-size=1280,2000", f"--screenshot={png}")
    assert console == "", console
    keep = os.environ.get("SYSMONX_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
    return dom, png


def _colours(png: Path) -> set:
    from PIL import Image
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1280, 2000)
        return {c for _, c in rgb.getcolors(maxcolors=1 << 24)}


def _body(dom: str) -> dict:
    m = re.search(r"<body([^>]*)>", dom)
    assert m
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


@needs_browser
def test_stats_report_draws(corpus, tmp_path):
    page = tmp_path / "stats.html"
    out = tmp_path / "s.json"
    assert main(["config", "stats", str(corpus / MODULAR), str(corpus / "evtx"), "-f", "json",
                 "-o", str(out), "--html", str(page), "--top", "10"]) == 0
    d = json.loads(out.read_text())
    dom, png = render(page, tmp_path, "config-stats")
    body = _body(dom)
    assert body.get("data-rendered") == "8" and "data-errors" not in body
    # one kept and one dropped bar for every non-zero count of the 22 EventIDs
    first = dom.split("<section")[1]
    bars = sum((c["included"] > 0) + (c["excluded"] > 0) for c in d["events"].values())
    assert first.count('class="bar"') == bars == 36
    # heat map: the techniques of the RuleNames that kept events
    named = {t for f in d["filters"] if f["onmatch"] == "include" and f["decided"]
             for t in techniques_in(f["rule_name"])}
    assert dom.count('class="cell"') == len(named) > 20
    colours = _colours(png)
    assert len(colours) > 50
    assert (0x2E, 0x7D, 0x32) in colours and (0xC6, 0x28, 0x28) in colours  # kept, dropped


@needs_browser
def test_diff_report_draws(corpus, tmp_path):
    page = tmp_path / "diff.html"
    assert main(["config", "diff", str(corpus / SWIFT), str(corpus / MODULAR),
                 str(corpus / "evtx"), "-o", str(tmp_path / "d.txt"), "--html", str(page)]) == 0
    dom, png = render(page, tmp_path, "config-diff")
    body = _body(dom)
    assert body.get("data-rendered") == "6" and "data-errors" not in body
    colours = _colours(png)
    assert (0x15, 0x65, 0xC0) in colours and (0xEF, 0x6C, 0x00) in colours  # only A, only B


@needs_browser
def test_coverage_report_draws(corpus, tmp_path):
    page = tmp_path / "coverage.html"
    assert main(["coverage", "-c", str(corpus / MODULAR), "--rules", str(corpus / SIGMA),
                 "--logs", str(corpus / "evtx"), "-o", str(tmp_path / "c.txt"),
                 "--html", str(page)]) == 0
    dom, png = render(page, tmp_path, "coverage")
    body = _body(dom)
    assert body.get("data-rendered") == "4" and "data-errors" not in body
    assert dom.count('class="cell"') == 312  # one heat-map cell per technique
    assert len(_colours(png)) > 50


@needs_browser
def test_a_broken_report_is_caught(tmp_path):
    """The checks can fail: a section the script does not know is an error on the page and
    in the console."""
    page = tmp_path / "broken.html"
    page.write_text(render_report("t", "s", [{"kind": "nope", "title": "x"}]))
    dom, console = _chromium(page, tmp_path, "--dump-dom")
    assert "unknown section kind nope" in console
    assert "unknown section kind nope" in _body(dom).get("data-errors", "")


HOSTILE = "</script><script>document.body.setAttribute('data-pwned','1')</script><img src=x>"


@needs_browser
def test_hostile_values_stay_text(tmp_path):
    cfg = parse_config("""<Sysmon schemaversion="4.90"><EventFiltering>
      <ProcessCreate onmatch="include"><Image condition="contains" name="T1059">x</Image>
      </ProcessCreate></EventFiltering></Sysmon>""")
    stats = ConfigStats(cfg)
    for _ in range(3):
        stats.observe(Event(1, {"Image": "C:\\x\\" + HOSTILE, "CommandLine": "a"}))
    d = stats.to_dict()
    page = tmp_path / "hostile.html"
    page.write_text(render_report("hostile " + HOSTILE, HOSTILE, report_sections(d)))
    assert "</script><script>" not in page.read_text().split('id="report-data">', 1)[1]
    dom, _ = render(page, tmp_path, "hostile")
    body = _body(dom)
    assert "data-pwned" not in body and "data-errors" not in body
    assert body.get("data-rendered") == "8"
    assert "&lt;/script&gt;&lt;script&gt;" in dom  # shown as text


def test_embedded_json_cannot_close_the_script():
    text = embed_json({"v": "</script>\u2028&<!--"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text


def test_report_fetches_nothing():
    html = render_report("t", "s", [])
    assert "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
