"""Reading the two kohya TOMLs with kohya's semantics, and refusing what is not built in.

The training config is flattened (section names ignored, later sections win) and
laid over kohya's argparse defaults from the schema; the dataset config is
validated with the dataset schema and resolved per subset through kohya's
fallback chain (subset -> dataset -> general -> training options -> default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kohyagen.config.schema import (
    SDXL_TRAIN_NETWORK,
    flatten_training_config,
    load_toml,
    script_for_config,
    training_defaults,
    training_properties,
    validator_for,
)
from kohyagen.errors import ConfigError, UsageError
from kohyagen.trainer.options import (
    ALLOWED_VALUES,
    DATASET_UNSUPPORTED_DEFAULTS,
    KOHYA_HINT,
    NETWORK_ARGS,
    SUPPORTED,
)


@dataclass(frozen=True)
class SubsetSpec:
    """One DreamBooth subset with every value resolved through kohya's fallback chain."""

    image_dir: Path
    num_repeats: int
    class_tokens: str | None
    caption_extension: str
    is_reg: bool = False
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_separator: str = ","
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    flip_aug: bool = False
    keep_tokens_separator: str = ""
    color_aug: bool = False
    random_crop: bool = False
    face_crop_aug_range: tuple[float, float] | None = None
    alpha_mask: bool = False
    resize_interpolation: str | None = None
    secondary_separator: str | None = None
    enable_wildcard: bool = False
    token_warmup_min: int = 1
    token_warmup_step: float = 0


@dataclass(frozen=True)
class DatasetSpec:
    batch_size: int
    resolution: tuple[int, int]
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    validation_split: float
    validation_seed: int | None
    subsets: tuple[SubsetSpec, ...] = field(default_factory=tuple)


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


def unsupported_dataset_options(data: dict[str, Any]) -> list[str]:
    """dataset_config keys set to something the builtin trainer does not do, with where."""
    levels: list[tuple[str, dict[str, Any]]] = [("general", data.get("general", {}))]
    for i, ds in enumerate(data.get("datasets", [])):
        levels.append((f"datasets[{i}]", ds))
        for j, sub in enumerate(ds.get("subsets", [])):
            levels.append((f"datasets[{i}].subsets[{j}]", sub))
    problems: list[str] = []
    for where, table in levels:
        for key, default in DATASET_UNSUPPORTED_DEFAULTS.items():
            value = table.get(key)
            if value is not None and value != default and value != {}:
                problems.append(f"{where}.{key} = {value!r}")
    return problems


def parse_resolution(value: Any, *, path: Path | None = None) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            return nums[0], nums[0]
        if len(nums) == 2:
            return nums[0], nums[1]
    raise ConfigError(
        f"resolution {value!r} is not understood",
        path=path,
        hint='write resolution = "512" or "512,768" in the training config',
    )


def _interpolation(value: Any) -> str | None:
    from kohyagen.trainer.augment import INTERPOLATIONS

    if value is None or value in INTERPOLATIONS:
        return value
    raise ConfigError(
        f"resize_interpolation {value!r} is not supported",
        hint="use one of " + ", ".join(INTERPOLATIONS),
    )


