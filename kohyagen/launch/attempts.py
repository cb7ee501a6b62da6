"""The configs a run actually uses: copies in the run folder, and smaller ones after OOM.

The copies keep the user's comments and layout (tomlkit). Relative paths are made
absolute against the folder the user ran kohyagen from, because kohya resolves them
against its working directory and kohyagen runs kohya from the run folder.

When the GPU runs out of memory, `shrink` applies the next step of a fixed ladder, each
step cheaper in memory and costlier in something else:

1. gradient_checkpointing = true (slower steps, same result);
   for the DiT families (FLUX, SD3, ...) then fp8 weights (fp8_base, or fp8_scaled);
2. half the batch size and double gradient_accumulation_steps, so the effective batch,
   the number of optimizer steps and the learning dynamics stay the same (repeated while
   the batch is above 1); for the DiT families then more blocks_to_swap (slower steps,
   same result), 8 at a time up to the most kohya allows;
3. cache_latents = true (the VAE leaves the GPU; not with color_aug / random_crop);
4. optimizer_type = "AdamW8bit" when the optimizer is plain AdamW (needs bitsandbytes,
   which sd-scripts' requirements install).

Resolution is never lowered on its own: that changes what the LoRA learns, so it is left
to the user with the diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomlkit
from tomlkit.items import Table

from kohyagen import safe_io
from kohyagen.atomic import write_text_atomic
from kohyagen.errors import ConfigError
from kohyagen.toml_compat import TOO_DEEP

if TYPE_CHECKING:
    from kohyagen.config.families import DitMemory

# Training-config keys holding paths kohya resolves against its working directory.
TRAINING_PATH_KEYS = (
    "train_data_dir",
    "reg_data_dir",
    "output_dir",
    "logging_dir",
    "dataset_config",
    "tokenizer_cache_dir",
    "sample_prompts",
    "network_weights",
    "resume",
    "conditioning_data_dir",
    "in_json",
    "console_log_file",
)
# Keys that may be a path or a Hugging Face repo id: absolutized only when the path exists.
MAYBE_PATH_KEYS = (
    "pretrained_model_name_or_path", "vae", "clip_l", "clip_g", "t5xxl", "ae", "gemma2",
    "text_encoder", "byt5", "qwen3", "llm_adapter_path",
)  # fmt: skip
DATASET_PATH_KEYS = ("image_dir", "metadata_file", "conditioning_data_dir")
# More DiT blocks kept on the CPU per out-of-memory retry (each FLUX unit is ~0.3 GB in fp8).
SWAP_STEP = 8


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    where: str  # "training" or "dataset"

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"

    def to_dict(self) -> dict:
        return {"key": self.key, "old": self.old, "new": self.new, "where": self.where}


def _parse(path: Path) -> tomlkit.TOMLDocument:
    try:
        # tomlkit, not tomllib: the copies keep the user's comments, order and spelling
        return tomlkit.parse(safe_io.read_text(path, safe_io.TOML_LIMIT))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=path) from exc
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"malformed TOML: {exc}", path=path) from exc
    except RecursionError:  # tomlkit recurses per nesting level
        raise ConfigError(TOO_DEEP, path=path) from None


atomic_write_text = write_text_atomic


def _tables(doc: tomlkit.TOMLDocument) -> list[Any]:
    """The document and its top-level tables: kohya flattens them into one namespace."""
    return [doc, *[v for v in doc.values() if isinstance(v, (Table, dict))]]


def _absolutize(
    container: Any, keys: tuple[str, ...], base: Path, *, must_exist: bool = False
) -> None:
    for key in keys:
        value = container.get(key) if hasattr(container, "get") else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            # against the folder kohyagen was run from, which is where the user meant it
            candidate = (base / Path(value).expanduser()).resolve()
            # a model name that is not a local path is a Hub id: left for kohya to download
            if must_exist and not candidate.exists():
                continue
            container[key] = str(candidate)
        # no shell expands a `~` written inside a TOML file
        elif isinstance(value, str) and value.startswith("~"):
            container[key] = str(Path(value).expanduser())


def copy_training_config(
    source: Path, dest: Path, *, base: Path, dataset_copy: Path | None
) -> tomlkit.TOMLDocument:
    doc = _parse(source)
    for table in _tables(doc):
        _absolutize(table, TRAINING_PATH_KEYS, base)
        _absolutize(table, MAYBE_PATH_KEYS, base, must_exist=True)
        if dataset_copy is not None and "dataset_config" in table:
            # the copy, with its absolute image_dir, not the user's original
            table["dataset_config"] = str(dataset_copy)
    atomic_write_text(dest, tomlkit.dumps(doc))
    return doc


def copy_dataset_config(source: Path, dest: Path, *, base: Path) -> tomlkit.TOMLDocument:
    doc = _parse(source)
    for dataset in doc.get("datasets", []) or []:
        for subset in dataset.get("subsets", []) or []:
            _absolutize(subset, DATASET_PATH_KEYS, base)
    atomic_write_text(dest, tomlkit.dumps(doc))
    return doc


def _get(doc: Any, key: str, default: Any = None) -> Any:
    """A training option as kohya sees it: later tables override earlier ones."""
    value = default
    for table in _tables(doc):
        if key in table and not isinstance(table[key], (Table, dict)):
            # the last table wins, as in kohya's read_config_from_file
            value = table[key]
    return _plain(value)


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _set(doc: Any, key: str, value: Any) -> None:
    """Set where the key already lives (the last table that has it), else at the top
    (tomlkit keeps new top-level keys ahead of the tables)."""
    owner = doc
    for table in _tables(doc):
        if key in table and not isinstance(table[key], (Table, dict)):
            owner = table
    owner[key] = value


def _dataset_batch_sizes(dataset: Any) -> list[tuple[Any, int]]:
    """(table, batch_size) for [general] and each [[datasets]] that sets batch_size."""
    found = []
    general = dataset.get("general")
    if general is not None and "batch_size" in general:
        found.append((general, int(general["batch_size"])))
    for entry in dataset.get("datasets", []) or []:
        if "batch_size" in entry:
            found.append((entry, int(entry["batch_size"])))
    return found


def effective_batch_size(training: Any, dataset: Any | None) -> int:
    if dataset is not None:
        sizes = [size for _t, size in _dataset_batch_sizes(dataset)]
        if sizes:
            # the largest dataset batch is the one that runs out of memory
            return max(sizes)
    return int(_get(training, "train_batch_size", 1) or 1)


def _uses_augmentation(training: Any, dataset: Any | None) -> bool:
    if _get(training, "color_aug") or _get(training, "random_crop"):
        return True
    if dataset is None:
        return False
    tables = [dataset.get("general") or {}]
    for entry in dataset.get("datasets", []) or []:
        tables.append(entry)
        tables += list(entry.get("subsets", []) or [])
    return any(t.get("color_aug") or t.get("random_crop") for t in tables)


def _family_memory(training: Any) -> DitMemory | None:
    """The DiT family's memory model (its levers and limits), None for SD1/2/XL."""
    from kohyagen.config.families import family_of_script
    from kohyagen.config.presets import get_model
    from kohyagen.config.schema import flatten_training_config, script_for_config

    flat, _ = flatten_training_config(training.unwrap())
    family = family_of_script(script_for_config(tomlkit.dumps(training), flat))
    preset = get_model(family).family if family else None
    return preset.memory if preset else None


