"""What a config's paths find on disk: training folders, captions kohya would read.

kohya resolves relative paths against the folder it is launched from, so every
check here takes that folder (cwd) explicitly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kohyagen.dataset.captions import read_caption
from kohyagen.dataset.layout import (
    CAPTION_EXTENSIONS,
    KOHYA_DEFAULT_CAPTION_EXTENSION,
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
    """Image links to nothing: kohya's glob lists them, then it fails loading them."""
    try:
        broken = sorted(
            p
            for p in folder.iterdir()
            # is_symlink() and not exists(): the link itself is there, its target is not
            if is_kohya_image_name(p) and p.is_symlink() and not p.exists()
        )
    except OSError:
        return []
    if not broken:
        return []
    return [
        Finding(
            Severity.ERROR,
            "broken-image-link",
            f"{len(broken)} image link(s) in {where} point to nothing, e.g. {broken[0].name}: "
            "kohya lists them and fails when it loads them",
            file=file,
            key=key,
            fix="delete the links or restore the files they point to",
        )
    ]


def caption_findings(
    file: str,
    key: str,
    images: list[Path],
    *,
    caption_extension: str | None,
    class_tokens: str | None,
    where: str,
    ext_key: str = "caption_extension",
) -> list[Finding]:
    """Which captions kohya reads for these images, and what it does without them."""
    # unset means kohya's default .caption (train_util.py:4492), not the tagger's .txt
    ext = caption_extension or KOHYA_DEFAULT_CAPTION_EXTENSION
    default_note = " (kohya's default)" if caption_extension is None else ""
    findings: list[Finding] = []
    if not images:
        return findings
    read = [img.with_suffix(ext) for img in images if img.with_suffix(ext).is_file()]
    others = {
        other: sum(1 for img in images if img.with_suffix(other).is_file())
        # captions written under another extension are the common mistake: count each one
        for other in (*CAPTION_EXTENSIONS, ".tags")
        if other != ext
    }
    best_other, n_other = max(others.items(), key=lambda kv: kv[1])
    # what kohya trains an uncaptioned image on (train_util.py:1946-1970): the folder's
    # class tokens, else an empty caption with one summary warning
    fallback = f"the class tokens {class_tokens!r}" if class_tokens else "an empty caption"
    # none read but some under another extension: the extension is wrong, not the captions
    if not read and n_other:
        findings.append(
            Finding(
                Severity.ERROR,
                "captions-not-read",
                f"{n_other} of {len(images)} images in {where} have {best_other} captions, but "
                f"caption_extension is {ext!r}{default_note}: kohya will not read them and "
                f"trains every image on {fallback}",
                file=file,
                key=ext_key,
                fix=f'caption_extension = "{best_other}"',
            )
        )
        return findings
    if read and len(read) < len(images):
        findings.append(
            Finding(
                Severity.WARNING,
                "missing-captions",
                f"{len(images) - len(read)} of {len(images)} images in {where} have no {ext} "
                f"caption; kohya uses {fallback} for them",
                file=file,
                key=key,
                fix="caption them (kohyagen tag) or accept the folder's class tokens",
            )
        )
    # only the captions kohya will actually read are looked into
    captions = [read_caption(p) for p in read]
    not_utf8 = [c.path for c in captions if c.not_utf8]
    if not_utf8:
        findings.append(
            Finding(
                Severity.ERROR,
                "caption-not-utf8",
                f"{len(not_utf8)} caption file(s) in {where} are not UTF-8 text "
                f"(e.g. {not_utf8[0].name}); kohya fails to read them",
                file=file,
                key=key,
                fix="save them as UTF-8 (kohyagen dataset prepare converts them)",
            )
        )
    lines = [(c.path, c.text) for c in captions if not c.not_utf8 and c.error is None]
    # kohya keeps a BOM as a character, so a BOM-only caption is not empty to it
    empty = [c.path for c in captions if c.text == "" and not c.has_bom]
    if empty:
        findings.append(
            Finding(
                Severity.ERROR,
                "empty-caption",
                f"{len(empty)} caption file(s) in {where} are empty (e.g. {empty[0].name}); "
                "kohya stops with an assertion error on an empty caption",
                file=file,
                key=key,
                fix="write a caption into them or delete them",
            )
        )
    # kohya uses class tokens only for uncaptioned images: with every image captioned they
    # are dead text, and a trigger that is only in the folder name is never trained
    if class_tokens and read and len(read) == len(images):
        # "sks woman" folders are captioned "sks, ..." (kohyagen tag --trigger sks): the
        # first token is the trigger, and a caption holding it is what was meant.
        wanted = {class_tokens.lower(), class_tokens.split()[0].lower()}
        lacking = [p for p, line in lines if line and not any(w in line.lower() for w in wanted)]
        if lacking:
            findings.append(
                Finding(
                    Severity.WARNING,
                    "class-tokens-unused",
                    f"the class tokens {class_tokens!r} of {where} are never used: every image "
                    f"has a caption, which replaces them, and {len(lacking)} caption(s) do not "
                    f"contain {class_tokens.split()[0]!r}",
                    file=file,
                    key=key,
                    fix=f"add {class_tokens!r} to the captions "
                    f"(e.g. kohyagen tag --trigger {class_tokens.split()[0]!r})",
                )
            )
    return findings


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