def parse_face_range(value: Any, *, path: Path | None = None) -> tuple[float, float] | None:
    """face_crop_aug_range: "low,high" (training config) or [low, high] (dataset config)."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        low, high = 1.0, 0.0  # reported below
    if low > high:
        raise ConfigError(  # kohya's assertion
            f"face_crop_aug_range must be two floats 'low,high', got {value!r}",
            path=path,
            hint='write face_crop_aug_range = "2.0,4.0" (face size range relative to the image)',
        )
    return low, high


def _subset_value(key: str, chain: list[dict[str, Any]], default: Any) -> Any:
    for level in chain:
        if level.get(key) is not None:
            return level[key]
    return default


def _subset_from_chain(
    chain: list[dict[str, Any]], image_dir: Path, *, num_repeats: int, class_tokens: str | None
) -> SubsetSpec:
    ext = _subset_value("caption_extension", chain, ".caption")
    if chain[-1].get("caption_extention"):
        ext = chain[-1]["caption_extention"]
    return SubsetSpec(
        image_dir=image_dir,
        num_repeats=num_repeats,
        class_tokens=class_tokens,
        caption_extension=ext,
        is_reg=bool(chain[0].get("is_reg", False)),
        shuffle_caption=bool(_subset_value("shuffle_caption", chain, False)),
        keep_tokens=int(_subset_value("keep_tokens", chain, 0)),
        caption_separator=_subset_value("caption_separator", chain, ","),
        caption_dropout_rate=float(_subset_value("caption_dropout_rate", chain, 0.0)),
        caption_dropout_every_n_epochs=int(
            _subset_value("caption_dropout_every_n_epochs", chain, 0)
        ),
        caption_tag_dropout_rate=float(_subset_value("caption_tag_dropout_rate", chain, 0.0)),
        caption_prefix=_subset_value("caption_prefix", chain, None),
        caption_suffix=_subset_value("caption_suffix", chain, None),
        flip_aug=bool(_subset_value("flip_aug", chain, False)),
        keep_tokens_separator=_subset_value("keep_tokens_separator", chain, ""),
        color_aug=bool(_subset_value("color_aug", chain, False)),
        random_crop=bool(_subset_value("random_crop", chain, False)),
        face_crop_aug_range=parse_face_range(_subset_value("face_crop_aug_range", chain, None)),
        secondary_separator=_subset_value("secondary_separator", chain, None),
        alpha_mask=bool(_subset_value("alpha_mask", chain, False)),
        resize_interpolation=_interpolation(_subset_value("resize_interpolation", chain, None)),
        enable_wildcard=bool(_subset_value("enable_wildcard", chain, False)),
        token_warmup_min=int(_subset_value("token_warmup_min", chain, 1)),
        token_warmup_step=float(_subset_value("token_warmup_step", chain, 0)),
    )


def _dataset_from_chain(
    chain: list[dict[str, Any]], subsets: list[SubsetSpec], path
) -> DatasetSpec:
    reso = _subset_value("resolution", chain, None)
    if reso is None:
        raise ConfigError(
            "resolution is not set",
            path=path,
            hint='set resolution = "512" in the training config or resolution in the dataset config',
        )
    split = float(_subset_value("validation_split", chain, 0.0))
    if not 0.0 <= split <= 1.0:
        split = 0.0  # kohya warns and skips the split for values outside 0..1
    return DatasetSpec(
        batch_size=int(_subset_value("batch_size", chain, 1)),
        resolution=parse_resolution(reso, path=path),
        enable_bucket=bool(_subset_value("enable_bucket", chain, False)),
        min_bucket_reso=int(_subset_value("min_bucket_reso", chain, 256)),
        max_bucket_reso=int(_subset_value("max_bucket_reso", chain, 1024)),
        bucket_reso_steps=int(_subset_value("bucket_reso_steps", chain, 64)),
        bucket_no_upscale=bool(_subset_value("bucket_no_upscale", chain, False)),
        validation_split=split,
        validation_seed=_subset_value("validation_seed", chain, None),
        subsets=tuple(subsets),
    )


def _cli_level(args: SimpleNamespace) -> dict[str, Any]:
    """The training options as the last fallback level, with kohya's two renames."""
    level = dict(vars(args))
    level["batch_size"] = level.get("train_batch_size")
    level["num_repeats"] = level.get("dataset_repeats")
    return level


def _datasets_from_dataset_config(path: Path, args: SimpleNamespace) -> tuple[DatasetSpec, ...]:
    doc = load_toml(path)
    errors = sorted(validator_for("dataset_config").iter_errors(doc.data), key=lambda e: e.path)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "top level"
        raise ConfigError(
            f"invalid dataset config at {where}: {first.message}",
            path=path,
            hint="run `kohyagen lint` on it for every problem",
        )
    general = doc.data.get("general", {})
    problems = unsupported_dataset_options(doc.data)
    if problems:
        raise ConfigError(
            "the builtin trainer does not implement: " + "; ".join(problems),
            path=path,
            hint=KOHYA_HINT,
        )
    cli = _cli_level(args)
    datasets: list[DatasetSpec] = []
    for ds in doc.data.get("datasets", []):
        subsets: list[SubsetSpec] = []
        for sub in ds.get("subsets", []):
            if "metadata_file" in sub or "image_dir" not in sub:
                raise ConfigError(
                    "fine-tuning (metadata_file) datasets are not supported by the builtin trainer",
                    path=path,
                    hint=KOHYA_HINT,
                )
            chain = [sub, ds, general, cli]
            image_dir = Path(sub["image_dir"])
            if not image_dir.is_absolute():
                image_dir = (Path.cwd() / image_dir).resolve()
            subsets.append(
                _subset_from_chain(
                    chain,
                    image_dir,
                    num_repeats=int(_subset_value("num_repeats", chain, 1)),
                    class_tokens=sub.get("class_tokens"),
                )
            )
        datasets.append(_dataset_from_chain([ds, general, cli], subsets, path))
    return tuple(datasets)


def _datasets_from_folders(args: SimpleNamespace, path: Path) -> tuple[DatasetSpec, ...]:
    from kohyagen.dataset.layout import scan_train_dir

    if not args.train_data_dir:
        raise ConfigError(
            "no training data: neither dataset_config nor train_data_dir is set",
            path=path,
            hint="set train_data_dir to the folder holding N_name/ folders",
        )
    cli = _cli_level(args)
    subsets: list[SubsetSpec] = []
    for root, is_reg in ((args.train_data_dir, False), (args.reg_data_dir, True)):
        if not root:
            continue
        layout = scan_train_dir(root)
        for sub in layout.subsets:
            chain = [{"is_reg": is_reg}, cli]
            subsets.append(
                _subset_from_chain(
                    chain, sub.path, num_repeats=sub.repeats, class_tokens=sub.class_tokens
                )
            )
    return (_dataset_from_chain([cli], subsets, path),)


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
        datasets = _datasets_from_dataset_config(ds_path, args)
    else:
        datasets = _datasets_from_folders(args, path)
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


def _check_latent_cache(args: SimpleNamespace, datasets, path: Path) -> None:
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