def _fp8_step(training: Any, memory: Any) -> list[Change]:
    """fp8 DiT weights (fp8_base; HunyuanImage's fp8_scaled; Anima has none)."""
    if memory is None or not memory.fp8 or _get(training, memory.fp8, False):
        return []
    _set(training, memory.fp8, True)
    return [Change(memory.fp8, False, True, "training")]


def _swap_step(training: Any, memory: Any) -> list[Change]:
    """More blocks_to_swap, SWAP_STEP at a time up to the family's limit (kohya asserts
    past it; and refuses swapping beside cpu_offload_checkpointing)."""
    if memory is None:
        return []
    swap = int(_get(training, "blocks_to_swap", 0) or 0)
    if swap < memory.max_swap and not _get(training, "cpu_offload_checkpointing", False):
        new = min(memory.max_swap, swap + SWAP_STEP)
        _set(training, "blocks_to_swap", new)
        return [Change("blocks_to_swap", swap, new, "training")]
    return []


def shrink(training: Any, dataset: Any | None) -> list[Change]:
    """Apply the next memory-saving step in place; [] when the ladder is exhausted."""
    # Cheapest in result first: checkpointing costs only time; halving the batch with doubled
    # accumulation keeps the effective batch, steps and learning dynamics.
    if not _get(training, "gradient_checkpointing", False):
        _set(training, "gradient_checkpointing", True)
        return [Change("gradient_checkpointing", False, True, "training")]
    # DiT families: fp8 first, then the batch, then swapped blocks (kohya's recipes swap
    # at batch 1 only).
    memory = _family_memory(training)
    fp8 = _fp8_step(training, memory)
    if fp8:
        return fp8
    batch = effective_batch_size(training, dataset)
    if batch > 1:
        changes: list[Change] = []
        dataset_tables = _dataset_batch_sizes(dataset) if dataset is not None else []
        for table, size in dataset_tables:
            # batch_size in the dataset config wins over train_batch_size in kohya
            if size <= 1:
                continue
            new = max(1, size // 2)
            table["batch_size"] = new
            changes.append(Change("batch_size", size, new, "dataset"))
        train_batch = int(_get(training, "train_batch_size", 1) or 1)
        if train_batch > 1:
            _set(training, "train_batch_size", max(1, train_batch // 2))
            changes.append(
                Change("train_batch_size", train_batch, max(1, train_batch // 2), "training")
            )
        accumulation = int(_get(training, "gradient_accumulation_steps", 1) or 1)
        _set(training, "gradient_accumulation_steps", accumulation * 2)
        changes.append(
            Change("gradient_accumulation_steps", accumulation, accumulation * 2, "training")
        )
        return changes
    swapped = _swap_step(training, memory)
    if swapped:
        return swapped
    # kohya asserts cache_latents cannot go with color_aug or random_crop
    if not _get(training, "cache_latents", False) and not _uses_augmentation(training, dataset):
        _set(training, "cache_latents", True)
        return [Change("cache_latents", False, True, "training")]
    optimizer = str(_get(training, "optimizer_type", "") or "")
    # only plain AdamW has an 8-bit twin that behaves the same; other optimizers are left alone
    if optimizer.lower() in ("", "adamw"):
        _set(training, "optimizer_type", "AdamW8bit")
        return [Change("optimizer_type", optimizer or "AdamW", "AdamW8bit", "training")]
    return []


def write_attempt(
    folder: Path, training: Any, dataset: Any | None, *, dataset_name: str = "dataset_config.toml"
) -> tuple[Path, Path | None]:
    """Write one attempt's configs; the training copy points at the dataset copy."""
    training_path = folder / "training_config.toml"
    dataset_path = folder / dataset_name if dataset is not None else None
    if dataset is not None and dataset_path is not None:
        atomic_write_text(dataset_path, tomlkit.dumps(dataset))
        for table in _tables(training):
            if "dataset_config" in table:
                # absolute: kohya runs with the run folder as its working directory
                table["dataset_config"] = str(dataset_path.resolve())
    atomic_write_text(training_path, tomlkit.dumps(training))
    return training_path, dataset_path


def load(path: Path) -> tomlkit.TOMLDocument:
    return _parse(path)


def option(doc: Any, key: str, default: Any = None) -> Any:
    return _get(doc, key, default)
