"""Sample prompts for preview images at each checkpoint (kohya's --sample_prompts format)."""

from __future__ import annotations

from collections import Counter

from kohyagen.config.presets import ModelPreset
from kohyagen.dataset.captions import first_line
from kohyagen.dataset.layout import Subset

NEGATIVE_PROMPT = "lowres, blurry, worst quality, low quality, jpeg artifacts, watermark"


def caption_tag_counts(subsets: tuple[Subset, ...], extension: str) -> Counter[str]:
    """How often each comma-separated tag appears in the first line of the captions."""
    counts: Counter[str] = Counter()
    for subset in subsets:
        for path in subset.caption_files(extension):
            line = first_line(path)
            if line is None:
                continue
            counts.update({t.strip() for t in line.split(",") if t.strip()})
    return counts


def sample_prompts(
    trigger: str, tag_counts: Counter[str], model: ModelPreset, *, exclude=(), count: int = 3
) -> str:
    """Preview prompts in kohya's format: the trigger plus the most frequent caption tags."""
    skip = {trigger.lower(), *(e.lower() for e in exclude if e)}
    # Ties broken by name so the file is the same on every run.
    ranked = sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    tags = [t for t, _ in ranked if t.lower() not in skip]
    size = model.resolution
    options = f"--n {NEGATIVE_PROMPT} --w {size} --h {size} --l {model.sample_cfg:g} "
    options += f"--s {model.sample_steps}"
    if model.sample_extra:  # e.g. Chroma: no embedded guidance (--g 0, kohya's docs)
        options += f" {model.sample_extra}"
    bodies = [[trigger, *tags[:6]], [trigger, *tags[:3]], [trigger]]
    lines = [
        "# kohyagen sample prompts: the trigger and the dataset's most frequent caption tags.",
        "# One prompt per line; --n negative, --w/--h size, --d seed, --l CFG, --s steps.",
    ]
    seen = set()
    for i, body in enumerate(bodies[:count], start=1):
        text = ", ".join(body)
        if text in seen:
            continue
        seen.add(text)
        lines.append(f"{text} {options} --d {i}")
    return "\n".join(lines) + "\n"
