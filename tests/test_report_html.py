"""report.html: what it says, and how it looks in a real (headless) browser."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from browser import Browser, find_chromium
from preview_fixtures import FakeRenderer, make_preview_run
from train_fixtures import make_run

from kohyagen.report.preview import PreviewOptions, render_preview
from kohyagen.report.summary import write_report


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")


def previewed_run(tmp_path: Path) -> Path:
    run = make_preview_run(tmp_path)
    fake = FakeRenderer()
    options = PreviewOptions(checkpoints="all", weights=(0.5, 1.0), seeds=2)
    render_preview(run, options, renderer=lambda _model: fake)
    write_report(run)
    return run


def test_report_html_sections_and_relative_images(tmp_path):
    run = previewed_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["html"] == str(run / "report.html")
    page = (run / "report.html").read_text()
    for heading in ("Loss", "Checkpoints", "Samples per epoch", "Preview grids", "Dataset",
                    "Settings that differ from kohya's defaults", "Time and cost"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page, heading
    assert 'id="pick"' in page and "<b>mylora.safetensors</b>" in page
    assert page.count('<tr class="picked">') == 1
    # samples with their prompt, every epoch
    for epoch in (1, 2, 3):
        assert f"<h3>epoch {epoch}</h3>" in page
    assert "<figcaption>sks, red circle, simple background, outdoors</figcaption>" in page
    # dataset: 3 images x 2 repeats; 64x64 and 96x64 buckets; top tags
    assert "3 images, 6 images x repeats" in page
    assert "<td>64x64</td>" in page and "<td>64x64</td><td class=\"n\">2</td>" in page
    assert "<td>red circle</td>" in page
    # kohya's default network_dim is None; this run's 4 is listed, its default sampler too
    assert re.search(r"<td>network_dim</td><td class=\"n\">4</td>", page)
    sources = _Sources()
    sources.feed(page)
    assert len(sources.images) == 6 + 5  # samples, one grid per prompt
    for src in sources.images:
        assert not src.startswith(("/", "file:")), src  # the folder can move
        assert (run / unquote(src)).is_file(), src
    # the chart: one polyline per series with points, checkpoints marked
    chart = re.search(r"<svg id=\"loss-chart\".*?</svg>", page, re.S).group(0)
    assert chart.count("<polyline") == 2 and chart.count('class="checkpoint"') == 3
    assert chart.count('stroke="#d62728"') == 1  # the picked checkpoint


def test_report_html_without_samples_or_preview(tmp_path):
    run = make_run(tmp_path, [0.3, 0.2])
    write_report(run)
    page = (run / "report.html").read_text()
    assert "No sample images" in page and "kohyagen preview" in page
    assert "<img" not in page


def _not_blank(png: bytes) -> bool:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    return image.size[0] > 500 and len(colours) > 50


@pytest.mark.slow
def test_report_html_in_a_headless_browser(tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (.ci/run does it)")
    run = previewed_run(tmp_path)
    with Browser(executable, tmp_path / "profile") as browser:
        page = browser.open((run / "report.html").resolve().as_uri())
        images = page.evaluate(
            "[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
        )
        chart = page.evaluate(
            "(() => { const s = document.querySelector('#loss-chart');"
            " const r = s.getBoundingClientRect();"
            " return {w: r.width, h: r.height, lengths: [...s.querySelectorAll('polyline')]"
            ".map(p => p.getTotalLength())}; })()"
        )
        grids = page.evaluate(
            "[...document.querySelectorAll('#preview img')].map(i => [i.naturalWidth,"
            " i.naturalHeight, i.getBoundingClientRect().width])"
        )
        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=True)["data"])  # fmt: skip
        errors = page.errors()
    (tmp_path / "report.png").write_bytes(shot)
    assert errors == []
    assert len(images) == 11 and all(done and width > 0 for _src, done, width in images), images
    assert chart["w"] > 400 and chart["h"] > 200 and all(n > 100 for n in chart["lengths"])
    assert len(grids) == 5 and all(w > 0 and h > 0 and shown > 300 for w, h, shown in grids)
    assert _not_blank(shot)
