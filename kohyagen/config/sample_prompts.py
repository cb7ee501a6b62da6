"""Sample prompts for preview images at each checkpoint (kohya's --sample_prompts format).

The set follows the guide kohyagen grew from: the trigger alone (what the LoRA learnt by
itself), the trigger with the dataset's most common tags (the training distribution), two
prompts that take the concept somewhere new (another setting, another style: does it
generalise or only copy?), and one prompt without the trigger (does the LoRA bleed into
everything?). Every line has a fixed seed, so the images of two epochs differ only by the
LoRA.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kohyagen.config.presets import ModelPreset
from kohyagen.dataset.captions import first_line
from kohyagen.dataset.layout import Subset

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
    return FAMILY_SAMPLING.get(model.name, DEFAULT_SAMPLING)


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
    exclude: tuple[str, ...] = (),
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
    lines = [
        "# kohyagen sample prompts: the trigger alone, with the dataset's most common tags,",
        "# in a new setting and style, and one prompt without it (to see the LoRA bleed).",
        "# One prompt per line; --n negative, --w/--h size, --d seed, --l CFG, --s steps.",
    ]
    for i, (text, _why) in enumerate(prompt_bodies(trigger, tags)):
        lines.append(f"{text} {options} --d {FIRST_SEED + i}")
    return "\n".join(lines) + "\n"
