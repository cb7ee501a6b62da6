"""What a config's paths find on disk: training folders, captions kohya would read.

kohya resolves relative paths against the folder it is launched from, so every
check here takes that folder (cwd) explicitly.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from kohyagen.config.lint_captions import caption_findings
from kohyagen.dataset.layout import (
    TrainDirLayout,
    is_kohya_image_name,
    list_images,
    parse_folder_name,
    scan_train_dir,
)
from kohyagen.findings import Finding, Severity

# Keys of a training config that name files or folders.
PATH_KEYS = (
    "pretrained_model_name_or_path",
    "train_data_dir",
    "reg_data_dir",
    "dataset_config",
    "output_dir",
    "logging_dir",
    "sample_prompts",
    "network_weights",
    "vae",
    "tokenizer_cache_dir",
    "in_json",
    "resume",
)
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".sft")


_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def is_windows_path(value: str) -> bool:
    """`C:/...`, `D:\\...` or `\\\\server\\share`: absolute, but on another machine."""
    return bool(_WINDOWS_PATH.match(value))


def resolve(value: str, cwd: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else cwd / path


def looks_like_hub_id(value: str) -> bool:
    """owner/name with no file suffix and no leading ./ or / (kohya then asks the Hub)."""
    return (
        # kohya hands anything that is not a local path to diffusers' from_pretrained, which
        # reads `owner/name` as a Hub repo
        value.count("/") == 1
        and not value.startswith((".", "/", "~"))
        and not value.lower().endswith(MODEL_FILE_SUFFIXES)
        and "\\" not in value
    )


def relative_path_finding(file: str, key: str, value: str, cwd: Path) -> Finding | None:
    if is_windows_path(value) and os.name != "nt":
        return Finding(
            Severity.INFO,
            "other-machine-path",
            f"{value!r} is a Windows path: absolute on another machine, it cannot be "
            "checked here",
            file=file,
            key=key,
            fix="check it on the machine that will train, or write this machine's path",
        )
    if Path(value).expanduser().is_absolute():
        return None
    # a Hub id is not a path: nothing to resolve
    if key == "pretrained_model_name_or_path" and looks_like_hub_id(value):
        return None
    return Finding(
        Severity.WARNING,
        "relative-path",
        f"relative path {value!r}: kohya resolves it against the folder it is launched "
        f"from (checked here against {cwd})",
        file=file,
        key=key,
        fix=f"write the absolute path, e.g. {resolve(value, cwd).resolve()}",
    )


def empty_image_findings(file: str, key: str, images: list[Path], *, where: str) -> list[Finding]:
    """0-byte image files (failed downloads or syncs): kohya stops when it reaches one.

    Only the size is looked at, so lint stays fast; `kohyagen dataset check` decodes headers.
    """
    empty = []
    for img in images:
        try:
            # a file that vanished or cannot be read is dataset check's business, not lint's
            if img.stat().st_size == 0:
                empty.append(img)
        except OSError:
            continue
    if not empty:
        return []
    return [
        Finding(
            Severity.ERROR,
            "empty-image",
            f"{len(empty)} image file(s) in {where} are empty (0 bytes), e.g. {empty[0].name}: "
            "kohya fails when it loads them",
            file=file,
            key=key,
            fix="replace them with the real images or delete them "
            "(kohyagen dataset check lists every one)",
        )
    ]


def broken_link_findings(file: str, key: str, folder: Path, *, where: str) -> list[Finding]:
    """Image links to nothing, and image names that are FIFOs or devices: kohya's glob
    lists them, then it fails (or blocks, or reads forever) loading them."""
    try:
        named = [p for p in folder.iterdir() if is_kohya_image_name(p)]
        # is_symlink() and not exists(): the link itself is there, its target is not
        broken = sorted(p for p in named if p.is_symlink() and not p.exists())
        special = sorted(p for p in named if _special(p))
    except OSError:
        return []
    out = []
    if broken:
        out.append(Finding(
            Severity.ERROR, "broken-image-link",
            f"{len(broken)} image link(s) in {where} point to nothing, e.g. {broken[0].name}: "
            "kohya lists them and fails when it loads them",
            file=file, key=key, fix="delete the links or restore the files they point to",
        ))  # fmt: skip
    if special:
        out.append(Finding(
            Severity.ERROR, "special-image-file",
            f"{len(special)} image name(s) in {where} are not regular files (a FIFO, a "
            f"device), e.g. {special[0].name}: kohya lists them, then blocks or never ends "
            "reading them", file=file, key=key, fix="delete them or put the real images there",
        ))  # fmt: skip
    return out


def _special(path: Path) -> bool:
    try:
        mode = path.stat().st_mode  # through links: a link to /dev/zero is a device
    except OSError:
        return False  # no target: a broken link, reported as one
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def train_data_dir_findings(
    file: str,
    key: str,
    value: str,
    cwd: Path,
    caption_extension: str | None,
    flat: dict | None = None,
) -> list[Finding]:
    """A train_data_dir as kohya scans it: N_name/ folders and the captions in them."""
    root = resolve(value, cwd)
    if not root.is_dir():
        return [
            Finding(
                Severity.ERROR,
                "data-dir-not-found",
                f"{value!r} is not a folder (resolved from {cwd} to {root}): kohya finds "
                "no data and still exits 0",
                file=file,
                key=key,
                fix="use the absolute path of the folder that holds the N_name/ folders",
            )
        ]
    # scanned as kohya's DreamBooth loader does: direct N_name/ subfolders only
    layout = scan_train_dir(root)
    findings: list[Finding] = []
    if not layout.subsets or layout.image_count == 0:
        detail = (
            f"its {len(layout.loose_images)} images sit directly in it"
            if layout.loose_images
            else "it has no N_name/ folders with images"
        )
        findings.append(
            Finding(
                Severity.ERROR,
                "no-subsets",
                f"{root} is not a kohya train dir: {detail}. kohya logs 'No data found' and "
                "exits 0 without training",
                file=file,
                key=key,
                fix=(
                    f'use its parent: {key} = "{root.parent}"'
                    if layout.loose_images and parse_folder_name(root.name)
                    else "put the images in a folder named like 10_sks inside it "
                    "(kohyagen dataset prepare)"
                ),
            )
        )
        return findings
    return findings + _subset_findings(file, key, layout, caption_extension, flat)


def _subset_findings(
    file: str, key: str, layout: TrainDirLayout, caption_extension: str | None, flat: dict | None
) -> list[Finding]:
    """The skipped folders of a train dir, then each N_name/ folder's images and captions."""
    findings: list[Finding] = []
    # kohya logs `ignore directory without repeats` for these and trains without them
    for skipped in layout.skipped_dirs:
        findings.append(
            Finding(
                Severity.WARNING,
                "folder-ignored",
                f"{skipped.name}/ has no repeats prefix; kohya ignores it",
                file=file,
                key=key,
                fix=f"rename it like 10_{skipped.name}",
            )
        )
    from kohyagen.config.lint_buckets import bucket_crash_findings, bucket_settings_of

    settings = bucket_settings_of(flat or {})
    for subset in layout.subsets:
        findings += empty_image_findings(file, key, list(subset.images), where=f"{subset.name}/")
        findings += bucket_crash_findings(
            file, key, list(subset.images), settings, where=f"{subset.name}/"
        )
        findings += broken_link_findings(file, key, subset.path, where=f"{subset.name}/")
        findings += caption_findings(
            file,
            key,
            list(subset.images),
            caption_extension=caption_extension,
            class_tokens=subset.class_tokens or None,
            where=f"{subset.name}/",
        )
    return findings


def image_dir_images(path: Path) -> list[Path]:
    return list_images(path)
