"""The prompts a preview draws: the run's sample prompts plus the guide's variations.

Variations of the richest prompt that starts with the trigger: the trigger in the middle
and at the end (a LoRA that works only when its word comes first was trained on captions
that always put it first), and the prompt without the trigger but with it in the negative
prompt (a well-trained concept then disappears; one that stays has leaked into the tags).
"""

from __future__ import annotations

from dataclasses import dataclass

from kohyagen.config.sample_prompts import SamplePrompt


@dataclass(frozen=True)
class PreviewPrompt:
    index: int
    label: str
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    scale: float
    seed: int  # the first seed; the others follow it

    def to_dict(self) -> dict:
        return {
            "index": self.index, "label": self.label, "prompt": self.prompt,
            "negative": self.negative, "width": self.width, "height": self.height,
            "steps": self.steps, "scale": self.scale, "seed": self.seed,
        }  # fmt: skip


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _source(prompts: list[SamplePrompt], trigger: str) -> SamplePrompt | None:
    """The prompt with the most tags among those that start with the trigger."""
    starting = [p for p in prompts if _tags(p.prompt)[:1] == [trigger]]
    rich = [p for p in starting if len(_tags(p.prompt)) >= 3]
    return max(rich, key=lambda p: len(_tags(p.prompt)), default=None)


def preview_prompts(
    prompts: list[SamplePrompt],
    trigger: str | None,
    *,
    steps: int | None = None,
    first_seed: int = 1000,
) -> list[PreviewPrompt]:
    """The prompts, numbered and labelled, followed by the variations (when a trigger is
    known and a prompt starts with it and has two tags or more)."""
    out: list[PreviewPrompt] = []

    def add(label: str, src: SamplePrompt, prompt: str, negative: str) -> None:
        seed = src.seed if src.seed is not None else first_seed + src.index
        size = (src.width, src.height)
        out.append(PreviewPrompt(len(out), label, prompt, negative, *size, steps or src.steps,
                                 src.scale, seed))  # fmt: skip

    for p in prompts:
        add(f"prompt {p.index + 1}", p, p.prompt, p.negative)
    trigger = (trigger or "").strip()
    source = _source(prompts, trigger) if trigger else None
    if source is None:
        return out
    tags = [t for t in _tags(source.prompt) if t != trigger]
    middle = len(tags) // 2
    n = source.index + 1
    add(f"prompt {n}, trigger in the middle", source,
        ", ".join([*tags[:middle], trigger, *tags[middle:]]), source.negative)  # fmt: skip
    add(f"prompt {n}, trigger at the end", source, ", ".join([*tags, trigger]), source.negative)
    negative = ", ".join(t for t in (trigger, source.negative) if t)
    add(f"prompt {n}, trigger in the negative prompt", source, ", ".join(tags), negative)
    return out
