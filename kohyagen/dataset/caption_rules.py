"""Caption rules: which caption files kohya reads, and what is wrong with them.

kohya reads `<image stem><caption_extension>` (default .caption); an image without one
trains on its folder's class tokens.
"""

from __future__ import annotations

from pathlib import Path

from kohyagen.dataset.captions import CaptionRead, contains_trigger, read_caption, repeated_tags
from kohyagen.dataset.layout import KOHYA_DEFAULT_CAPTION_EXTENSION
from kohyagen.dataset.rules import ERR, INFO, PREPARE, WARN, finding
from kohyagen.dataset.scan import DirListing, SubsetListing
from kohyagen.findings import Finding

CAPTION_CANDIDATES = (".caption", ".txt")


def caption_extension_finding(
    root: Path, counts: dict[str, int], chosen: str, given: bool
) -> Finding | None:
    """When the captions on disk are not the ones kohya will read."""
    others = {ext: n for ext, n in counts.items() if ext != chosen and n}
    if given and others and counts.get(chosen, 0) == 0:
        other, n = max(others.items(), key=lambda kv: kv[1])
        return finding(
            WARN,
            "caption-extension",
            f"no {chosen} captions, but {n} {other} captions that would not be read",
            root,
            f'use caption_extension = "{other}" (and --caption-ext {other})',
            key="caption_extension",
        )
    if not given and chosen != KOHYA_DEFAULT_CAPTION_EXTENSION and counts.get(chosen):
        return finding(
            WARN,
            "caption-extension",
            f"captions are {chosen} files, but kohya reads {KOHYA_DEFAULT_CAPTION_EXTENSION} "
            "by default: without caption_extension every caption is ignored",
            root,
            f'set caption_extension = "{chosen}" in the dataset config (kohyagen config '
            f"does) or --caption_extension {chosen}; check with --caption-ext {chosen}",
            key="caption_extension",
        )
    return None


def caption_file_findings(read: CaptionRead) -> list[Finding]:
    """A caption file kohya cannot read, else what kohya makes of its text."""
    p = read.path
    if read.error:
        return [
            finding(
                ERR,
                "unreadable",
                f"cannot read the caption: {read.error}",
                p,
                "check its permissions",
            )
        ]
    if read.not_utf8:
        return [
            finding(
                ERR,
                "caption-not-utf8",
                "not UTF-8 text: kohya fails to read it",
                p,
                f"save it as UTF-8 ({PREPARE} re-encodes it)",
            )
        ]
    return _caption_text_findings(read)


def _caption_text_findings(read: CaptionRead) -> list[Finding]:
    """Empty, BOM-prefixed, multi-line captions and repeated tags, as kohya reads them."""
    p = read.path
    out: list[Finding] = []
    if read.no_lines:
        out.append(
            finding(
                ERR,
                "empty-caption",
                "empty caption file: kohya stops with an assertion",
                p,
                "write the caption, or delete the file to use the class tokens",
            )
        )
    elif read.blank:
        out.append(
            finding(
                WARN,
                "empty-caption",
                "the first line is blank: kohya trains it with an empty caption",
                p,
                "put the caption on the first line",
            )
        )
    if read.has_bom:
        out.append(
            finding(
                WARN,
                "caption-bom",
                "starts with a UTF-8 byte-order mark, which kohya keeps as part of the first tag",
                p,
                f"save without BOM ({PREPARE} does)",
            )
        )
    if read.extra_lines:
        out.append(
            finding(
                WARN,
                "multiline-caption",
                f"kohya reads only the first line; {read.extra_lines} more line(s) ignored",
                p,
                "join the caption into one line",
            )
        )
    repeats = repeated_tags(read.tags)
    if repeats:
        out.append(
            finding(
                WARN,
                "repeated-tag",
                f"tag(s) repeated: {', '.join(repeats)}",
                p,
                "keep one of each",
                key=", ".join(repeats),
            )
        )
    return out


def trigger_findings(
    subset: SubsetListing,
    captions: dict[Path, CaptionRead],
    uncaptioned: list[Path],
    trigger: str,
) -> list[Finding]:
    out = []
    for path, read in captions.items():
        if read.text is not None and not read.no_lines and not contains_trigger(read.text, trigger):
            out.append(
                finding(
                    WARN,
                    "trigger-missing",
                    f"the caption lacks the trigger '{trigger}'",
                    path,
                    f"{PREPARE} --trigger {trigger} puts it first in every caption",
                    key=trigger,
                )
            )
    if uncaptioned and not contains_trigger(subset.class_tokens, trigger):
        tokens = subset.class_tokens or "(none)"
        out.append(
            finding(
                WARN,
                "trigger-missing",
                f"{len(uncaptioned)} image(s) without captions train on the class tokens "
                f"'{tokens}', which lack the trigger '{trigger}'",
                subset.path,
                f"{PREPARE} --trigger {trigger} writes captions with it",
                key=trigger,
            )
        )
    return out


