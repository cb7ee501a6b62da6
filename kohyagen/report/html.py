"""report.html: one static page about a run that opens from file:// and offline.

No script and no framework: the loss chart is inline SVG, the styles are inline, and
every image is referenced by a path relative to the run folder, so the folder can be
copied anywhere (or zipped and mailed) with the page still whole. Sections: the run,
the recommendation, the loss chart, the checkpoints, samples per epoch, the preview
grids, the dataset, the settings that differ from kohya's defaults, time and cost.
"""

from __future__ import annotations

import json
import os
import re
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kohyagen.atomic import write_text_atomic
from kohyagen.errors import KohyagenError
from kohyagen.report.html_chart import loss_svg
from kohyagen.report.html_data import changed_settings, dataset_facts

if TYPE_CHECKING:
    from kohyagen.report.run_data import RunData

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;
color:#222}
h1{font-size:24px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left}td.n{text-align:right}tr.picked{background:#fdecea;font-weight:600}
.pick{background:#f3f8ee;border-left:4px solid #31a354;padding:8px 12px}
.flag{color:#b35900}.samples{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0}.samples figure{width:150px}figure img{max-width:100%}
figcaption{font-size:12px;color:#555}.grid{margin:12px 0}.grid img{border:1px solid #ddd}
.tick,.legend{font-size:11px;fill:#444}code{background:#f4f4f4;padding:0 3px}
"""
_SAMPLE_INDEX = re.compile(r"_(?:e\d{6}|\d{6})_(\d{2})_")


def _src(path: Path, base: Path) -> str:
    """A relative, URL-quoted reference, so the page works wherever the folder goes."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return Path(path).resolve().as_uri()
    return quote(rel.replace(os.sep, "/"))


def _table(head: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(
            f'<td class="n">{escape(_fmt(c))}</td>' if isinstance(c, (int, float))
            else f"<td>{escape(_fmt(c))}</td>" for c in row
        )  # fmt: skip
        out.append(f"<tr{cls}>{cells}</tr>")
    return "\n".join(out) + "</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _summary_section(s: dict) -> list[str]:
    ended = s.get("ended_by")
    why = f" (ended by {ended})" if ended and ended != s["status"] else ""
    rows: list[list[Any]] = [
        ["status", f"{s['status']}{why}"],
        ["steps", f"{s['steps']['done']} / {s['steps']['total'] or '?'}"],
        ["epochs", f"{s['epochs']['done']} / {s['epochs']['total'] or '?'}"],
        ["final loss (running average)", s.get("final_loss")],
    ]
    out = [f"<h1>LoRA {escape(s['output_name'])}</h1>", _table(["", ""], rows)]
    if s.get("failure"):
        f = s["failure"]
        out.append(f'<p class="flag">cause: {escape(str(f.get("cause")))}; '
                   f"fix: {escape(str(f.get('fix')))}</p>")  # fmt: skip
    rec = s.get("recommended")
    if rec:
        flags = "".join(f'<br><span class="flag">warning: {escape(f.replace("-", " "))}</span>'
                        for f in rec.get("flags") or [])  # fmt: skip
        out.append(f'<p class="pick" id="pick">Use <b>{escape(rec["file"])}</b> (epoch '
                   f"{escape(_fmt(rec.get('epoch')))}): {escape(rec['reason'])}.{flags}</p>")  # fmt: skip
    return out


def _checkpoint_section(s: dict, run: RunData) -> list[str]:
    if not s["checkpoints"]:
        return []
    picked = (s.get("recommended") or {}).get("file")
    rows, classes = [], []
    for cp in s["checkpoints"]:
        e = cp["epoch"]
        rows.append([cp["file"] + (" (picked)" if cp["file"] == picked else ""), e, cp["step"],
                     run.train_loss_epoch.get(e), run.val_loss_epoch.get(e),
                     f"{cp['bytes'] / 2**20:.1f} MiB"])  # fmt: skip
        classes.append("picked" if cp["file"] == picked else "")
    head = ["checkpoint", "epoch", "step", "training loss", "validation loss", "size"]
    return ["<h2>Checkpoints</h2>", _table(head, rows, classes)]


def _prompt_texts(run: RunData) -> dict[int, str]:
    from kohyagen.config.sample_prompts import read_prompts

    path = run.training.get("sample_prompts")
    try:
        return {p.index: p.prompt for p in read_prompts(path)} if path else {}
    except KohyagenError:
        return {}


def _samples_section(s: dict, run: RunData) -> list[str]:
    if not s.get("samples"):
        return ["<h2>Samples per epoch</h2>",
                "<p>No sample images: the run had no <code>sample_prompts</code>.</p>"]  # fmt: skip
    prompts = _prompt_texts(run)
    out = ["<h2>Samples per epoch</h2>", '<div id="samples">']
    for key, paths in s["samples"].items():
        out.append(f"<h3>{escape(key)}</h3><div class=\"samples\">")
        for p in paths:
            match = _SAMPLE_INDEX.search(Path(p).name)
            text = prompts.get(int(match.group(1)), "") if match else ""
            out.append(f'<figure><img src="{_src(Path(p), run.run_dir)}" alt="{escape(text)}" '
                       f'width="128" height="128" loading="eager">'
                       f"<figcaption>{escape(text)}</figcaption></figure>")  # fmt: skip
        out.append("</div>")
    return [*out, "</div>"]


def _preview_section(run: RunData) -> list[str]:
    index = run.run_dir / "preview" / "preview.json"
    head = "<h2>Preview grids</h2>"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [head, f"<p>None yet: <code>kohyagen preview {escape(str(run.run_dir))}</code> "
                "draws each checkpoint at LoRA weights 0.5-1.0 with five seeds.</p>"]  # fmt: skip
    out = [head, "<p>Rows: checkpoints; columns: no LoRA, then each weight; each cell "
           "holds the seeds side by side.</p>", '<div id="preview">']  # fmt: skip
    for grid in data.get("grids", []):
        label = f"{grid['prompt']['label']}: {grid['prompt']['prompt']}"
        path = index.parent / grid["file"]
        src = _src(path, run.run_dir)
        out.append(f'<figure class="grid"><a href="{src}"><img src="{src}" '
                   f'alt="{escape(label)}"></a><figcaption>{escape(label)} (click for full size)'
                   "</figcaption></figure>")  # fmt: skip
    return [*out, "</div>"]


def _dataset_section(run: RunData) -> list[str]:
    config = Path(run.training.get("dataset_config") or run.run_dir / "dataset_config.toml")
    facts = dataset_facts(config if config.is_absolute() else run.run_dir / config)
    if facts is None:
        return []
    out = ["<h2>Dataset</h2>", f"<p>{facts.images} images, {facts.images_x_repeats} images x "
           "repeats per epoch.</p>"]  # fmt: skip
    out.append(_table(["folder", "images", "repeats"], [list(s) for s in facts.subsets]))
    buckets = sorted(facts.buckets.items(), key=lambda kv: -kv[1])
    out += ["<h3>Buckets</h3>", _table(["bucket", "images"], [list(b) for b in buckets])]
    tags = facts.tags.most_common(20)
    if tags:
        out += ["<h3>Top caption tags</h3>", _table(["tag", "images"], [list(t) for t in tags])]
    return out


def _settings_section(run: RunData) -> list[str]:
    rows = [[k, v, d] for k, v, d in changed_settings(run.run_dir, run.training)]
    if not rows:
        return []
    return ["<h2>Settings that differ from kohya's defaults</h2>",
            _table(["option", "this run", "kohya's default"], rows)]  # fmt: skip


def _cost_section(s: dict) -> list[str]:
    speed = s["speed"].get("seconds_per_step")
    rows = [["wall time", _clock(s.get("duration_s"))],
            ["training time", _clock(s["speed"].get("training_seconds"))],
            ["seconds per step", speed],
            ["attempts", s.get("attempts")],
            ["price per hour", f"${s['price_per_hour']}" if s.get("price_per_hour") else None],
            ["cost", f"${s['cost']:.2f}" if s.get("cost") is not None else None]]  # fmt: skip
    return ["<h2>Time and cost</h2>", _table(["", ""], [r for r in rows if r[1] is not None])]


def write_html(summary: dict, run: RunData, path: Path) -> Path:
    """Write report.html for the run (summary as made by summarize) and return its path."""
    picked = (summary.get("recommended") or {}).get("file")
    picked_path = next((cp.path for cp in run.checkpoints if cp.path.name == picked), None)
    chart = loss_svg(run, picked_path)
    body = _summary_section(summary)
    body += ["<h2>Loss</h2>", chart or "<p>No loss logged yet.</p>"]
    body += _checkpoint_section(summary, run) + _samples_section(summary, run)
    body += _preview_section(run) + _dataset_section(run) + _settings_section(run)
    body += _cost_section(summary)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>kohyagen: {escape(summary['output_name'])}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    write_text_atomic(path, page)
    return path
