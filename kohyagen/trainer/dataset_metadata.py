"""The ss_* keys that describe the training data: folders, tag frequencies, buckets.

kohya writes them into every LoRA file: ss_dataset_dirs and ss_tag_frequency always, the
flat per-dataset keys (ss_resolution, ss_bucket_info, ...) when trained from folders, and
ss_datasets, one entry per [[datasets]], when trained from a dataset config.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kohyagen.trainer.data import PreparedDataset
    from kohyagen.trainer.dataset_spec import SubsetSpec


def json_field(value: Any) -> str:
    # safetensors metadata holds strings only (train_network.py writes every ss_* value as
    # one); ensure_ascii=False keeps non-Latin tags readable in A1111's metadata viewer
    return json.dumps(value, ensure_ascii=False)


def _subset_entry(part: PreparedDataset, s: SubsetSpec) -> dict[str, Any]:
    return {
        "img_count": len([it for it in part.items if it.subset is s]),
        "num_repeats": s.num_repeats,
        "color_aug": s.color_aug,
        "flip_aug": s.flip_aug,
        "random_crop": s.random_crop,
        "shuffle_caption": s.shuffle_caption,
        "keep_tokens": s.keep_tokens,
        "keep_tokens_separator": s.keep_tokens_separator,
        "secondary_separator": s.secondary_separator,
        "enable_wildcard": s.enable_wildcard,
        "caption_prefix": s.caption_prefix,
        "caption_suffix": s.caption_suffix,
        "resize_interpolation": s.resize_interpolation,
        # the folder's name only: kohya does not put the machine's full paths into the file
        "image_dir": s.image_dir.name,
        "class_tokens": s.class_tokens,
        "is_reg": s.is_reg,
    }


def dataset_metadata(cfg: Any, group: Any) -> dict[str, str]:
    """ss_dataset_dirs, ss_tag_frequency and (with a dataset config) ss_datasets.

    group: the training datasets (kohyagen.trainer.data.PreparedGroup).
    """
    dirs, reg_dirs, tags, part_tags = _tag_counts(group)
    out = {"ss_tag_frequency": json_field(tags), "ss_dataset_dirs": json_field(dirs)}
    # kohya writes either the flat keys (folders) or ss_datasets (a dataset config), never both
    if cfg.dataset_config_path is None:
        out.update(_single_dataset_keys(cfg.args, group.parts[0], reg_dirs))
    else:
        out["ss_datasets"] = json_field(
            [_dataset_entry(part, own) for part, own in zip(group.parts, part_tags, strict=True)]
        )
    return out


Counts = dict[str, dict[str, int]]


def _tag_counts(group: Any) -> tuple[Counts, Counts, Counts, list[Counts]]:
    """Each folder's repeats and image count, and its caption tags' frequencies, overall
    and per dataset."""
    dirs: Counts = {}
    reg_dirs: Counts = {}
    tags: Counts = {}
    part_tags: list[Counts] = []
    for part in group.parts:
        mine: Counts = {}
        for subset in part.spec.subsets:
            items = [it for it in part.items if it.subset is subset]
            # regularisation folders are listed apart (ss_reg_dataset_dirs) and have no tags
            target = reg_dirs if subset.is_reg else dirs
            target[subset.image_dir.name] = {
                "n_repeats": subset.num_repeats,
                "img_count": len(items),
            }
            freq = tags.setdefault(subset.image_dir.name, {})
            own = mine.setdefault(subset.image_dir.name, {})
            for it in items:
                # kohya counts comma-separated tags, each image once (not times its repeats)
                for tag in (t.strip() for t in it.caption.split(",")):
                    if tag:
                        freq[tag] = freq.get(tag, 0) + 1
                        own[tag] = own.get(tag, 0) + 1
        part_tags.append(mine)
    return dirs, reg_dirs, tags, part_tags


def _single_dataset_keys(args: Any, part: Any, reg_dirs: Counts) -> dict[str, str]:
    """kohya's flat ss_* dataset keys, written when no dataset config is used."""
    spec = part.spec
    return {
        "ss_batch_size_per_device": str(spec.batch_size),
        # the batch per optimizer step, gradient accumulation included
        "ss_total_batch_size": str(spec.batch_size * int(args.gradient_accumulation_steps or 1)),
        "ss_resolution": str(spec.resolution),
        "ss_color_aug": str(bool(args.color_aug)),
        "ss_flip_aug": str(bool(args.flip_aug)),
        "ss_random_crop": str(bool(args.random_crop)),
        "ss_shuffle_caption": str(bool(args.shuffle_caption)),
        "ss_enable_bucket": str(spec.enable_bucket),
        "ss_bucket_no_upscale": str(spec.bucket_no_upscale),
        # str(None) == "None": kohya writes the range only when bucketing is on
        "ss_min_bucket_reso": str(spec.min_bucket_reso if spec.enable_bucket else None),
        "ss_max_bucket_reso": str(spec.max_bucket_reso if spec.enable_bucket else None),
        "ss_keep_tokens": str(args.keep_tokens),
        "ss_reg_dataset_dirs": json_field(reg_dirs),
        "ss_bucket_info": json_field(_bucket_info(part)),
    }


def _dataset_entry(part: Any, own: Counts) -> dict[str, Any]:
    """One [[datasets]] entry of kohya's ss_datasets."""
    return {
        # the builtin trainer reads folders and captions only (no fine-tuning metadata_file)
        "is_dreambooth": True,
        "batch_size_per_device": part.spec.batch_size,
        "num_train_images": part.train_count,
        "num_reg_images": part.reg_count,
        "resolution": list(part.spec.resolution),
        "enable_bucket": part.spec.enable_bucket,
        "min_bucket_reso": (part.spec.min_bucket_reso if part.spec.enable_bucket else None),
        "max_bucket_reso": (part.spec.max_bucket_reso if part.spec.enable_bucket else None),
        "tag_frequency": own,
        "bucket_info": _bucket_info(part) if part.spec.enable_bucket else None,
        "resize_interpolation": None,
        "subsets": [_subset_entry(part, s) for s in part.spec.subsets],
    }


def _bucket_info(train_ds: PreparedDataset) -> dict | None:
    if not train_ds.spec.enable_bucket:
        return None
    counts: dict[tuple[int, int], int] = {}
    for it in train_ds.items:
        # as kohya's bucket_info counts: a training image once per repeat, a reg image once
        counts[it.bucket] = counts.get(it.bucket, 0) + (
            it.subset.num_repeats if not it.is_reg else 1
        )
    buckets = {
        str(i): {"resolution": list(reso), "count": n}
        for i, reso in enumerate(sorted(counts))
        for n in [counts[reso]]
    }
    # kohya measures the aspect error only with its fixed bucket list; with no_upscale it is 0
    return {"buckets": buckets, "mean_img_ar_error": 0.0}