def no_caption_finding(subset: SubsetListing, ext: str) -> Finding:
    if subset.class_tokens:
        return finding(
            INFO,
            "no-captions",
            f"no {ext} captions here: every image trains on the class tokens "
            f"'{subset.class_tokens}'",
            subset.path,
            "fine for a simple concept; `kohyagen tag` writes captions",
        )
    return finding(
        WARN,
        "no-captions",
        f"no {ext} captions and no class tokens in the folder name: the images "
        "train with empty captions",
        subset.path,
        "add captions (`kohyagen tag`) or class tokens (e.g. 10_sks dog)",
    )


def missing_caption_finding(image: Path, ext: str, class_tokens: str) -> Finding:
    fallback = f"the class tokens '{class_tokens}'" if class_tokens else "an empty caption"
    return finding(
        WARN,
        "missing-caption",
        f"no {image.stem}{ext}: kohya uses {fallback} instead",
        image,
        f"write {image.stem}{ext}",
    )


def orphan_caption_finding(path: Path) -> Finding:
    return finding(
        WARN,
        "orphan-caption",
        "caption without an image of the same name",
        path,
        "rename it to match its image, or remove it",
    )


def caption_counts(subsets: list[SubsetListing], extensions: set[str]) -> dict[str, int]:
    counts = dict.fromkeys(sorted(extensions), 0)
    for subset in subsets:
        names = {p.name for p in subset.listing.files}
        for img in subset.listing.images:
            for ext in extensions:
                counts[ext] += (img.stem + ext) in names
    return counts


def choose_caption_extension(
    listing: DirListing, train_subsets: list[SubsetListing], given: str | None
) -> tuple[str, Finding | None]:
    extensions = set(CAPTION_CANDIDATES) | ({given} if given else set())
    counts = caption_counts(train_subsets, extensions)
    if given:
        chosen = given
    else:
        best = max(counts.items(), key=lambda kv: (kv[1], kv[0] == KOHYA_DEFAULT_CAPTION_EXTENSION))
        chosen = best[0] if best[1] else KOHYA_DEFAULT_CAPTION_EXTENSION
    return chosen, caption_extension_finding(listing.root, counts, chosen, given is not None)


def check_captions(
    subset: SubsetListing, ext: str, trigger: str | None, broken: set[Path]
) -> tuple[list[Finding], dict[Path, CaptionRead], list[str]]:
    """Findings, the caption read for each image, and the caption each image trains on.

    Images that cannot be loaded get no caption findings: their fix is to replace them.
    """
    findings: list[Finding] = []
    by_name = {p.name: p for p in subset.listing.files}
    captions: dict[Path, CaptionRead] = {}
    uncaptioned: list[Path] = []
    effective: list[str] = []
    reads: dict[Path, CaptionRead] = {}
    for img in subset.listing.images:
        cap = by_name.get(img.stem + ext)
        if cap is None:
            if img not in broken:
                uncaptioned.append(img)
                effective.append(subset.class_tokens)
            continue
        if cap not in reads:
            reads[cap] = read_caption(cap)
        captions[img] = reads[cap]
        effective.append(reads[cap].text or "")
    for read in reads.values():  # once per file: two images with one stem share a caption
        findings += caption_file_findings(read)
    if captions:
        findings += [missing_caption_finding(i, ext, subset.class_tokens) for i in uncaptioned]
    elif subset.listing.images and not subset.pseudo:
        # a plain image folder gets its captions from tag/prepare; no finding for it here
        findings.append(no_caption_finding(subset, ext))
    image_stems = {
        p.stem
        for p in (*subset.listing.images, *subset.listing.wrong_case, *subset.listing.unsupported)
    }
    for f in subset.listing.files:
        if f.suffix == ext and f.stem not in image_stems:
            findings.append(orphan_caption_finding(f))
    if trigger:
        findings += trigger_findings(subset, reads, [] if subset.pseudo else uncaptioned, trigger)
    return findings, captions, effective
