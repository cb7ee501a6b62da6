"""Reading the two kohya TOMLs with kohya's semantics, and refusing what is not built in.

The training config is flattened (section names ignored, later sections win) and
laid over kohya's argparse defaults from the schema; the dataset config is
validated with the dataset schema and resolved per subset through kohya's
fallback chain (subset -> dataset -> general -> training options -> default),
in kohyagen.trainer.dataset_spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from kohyagen.config.schema import (
    SDXL_TRAIN_NETWORK,
    flatten_training_config,
    load_toml,
    script_for_config,
    training_defaults,
    training_properties,
)
from kohyagen.errors import ConfigError, UsageError
from kohyagen.trainer.dataset_spec import (
    DatasetSpec,
    SubsetSpec,
    datasets_from_dataset_config,
    datasets_from_folders,
    parse_face_range,
    parse_resolution,
)
from kohyagen.trainer.options import (
    ALLOWED_VALUES,
    KOHYA_HINT,
    NETWORK_ARGS,
    SUPPORTED,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

# The dataset specs stay importable from here, where callers have always found them.
__all__ = [
    "DatasetSpec",
    "SubsetSpec",
    "TrainerConfig",
    "load_config",
    "parse_cli_overrides",
    "parse_face_range",
    "parse_resolution",
    "unsupported_options",
]


@dataclass(frozen=True)
class TrainerConfig:
    script: str
    path: Path
    args: SimpleNamespace  # every kohya option, defaults filled in, as kohya's args
    datasets: tuple[DatasetSpec, ...]
    dataset_config_path: Path | None

    @property
    def is_sdxl(self) -> bool:
        return self.script == SDXL_TRAIN_NETWORK


def _differs(value: Any, default: Any) -> bool:
    if value is None:
        return False
    if value == [] and default is None:
        return False
    if isinstance(value, bool) or isinstance(default, bool):
        return bool(value) != bool(default)
    return value != default


def unsupported_options(flat: dict[str, Any], script: str) -> list[str]:
    """Known kohya options set to something the builtin trainer does not do."""
    props = training_properties(script)
    defaults = training_defaults(script)
    problems: list[str] = []
    for key, value in flat.items():
        if key not in props:
            continue  # kohya ignores unknown keys silently; `kohyagen lint` reports them
        if key not in SUPPORTED:
            if _differs(value, defaults.get(key)):
                problems.append(f"{key} = {value!r}")
            continue
        allowed = ALLOWED_VALUES.get(key)
        if allowed is not None:
            norm = value.lower() if isinstance(value, str) and key == "optimizer_type" else value
            if norm not in allowed:
                problems.append(f"{key} = {value!r} (supported: {', '.join(map(str, allowed))})")
    if script == SDXL_TRAIN_NETWORK and flat.get("max_token_length") not in (None, 75):
        problems.append(f"max_token_length = {flat['max_token_length']!r} on SDXL")
    net_args = flat.get("network_args") or []
    if not isinstance(net_args, list):
        problems.append(f'network_args = {net_args!r} (write a list of "key=value")')
    else:
        for item in net_args:
            key = str(item).partition("=")[0].strip()
            if key not in NETWORK_ARGS:
                problems.append(f"network_args {item!r} (supported: {', '.join(NETWORK_ARGS)})")

    return problems


def parse_cli_overrides(argv: list[str], script: str = SDXL_TRAIN_NETWORK) -> dict[str, Any]:
    """kohya-style `--option value` / `--flag` arguments, typed by kohya's argument table.

    As in kohya, they override the config file (CLI > file > default).
    """
    props = training_properties(script)
    out: dict[str, Any] = {}
    unknown: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise UsageError(
                f"unexpected argument {token!r}", hint="options look like --name value"
            )
        name, eq, inline = token[2:].partition("=")
        values: list[str] = [inline] if eq else []
        i += 1
        while not eq and i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        prop = props.get(name)
        if prop is None:
            unknown.append(token)
            continue
        out[name] = _typed(name, prop, values)
    if unknown:
        raise UsageError(
            "unrecognized arguments: " + " ".join(unknown),
            hint="use kohya's option names (see `kohyagen lint` for suggestions)",
        )
    return out


def _typed(name: str, prop: dict[str, Any], values: list[str]) -> Any:
    kind = prop.get("type")
    if kind == "boolean":
        if values:
            raise UsageError(f"--{name} is a flag and takes no value")
        return True
    if kind == "array":
        return list(values)
    if len(values) != 1:
        raise UsageError(f"--{name} needs exactly one value")
    raw = values[0]
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number" or "anyOf" in prop:
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
    except ValueError as exc:
        raise UsageError(f"--{name} {raw!r} is not a number") from exc
    return raw


def load_config(
    config_file: str | Path,
    dataset_config: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> TrainerConfig:
    """Read the training config (and dataset config) the way kohya would.

    overrides: kohya options given on the command line; they win over the file.
    """
    path = Path(config_file)
    if path.suffix != ".toml" and not path.exists():
        path = path.with_name(path.name + ".toml")  # kohya appends .toml
    doc = load_toml(path)
    flat, _origin = flatten_training_config(doc.data)
    flat.update(overrides or {})
    if dataset_config is not None:
        flat["dataset_config"] = str(dataset_config)
    script = script_for_config(doc.text, flat)
    problems = unsupported_options(flat, script)
    if problems:
        raise ConfigError(
            "the builtin trainer does not implement: " + "; ".join(problems),
            path=path,
            hint=KOHYA_HINT,
        )
    args = _make_args(script, flat)
    ds_path = Path(args.dataset_config) if args.dataset_config else None
    if ds_path is not None:
        datasets = datasets_from_dataset_config(ds_path, args)
    else:
        datasets = datasets_from_folders(args, path)
    if not args.pretrained_model_name_or_path:
        raise ConfigError(
            "pretrained_model_name_or_path is not set",
            path=path,
            hint="set it to a diffusers folder, a .safetensors file or a hub repo id",
        )
    if not args.output_dir:
        raise ConfigError("output_dir is not set", path=path, hint="set output_dir")
    _check_latent_cache(args, datasets, ds_path or path)
    _check_option_pairs(args, path)
    return TrainerConfig(script, path, args, datasets, ds_path)


def _make_args(script: str, flat: dict[str, Any]) -> SimpleNamespace:
    """kohya's argparse namespace: every option of the script, its default, then the file's."""
    # Both scripts' option names exist on args, so SDXL-only options read as None for SD1.
    values: dict[str, Any] = dict.fromkeys(training_properties(SDXL_TRAIN_NETWORK))
    values.update(dict.fromkeys(training_properties(script)))
    values.update(training_defaults(script))
    values.update(flat)
    args = SimpleNamespace(**values)
    if isinstance(args.text_encoder_lr, list):
        args.text_encoder_lr = args.text_encoder_lr[0] if args.text_encoder_lr else None
    if args.optimizer_type == "" and args.use_8bit_adam:
        args.optimizer_type = "AdamW8bit"
    elif args.optimizer_type == "" and args.use_lion_optimizer:
        args.optimizer_type = "Lion"
    return args


def _check_option_pairs(args: SimpleNamespace, path: Path) -> None:
    """Options that need another option, as kohya's own checks demand."""
    # kohya checks full_fp16 first and then ignores full_bf16.
    flag = "full_fp16" if args.full_fp16 else "full_bf16" if args.full_bf16 else None
    if flag is not None:
        wanted = flag[-4:]
        if args.mixed_precision != wanted:
            raise ConfigError(  # kohya's assertion
                f"{flag} requires mixed precision='{wanted}'",
                path=path,
                hint=f'set mixed_precision = "{wanted}" or remove {flag}',
            )
    if args.dim_from_weights:
        _check_dim_from_weights(args, path)
    thumb = args.metadata_thumbnail
    if thumb and not str(thumb).startswith("data:") and not Path(thumb).is_file():
        raise ConfigError(  # kohya only warns and drops it from the file
            "metadata_thumbnail file not found",
            path=Path(thumb),
            hint="point it at an image file, or remove metadata_thumbnail",
        )
    if args.adaptive_noise_scale is not None and args.noise_offset is None:
        raise ConfigError(  # kohya's ValueError
            "adaptive_noise_scale requires noise_offset",
            path=path,
            hint="set noise_offset (e.g. 0.05) or remove adaptive_noise_scale",
        )


