"""Sample prompts for preview images at each checkpoint (kohya's --sample_prompts format).

The set follows the guide kohyagen grew from: the trigger alone (what the LoRA learnt by
itself), the trigger with the dataset's most common tags (the training distribution), two
prompts that take the concept somewhere new (another setting, another style: does it
generalise or only copy?), and one prompt without the trigger (does the LoRA bleed into
everything?). Every line has a fixed seed, so the images of two epochs differ only by the
LoRA.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kohyagen import safe_io
from kohyagen.config.presets import ModelPreset
from kohyagen.dataset.captions import first_line
from kohyagen.dataset.layout import Subset
from kohyagen.errors import ConfigError

NEGATIVE_PROMPT = "lowres, blurry, worst quality, low quality, jpeg artifacts, watermark"
# Where the "somewhere new" prompts take the concept: a setting and a style the dataset
# is unlikely to hold, so a LoRA that only memorised its images shows it.
NEW_SETTING = "standing in a snowy forest at dusk"
NEW_STYLE = "watercolor painting"
FIRST_SEED = 1000


@dataclass(frozen=True)
class Sampling:
    """kohya's sample_sampler and the step count that suit a model family."""

    sampler: str
    steps: int


# Per model family (the preset's name). euler_a converges in few steps on eps- and
# v-prediction models alike; SDXL's larger U-Net gains little beyond ~30 steps.
FAMILY_SAMPLING: dict[str, Sampling] = {
    "sd15": Sampling("euler_a", 28),
    "sd2": Sampling("euler_a", 28),
    "sdxl": Sampling("euler_a", 30),
}
DEFAULT_SAMPLING = Sampling("euler_a", 28)


def family_sampling(model: ModelPreset) -> Sampling:
    """The sampler and steps for model's family (euler_a at 28 steps for a new family)."""
    # a family without an entry samples at its preset's own step count
    return FAMILY_SAMPLING.get(model.name, Sampling(DEFAULT_SAMPLING.sampler, model.sample_steps))


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


def prompt_bodies(trigger: str, tags: list[str]) -> list[tuple[str, str]]:
    """(prompt, why) pairs: trigger alone, with top tags, two new places, no trigger."""
    top = tags[:6]
    bodies = [
        (trigger, "the trigger alone"),
        (", ".join([trigger, *top]), "the trigger with the most common tags"),
        (", ".join([trigger, *tags[:2], NEW_SETTING]), "another setting"),
        (", ".join([trigger, *tags[:2], NEW_STYLE]), "another style"),
        (", ".join(top) if top else "a photo", "no trigger: does the LoRA bleed?"),
    ]
    seen: set[str] = set()
    unique = []
    for text, why in bodies:
        if text not in seen:
            seen.add(text)
            unique.append((text, why))
    return unique


def sample_prompts(
    trigger: str,
    tag_counts: Counter[str],
    model: ModelPreset,
    *,
    exclude: Iterable[str] = (),
    size: int | None = None,
) -> str:
    """Preview prompts in kohya's format (see the module docstring for the set)."""
    skip = {trigger.lower(), *(e.lower() for e in exclude if e)}
    # Ties broken by name so the file is the same on every run.
    ranked = sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    tags = [t for t, _ in ranked if t.lower() not in skip]
    side = size or model.resolution
    sampling = family_sampling(model)
    options = f"--n {NEGATIVE_PROMPT} --w {side} --h {side} --l {model.sample_cfg:g} "
    options += f"--s {sampling.steps}"
    if model.sample_extra:  # e.g. Chroma: no embedded guidance (--g 0, kohya's docs)
        options += f" {model.sample_extra}"
    lines = [
        "# kohyagen sample prompts: the trigger alone, with the dataset's most common tags,",
        "# in a new setting and style, and one prompt without it (to see the LoRA bleed).",
        "# One prompt per line; --n negative, --w/--h size, --d seed, --l CFG, --s steps.",
    ]
    for i, (text, _why) in enumerate(prompt_bodies(trigger, tags)):
        lines.append(f"{text} {options} --d {FIRST_SEED + i}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SamplePrompt:
    index: int
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    scale: float = 7.5
    steps: int = 30


def parse_prompt_line(line: str, index: int) -> SamplePrompt:
    parts = re.split(r"\s+--", " " + line.strip())
    prompt = parts[0].strip()
    opts: dict = {}
    for part in parts[1:]:
        key, _, value = part.partition(" ")
        value = value.strip()
        try:
            if key == "n":
                opts["negative"] = value
            elif key == "w":
                opts["width"] = int(value)
            elif key == "h":
                opts["height"] = int(value)
            elif key == "d":
                opts["seed"] = int(value)
            elif key == "l":
                opts["scale"] = float(value)
            elif key == "s":
                opts["steps"] = int(value)
        except ValueError as exc:
            raise ConfigError(
                f"sample prompt option --{key} {value!r} is not a number",
                hint="fix that line of sample_prompts",
            ) from exc
    return SamplePrompt(index, prompt, **opts)


def _read_prompt_text(path: Path) -> str:
    """The prompts file's text; ConfigError when it is missing, not a regular file (a FIFO
    would block the read), too large or not UTF-8, as kohya would fail on it mid-training."""
    if not os.path.lexists(path):
        raise ConfigError("sample_prompts file not found", path=path, hint="check the path")
    try:
        return safe_io.read_text(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the sample_prompts file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            path=path,
            hint="save it as UTF-8",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the sample_prompts file: {exc.strerror or exc}",
            path=path,
            hint="check the path and its permissions",
        ) from None


def read_prompts(path: str | Path) -> list[SamplePrompt]:
    path = Path(path)
    text = _read_prompt_text(path)
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError("expected a list of objects")
        except ValueError as exc:
            raise ConfigError(
                f"the sample_prompts JSON cannot be read: {exc}",
                path=path,
                hint='write a list of {"prompt": ...} objects',
            ) from None
        return [
            SamplePrompt(
                i,
                r.get("prompt", ""),
                r.get("negative_prompt", ""),
                int(r.get("width", 512)),
                int(r.get("height", 512)),
                r.get("seed"),
                float(r.get("scale", 7.5)),
                int(r.get("sample_steps", 30)),
            )
            for i, r in enumerate(rows)
        ]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    return [parse_prompt_line(line, i) for i, line in enumerate(lines)]
