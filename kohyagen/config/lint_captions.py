"""Which captions kohya reads for a folder's images, and what it trains on without them.

kohya pairs an image with `<stem><caption_extension>` only (train_util.py,
DreamBoothDataset.read_caption); a caption under any other extension is never read,
and an uncaptioned image trains on its folder's class tokens or on an empty caption.
"""

from __future__ import annotations

import os
from pathlib import Path

from kohyagen.dataset.captions import CaptionRead, read_caption
from kohyagen.dataset.layout import CAPTION_EXTENSIONS, KOHYA_DEFAULT_CAPTION_EXTENSION
from kohyagen.findings import Finding, Severity


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
    if not images:
        return []
    # os.path.isfile, as kohya: a name too long to exist is no caption, not an error
    read = [img.with_suffix(ext) for img in images if os.path.isfile(img.with_suffix(ext))]
    # what kohya trains an uncaptioned image on (train_util.py:1946-1970): the folder's
    # class tokens, else an empty caption with one summary warning
    fallback = f"the class tokens {class_tokens!r}" if class_tokens else "an empty caption"
    wrong_ext = _wrong_extension_finding(
        file, images, read, ext, fallback, where=where, ext_key=ext_key,
        default=caption_extension is None,
    )  # fmt: skip
    if wrong_ext is not None:
        return [wrong_ext]
    findings: list[Finding] = []
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
    findings += _caption_text_findings(file, key, captions, where=where)
    # kohya uses class tokens only for uncaptioned images: with every image captioned they
    # are dead text, and a trigger that is only in the folder name is never trained
    if class_tokens and read and len(read) == len(images):
        findings += _unused_class_token_findings(file, key, captions, class_tokens, where=where)
    return findings


def _wrong_extension_finding(
    file: str,
    images: list[Path],
    read: list[Path],
    ext: str,
    fallback: str,
    *,
    where: str,
    ext_key: str,
    default: bool,
) -> Finding | None:
    """None read but some under another extension: the extension is wrong, not the captions."""
    if read:
        return None
    others = {
        other: sum(1 for img in images if os.path.isfile(img.with_suffix(other)))
        # captions written under another extension are the common mistake: count each one
        for other in (*CAPTION_EXTENSIONS, ".tags")
        if other != ext
    }
    best_other, n_other = max(others.items(), key=lambda kv: kv[1])
    if not n_other:
        return None
    default_note = " (kohya's default)" if default else ""
    return Finding(
        Severity.ERROR,
        "captions-not-read",
        f"{n_other} of {len(images)} images in {where} have {best_other} captions, but "
        f"caption_extension is {ext!r}{default_note}: kohya will not read them and "
        f"trains every image on {fallback}",
        file=file,
        key=ext_key,
        fix=f'caption_extension = "{best_other}"',
    )


def _caption_text_findings(
    file: str, key: str, captions: list[CaptionRead], *, where: str
) -> list[Finding]:
    """Captions kohya cannot decode, and the empty ones its caption assertion stops on."""
    findings: list[Finding] = []
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
    return findings


def _unused_class_token_findings(
    file: str, key: str, captions: list[CaptionRead], class_tokens: str, *, where: str
) -> list[Finding]:
    """Every image is captioned, so the class tokens are dead text unless a caption holds them."""
    lines = [(c.path, c.text) for c in captions if not c.not_utf8 and c.error is None]
    # "sks woman" folders are captioned "sks, ..." (kohyagen tag --trigger sks): the
    # first token is the trigger, and a caption holding it is what was meant.
    wanted = {class_tokens.lower(), class_tokens.split()[0].lower()}
    lacking = [p for p, line in lines if line and not any(w in line.lower() for w in wanted)]
    if not lacking:
        return []
    return [
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
    ]