def _check_dim_from_weights(args: SimpleNamespace, path: Path) -> None:
    if not args.network_weights:
        raise ConfigError(
            "dim_from_weights needs network_weights (the LoRA file to read the ranks from)",
            path=path,
            hint="set network_weights or remove dim_from_weights",
        )
    # kohya builds that network from the file alone and silently drops these.
    ignored = [f"network_args {a!r}" for a in args.network_args or []]
    if args.network_dropout:
        ignored.append("network_dropout")
    if ignored:
        raise ConfigError(
            "kohya ignores " + ", ".join(ignored) + " with dim_from_weights",
            path=path,
            hint="remove them, or remove dim_from_weights and set network_dim",
        )


def _check_latent_cache(args: SimpleNamespace, datasets: Sequence[DatasetSpec], path: Path) -> None:
    """kohya's assertion: cached latents are fixed, so per-step crops and colours cannot be."""
    if not (args.cache_latents or args.cache_latents_to_disk):
        return  # kohya turns cache_latents on for cache_latents_to_disk
    subsets = [sub for ds in datasets for sub in ds.subsets]
    if any(sub.color_aug or sub.random_crop for sub in subsets):
        raise ConfigError(
            "when caching latents, either color_aug or random_crop cannot be used",
            path=path,
            hint="turn off cache_latents / cache_latents_to_disk, or color_aug and random_crop",
        )
