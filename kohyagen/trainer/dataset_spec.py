"""The dataset side of kohya's configs: [[datasets]] and their subsets, resolved.

A dataset config is validated with kohya's dataset schema, then every subset value is
resolved through kohya's fallback chain (subset -> dataset -> general -> training
options -> default); without a dataset config, the N_name/ folders of train_data_dir
(and reg_data_dir) make one dataset, as kohya's DreamBooth loader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kohyagen.config.schema import load_toml, validator_for
from kohyagen.errors import ConfigError
from kohyagen.trainer.options import DATASET_UNSUPPORTED_DEFAULTS, KOHYA_HINT


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


def unsupported_dataset_options(data: dict[str, Any]) -> list[str]:
    """dataset_config keys set to something the builtin trainer does not do, with where."""
    levels: list[tuple[str, dict[str, Any]]] = [("general", data.get("general", {}))]
    for i, ds in enumerate(data.get("datasets", [])):
        levels.append((f"datasets[{i}]", ds))
        for j, sub in enumerate(ds.get("subsets", [])):
            levels.append((f"datasets[{i}].subsets[{j}]", sub))
    problems: list[str] = []
    # refused up front, not ignored: a run that silently skips an option is not kohya's run
    for where, table in levels:
        for key, default in DATASET_UNSUPPORTED_DEFAULTS.items():
            value = table.get(key)
            if value is not None and value != default and value != {}:
                problems.append(f"{where}.{key} = {value!r}")
    return problems


def parse_resolution(value: Any, *, path: Path | None = None) -> tuple[int, int]:
    # both spellings: the dataset config's int or [w, h], the training config's "W" or "W,H"
    # (kohya's prepare_dataset_args splits that string; an int there crashes kohya)
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
    # the first level that sets the key wins: kohya's config_util.py:401-471 fallback order
    for level in chain:
        if level.get(key) is not None:
            return level[key]
    return default


def _subset_from_chain(
    chain: list[dict[str, Any]], image_dir: Path, *, num_repeats: int, class_tokens: str | None
) -> SubsetSpec:
    # kohya's default is .caption (train_util.py:4492), not the tagger's .txt
    ext = _subset_value("caption_extension", chain, ".caption")
    # the old misspelt training option overrides every level (train_util.py:5404-5406)
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
    chain: list[dict[str, Any]], subsets: list[SubsetSpec], path: Path | None
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
        # kohya's defaults for the bucket range and step, used when the configs say nothing
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
    # the dataset schema's names for them; the training option's name is not looked up there
    level["batch_size"] = level.get("train_batch_size")
    level["num_repeats"] = level.get("dataset_repeats")
    return level


def datasets_from_dataset_config(path: Path, args: SimpleNamespace) -> tuple[DatasetSpec, ...]:
    """The dataset config's [[datasets]], validated against kohya's dataset schema."""
    doc = load_toml(path)
    # kohya's voluptuous schema rejects the same files; sorted so the first error is stable
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
            # relative to where training is launched, as kohya resolves it
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
        # dataset-level values have no subset level to come from
        datasets.append(_dataset_from_chain([ds, general, cli], subsets, path))
    return tuple(datasets)


def datasets_from_folders(args: SimpleNamespace, path: Path) -> tuple[DatasetSpec, ...]:
    """One dataset of the N_name/ folders in train_data_dir (and reg_data_dir)."""
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
            # folders have no tables of their own: every value comes from the training options,
            # repeats and class tokens from the folder name (config_util.py:607-645)
            chain = [{"is_reg": is_reg}, cli]
            subsets.append(
                _subset_from_chain(
                    chain, sub.path, num_repeats=sub.repeats, class_tokens=sub.class_tokens
                )
            )
    return (_dataset_from_chain([cli], subsets, path),)
