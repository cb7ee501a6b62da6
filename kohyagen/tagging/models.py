"""Where a WD14 tagger comes from, and what its tag list says.

Imported by the CLI for its option help, so numpy is imported only where used.

A tagger is two files: `model.onnx` and `selected_tags.csv`. They come from a short
name of one of SmilingWolf's taggers, any Hugging Face repo id holding both files
(downloaded through huggingface_hub, so its cache, HF_HOME and HF_HUB_OFFLINE are
honoured), or a local folder.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kohyagen import safe_io
from kohyagen.errors import ModelNotFound, TaggingError

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"

# SmilingWolf's published WD taggers, all trained on Danbooru tags at 448x448.
KNOWN_MODELS: dict[str, str] = {
    "wd-v1-4-convnext-tagger-v2": "SmilingWolf/wd-v1-4-convnext-tagger-v2",
    "wd-v1-4-moat-tagger-v2": "SmilingWolf/wd-v1-4-moat-tagger-v2",
    "wd-swinv2-tagger-v3": "SmilingWolf/wd-swinv2-tagger-v3",
    "wd-vit-tagger-v3": "SmilingWolf/wd-vit-tagger-v3",
    "wd-convnext-tagger-v3": "SmilingWolf/wd-convnext-tagger-v3",
    "wd-vit-large-tagger-v3": "SmilingWolf/wd-vit-large-tagger-v3",
    "wd-eva02-large-tagger-v3": "SmilingWolf/wd-eva02-large-tagger-v3",
}
# SwinV2 v3: the accuracy of the v3 generation at a base-model cost, so it stays
# usable on a CPU; the large models are a flag away.
DEFAULT_MODEL = "wd-swinv2-tagger-v3"

# Danbooru categories as the CSV numbers them.
CATEGORY_GENERAL = 0
CATEGORY_CHARACTER = 4
CATEGORY_RATING = 9

if TYPE_CHECKING:
    import numpy as np

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelFiles:
    """A resolved tagger: the two files and where they came from."""

    name: str  # what to report: the short name, repo id or folder
    model_path: Path
    tags_path: Path
    repo_id: str | None = None


@dataclass(frozen=True)
class TagSet:
    """The CSV: one row per model output, in output order."""

    names: tuple[str, ...]
    categories: np.ndarray  # int, one per output

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, category: int) -> np.ndarray:
        import numpy as np

        return np.flatnonzero(self.categories == category)


def known_model_names() -> list[str]:
    return list(KNOWN_MODELS)


def resolve_model(
    model: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
) -> ModelFiles:
    """Find the tagger files for a short name, a hub repo id or a local path.

    Raises ModelNotFound with the fix when the files are missing, unknown, or not
    cached while huggingface_hub is offline.
    """
    spec = str(model) if model is not None else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.exists():
        return _local_model(path)
    repo_id = KNOWN_MODELS.get(spec)
    if repo_id is None and "/" not in spec:
        raise ModelNotFound(
            f"unknown tagger '{spec}': not a known model name, a hub repo id (owner/name) "
            "or an existing folder",
            hint="use one of " + ", ".join(KNOWN_MODELS),
        )
    if repo_id is None:
        if not _REPO_ID.match(spec):
            raise ModelNotFound(
                f"'{spec}' is neither an existing folder nor a valid hub repo id",
                path=spec,
                hint="pass a folder holding model.onnx and selected_tags.csv, or owner/name",
            )
        repo_id = spec
    tags_path = _hub_file(repo_id, TAGS_FILE, cache_dir=cache_dir, revision=revision)
    model_path = _hub_file(repo_id, MODEL_FILE, cache_dir=cache_dir, revision=revision)
    name = spec if spec in KNOWN_MODELS else repo_id
    return ModelFiles(name, model_path, tags_path, repo_id=repo_id)


def _local_model(path: Path) -> ModelFiles:
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise ModelNotFound(
                "a tagger model must be an .onnx file or a folder",
                path=path,
                hint="pass the folder holding model.onnx and selected_tags.csv",
            )
        model_path, tags_path = path, path.with_name(TAGS_FILE)
    else:
        model_path, tags_path = path / MODEL_FILE, path / TAGS_FILE
    for needed in (model_path, tags_path):
        if not needed.is_file():
            raise ModelNotFound(
                f"tagger file {needed.name} is missing",
                path=needed,
                hint="a local tagger folder needs both model.onnx and selected_tags.csv",
            )
    return ModelFiles(str(path), model_path, tags_path)


def _hub_file(
    repo_id: str, filename: str, *, cache_dir: str | Path | None, revision: str | None
) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision))
    except LocalEntryNotFoundError as exc:
        offline = constants.HF_HUB_OFFLINE
        where = cache_dir or constants.HF_HUB_CACHE
        local = "or pass --model with a folder holding model.onnx and selected_tags.csv"
        if offline:
            reason = "HF_HUB_OFFLINE is set"
            fix = f"unset HF_HUB_OFFLINE and run once with network access to download it, {local}"
        else:
            reason = "the hub could not be reached"
            fix = f"check the network connection or proxy (HTTPS_PROXY), {local}"
        raise ModelNotFound(
            f"tagger {repo_id} ({filename}) is not in the Hugging Face cache at {where} "
            f"and {reason}",
            hint=fix,
        ) from exc
    except GatedRepoError as exc:
        raise ModelNotFound(
            f"the hub repo {repo_id} is gated",
            hint="accept its terms on huggingface.co and run `hf auth login`",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFound(
            f"no hub repo {repo_id} (or it is private)",
            hint="check the repo id, or log in with `hf auth login` for a private repo",
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFound(f"hub repo {repo_id} has no revision {revision}") from exc
    except EntryNotFoundError as exc:
        raise ModelNotFound(
            f"hub repo {repo_id} has no {filename}",
            hint="a WD14 tagger repo holds model.onnx and selected_tags.csv",
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelNotFound(
            f"downloading {filename} from {repo_id} failed: {exc}",
            hint="retry, or download the files and pass --model with their folder",
        ) from exc


def load_tags(path: str | Path) -> TagSet:
    """Read selected_tags.csv (tag_id,name,category,count); row i is model output i."""
    path = Path(path)
    try:
        # bounded, regular files only: the tagger folder is the user's (--model DIR)
        text = safe_io.read_text(path, 64 * 1024 * 1024)
        with io.StringIO(text, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            if "name" not in fields or "category" not in fields:
                raise TaggingError(
                    f"the tag list has no name/category columns (header: {','.join(fields)})",
                    path=path,
                    hint="a WD14 selected_tags.csv starts with tag_id,name,category,count",
                )
            names: list[str] = []
            categories: list[int] = []
            for line, row in enumerate(reader, start=2):
                try:
                    categories.append(int(row["category"]))
                except (TypeError, ValueError) as exc:
                    raise TaggingError(
                        f"line {line}: category {row['category']!r} is not a number",
                        path=path,
                    ) from exc
                names.append((row["name"] or "").strip())
    except OSError as exc:
        raise TaggingError(f"cannot read the tag list: {exc.strerror}", path=path) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TaggingError(f"the tag list is not a readable CSV: {exc}", path=path) from exc
    if not names:
        raise TaggingError("the tag list is empty", path=path)
    import numpy as np

    return TagSet(tuple(names), np.asarray(categories, dtype=np.int64))
