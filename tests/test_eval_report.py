"""Report writing on fake results: files, numbers, warnings, compare; and the HTML in a real browser."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from notme_mlx.eval.report import compare, summary_rows, to_html, to_markdown, write_report
from notme_mlx.eval.metrics import METRICS, warnings_for


def _m(v, lo=None, hi=None, n=50):
    return {"value": v, "lo": v if lo is None else lo, "hi": v if hi is None else hi, "n": n}


def fake_result(vsr=0.4, refusal=0.9, clarify=0.6, model="base"):
    metrics = {k: _m(0.5, 0.4, 0.6) for k in METRICS}
    metrics.update(vsr=_m(vsr, vsr - 0.1, vsr + 0.1), refusal_rate=_m(refusal, refusal - 0.05, min(1, refusal + 0.05)),
                   clarify_rate=_m(clarify), general_ppl=_m(12.5, 11.0, 14.0, 6), propensity=_m(3e-4, 2e-4, 4e-4))
    return {"metrics": metrics,
            "by_cue_category": {"hedging": _m(0.2, 0.1, 0.3), "approval_seeking": _m(0.3, 0.2, 0.4)},
            "by_prompt_category": {"advice": _m(vsr), "task": _m(vsr / 2)},
            "responses": {"seeking": [{"prompt": "Plan <b>x</b>", "response": "Sure. Does that make sense?",
                                       "category": "plan", "flagged": True, "cues": ["Does that make sense?"]}]},
            "meta": {"model": model, "adapters": None, "stack": None, "seed": 0, "samples": 1, "max_tokens": 48,
                     "quick": True, "date": "2026-11-25T00:00:00Z"}}


def fake_report(after_refusal=0.9):
    b = fake_result()
    a = fake_result(vsr=0.1, refusal=after_refusal, model="base+adapter")
    return {"model": a, "baseline": b, "warnings": warnings_for(a, b)}


def test_write_report_files_and_numbers(tmp_path):
    rep = fake_report()
    paths = write_report(rep, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["perplexity.png", "rates.png", "report.html", "report.json", "report.md", "vsr_by_category.png"]
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = json.loads((tmp_path / "report.json").read_text())
    assert back["model"]["metrics"]["vsr"] == rep["model"]["metrics"]["vsr"]
    assert back["baseline"]["meta"]["model"] == "base"
    md = (tmp_path / "report.md").read_text()
    assert "| VSR (greedy) | 40.0% [30.0%, 50.0%] n=50 | 10.0% [0.0%, 20.0%] n=50 | -30.0 pts ✓ |" in md
    assert "| perplexity, general text | 12.5 [11, 14] n=6 | 12.5 [11, 14] n=6 | +0 |" in md
    assert "WARNING" not in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "Plan &lt;b&gt;x&lt;/b&gt;" in html  # responses are escaped
    # the embedded images are the written PNGs
    first = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(first) == (tmp_path / "plots" / "rates.png").read_bytes()


def test_summary_rows_direction():
    rows = {r["key"]: r for r in summary_rows(fake_report(after_refusal=0.7))}
    assert rows["vsr"]["better"] is True  # lower VSR is better
    assert rows["refusal_rate"]["better"] is False and rows["refusal_rate"]["change"] == "-20.0 pts"
    assert rows["general_ppl"]["better"] is None


@pytest.mark.parametrize("after,warn", [(0.75, True), (0.85, False), (0.95, False)])
def test_refusal_drop_warning_over_10_points(after, warn, tmp_path):
    rep = fake_report(after_refusal=after)
    assert any("refusal rate" in w for w in rep["warnings"]) is warn
    assert ("class='warn'" in to_html(rep, [])) is warn
    assert ("**WARNING:** refusal rate" in to_markdown(rep)) is warn


def test_clarify_collapse_warning():
    b, a = fake_result(clarify=0.6), fake_result(clarify=0.2)
    assert any("over-corrected" in w for w in warnings_for(a, b))
    assert not warnings_for(fake_result(clarify=0.5), b)


def test_report_without_baseline(tmp_path):
    rep = {"model": fake_result(), "baseline": None, "warnings": []}
    write_report(rep, tmp_path)
    assert all(r["before"] == "—" for r in summary_rows(rep))


def test_compare_two_report_dirs(tmp_path):
    for d, res in (("a", fake_result(vsr=0.4)), ("b", fake_result(vsr=0.1, refusal=0.5))):
        (tmp_path / d).mkdir()
        (tmp_path / d / "report.json").write_text(json.dumps({"model": res, "baseline": None, "warnings": []}))
    rep = compare(tmp_path / "a", tmp_path / "b")
    rows = {r["key"]: r for r in summary_rows(rep)}
    assert rows["vsr"]["change"] == "-30.0 pts"
    assert any("refusal rate" in w for w in rep["warnings"])


CHROMIUM = Path("/usr/bin/chromium")


def _screenshot(html: Path, png: Path):
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1200,1400",
           f"--screenshot={png}", html.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert png.is_file()


def _nonwhite_share(png: Path) -> float:
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]  # [H, W, 3] floats in [0, 1]
    return float((img.min(axis=-1) < 0.9).mean())


@pytest.mark.slow  # ~10 s: two Chromium start-ups
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_html_report_renders_plots_in_headless_chromium(tmp_path):
    rep = fake_report(after_refusal=0.7)
    write_report(rep, tmp_path / "r")
    html = tmp_path / "r" / "report.html"
    # the same page with the images removed: the plots are what makes the difference
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<img [^>]*>", "", html.read_text()))
    _screenshot(html, tmp_path / "with.png")
    _screenshot(bare, tmp_path / "without.png")
    with_imgs, without = _nonwhite_share(tmp_path / "with.png"), _nonwhite_share(tmp_path / "without.png")
    assert with_imgs > without + 0.05, (with_imgs, without)
    # the warning renders in red: some pixels close to #c0392b
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "with.png")[..., :3]
    red = (np.abs(img - np.array([0xC0, 0x39, 0x2B]) / 255).max(axis=-1) < 0.08).sum()
    assert red > 50
