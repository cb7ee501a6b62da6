"""The model files a DiT family needs (FLUX: DiT, clip_l, t5xxl, ae; ...): checked before
anything launches, and fetched from the Hugging Face hub when asked.

kohya checks almost none of these paths up front: a mistyped T5 path fails only after
the dataset scan and, for FLUX, after the multi-GB DiT has been loaded
(model-families.md section 3). Reading a .safetensors header costs a few kilobytes, so
kohyagen reads it and also tells a T5 file given as the DiT apart from the DiT.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kohyagen.config.families import Family
from kohyagen.errors import ConfigError, ModelNotFound

HUB_PREFIX = "hf:"
MAX_HEADER = 100 * 1024 * 1024
# Roles kohya also accepts as a folder: a diffusers FLUX transformer (flux_utils.py:46-51),
# a Hugging Face Qwen3 folder for Anima (anima docs:68-81).
FOLDER_ROLES = {("flux", "dit"), ("anima", "qwen3")}
# Roles kohya reads from a non-safetensors file: Anima's VAE may be a .pth.
OTHER_SUFFIXES = {("anima", "vae"): (".pth", ".pt")}
# A key prefix each role's tensors carry (after an optional "model.diffusion_model."
# prefix kohya strips), enough to tell a text encoder from a DiT from an autoencoder.
KIND_KEYS = {
    ("flux", "dit"): ("double_blocks.", "transformer_blocks."),
    ("chroma", "dit"): ("double_blocks.",),
    ("flux", "clip_l"): ("text_model.",),
    ("sd3", "clip_l"): ("text_model.",),
    ("sd3", "clip_g"): ("text_model.",),
    ("flux", "t5xxl"): ("encoder.block.",),
    ("chroma", "t5xxl"): ("encoder.block.",),
    ("sd3", "t5xxl"): ("encoder.block.",),
    ("flux", "ae"): ("decoder.",),
    ("chroma", "ae"): ("decoder.",),
    ("lumina2", "ae"): ("decoder.",),
    ("sd3", "checkpoint"): ("model.diffusion_model.joint_blocks.",),
}
KIND_NAMES = {
    "dit": "a DiT (diffusion transformer)",
    "clip_l": "a CLIP text encoder",
    "clip_g": "a CLIP text encoder",
    "t5xxl": "a T5-XXL text encoder",
    "ae": "an autoencoder (VAE)",
    "checkpoint": "an SD3 checkpoint",
}
# fp8 kinds kohya rejects with fp8_base (flux_train_network.py:113-124).
UNSUPPORTED_FP8 = ("F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ")


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file; ConfigError naming the file when it is not one."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ConfigError("not a .safetensors file (too short)", path=path)
            (size,) = struct.unpack("<Q", raw)
            if size <= 1 or size > MAX_HEADER or size > path.stat().st_size:
                raise ConfigError("not a .safetensors file (no valid header)", path=path)
            header = json.loads(fh.read(size))
    except OSError as exc:
        raise ConfigError(f"cannot read the model file: {exc.strerror or exc}", path=path) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError("not a .safetensors file (unreadable header)", path=path) from exc
    if not isinstance(header, dict):
        raise ConfigError("not a .safetensors file (header is not a table)", path=path)
    return header


def tensor_names(header: dict[str, Any]) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def _strip(key: str) -> str:
    return key.removeprefix("model.diffusion_model.")


def check_model_file(family: str, role: str, option: str, value: str) -> list[str]:
    """Problems with one model file (empty when it is fine). Paths are absolute here."""
    path = Path(value)
    fix = f"give the absolute path with --model-file {role}=PATH (or --set {option}=PATH)"
    if not path.exists():
        return [f"{option} {value!r} does not exist; {fix}"]
    if path.is_dir():
        if (family, role) in FOLDER_ROLES:
            return []
        return [f"{option} {value!r} is a folder; kohya needs a .safetensors file here"]
    if not path.is_file():
        return [f"{option} {value!r} is not a regular file"]
    if path.suffix.lower() in OTHER_SUFFIXES.get((family, role), ()):
        return []
    try:
        header = read_safetensors_header(path)
    except ConfigError as exc:
        return [f"{option} {value!r}: {exc.message}; kohya loads it with safetensors"]
    raw = tensor_names(header)
    names = raw + [_strip(k) for k in raw]
    out = []
    wanted = KIND_KEYS.get((family, role))
    if wanted and names and not any(n.startswith(wanted) for n in names):
        kind = KIND_NAMES.get(role, role)
        out.append(
            f"{option} {value!r} does not look like {kind} (no {wanted[0]}* tensors); "
            "is it another of the model files?"
        )
    dtypes = {v.get("dtype") for k, v in header.items() if k != "__metadata__"}
    bad = sorted(d for d in dtypes if d in UNSUPPORTED_FP8)
    if bad and role in ("dit", "checkpoint"):
        out.append(
            f"{option} {value!r} holds {bad[0]} tensors; kohya supports only float8_e4m3fn "
            "fp8 checkpoints (ValueError: Unsupported fp8 model dtype)"
        )
    return out


def flux_variant(header: dict[str, Any]) -> str:
    """ "dev" or "schnell": schnell has no guidance embedding (kohya's flux_utils.py:63)."""
    return "dev" if any("guidance_in." in k for k in header) else "schnell"


def sd3_variant(header: dict[str, Any]) -> str:
    """SD3's model type read from the weights as kohya does (sd3_utils.py:30-75): no qk_norm
    is SD3 medium; qk_norm without attn2 is 3.5 large; with attn2, 3.5 medium."""
    names = [_strip(k) for k in tensor_names(header)]
    if not any(".ln_q." in n or "ln_q.weight" in n for n in names):
        return "medium"
    if any("x_block.attn2." in n for n in names):
        return "3.5-medium"
    return "3.5-large"


def sd3_included_encoders(header: dict[str, Any]) -> set[str]:
    """Which of clip_l, clip_g, t5xxl an SD3 checkpoint carries (text_encoders.<name>.*)."""
    out = set()
    for name in ("clip_l", "clip_g", "t5xxl"):
        if any(k.startswith(f"text_encoders.{name}.") for k in header):
            out.add(name)
    return out


# --- the hub --------------------------------------------------------------------------


def parse_hub_spec(spec: str) -> tuple[str, str]:
    """ "owner/repo/path/in/repo" (optionally "hf:"-prefixed) -> (repo_id, filename)."""
    parts = spec.removeprefix(HUB_PREFIX).strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        raise ConfigError(
            f"{spec!r} is not a hub file",
            hint="write hf:OWNER/REPO/PATH/IN/REPO, e.g. "
            "hf:comfyanonymous/flux_text_encoders/clip_l.safetensors",
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - a dependency of kohyagen
        from kohyagen.errors import MissingDependency

        raise MissingDependency("huggingface-hub is needed to fetch model files") from exc
    return huggingface_hub


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_model_file(spec: str, *, on_progress: Callable[[str], None] | None = None) -> Path:
    """Download one hub file into the Hugging Face cache (HF_TOKEN for gated repos) and
    return its local path; with HF_HUB_OFFLINE only the cache is used."""
    repo_id, filename = parse_hub_spec(spec)
    hub = _hub()
    say = on_progress or (lambda _text: None)
    if not offline():
        try:
            meta = hub.get_hf_file_metadata(hub.hf_hub_url(repo_id, filename))
        except Exception as exc:
            raise _hub_error(repo_id, filename, exc) from exc
        size = f"{meta.size / 1e9:.2f} GB" if meta.size else "size unknown"
        say(f"fetching {filename} from {repo_id} ({size}) into the Hugging Face cache")
    try:
        return Path(hub.hf_hub_download(repo_id, filename))
    except Exception as exc:
        raise _hub_error(repo_id, filename, exc) from exc


def _hub_error(repo_id: str, filename: str, exc: Exception) -> ModelNotFound:
    kind = type(exc).__name__
    if kind == "GatedRepoError":
        hint = (
            f"accept the licence on https://huggingface.co/{repo_id} and set HF_TOKEN "
            "to a token of that account"
        )
    elif offline() or kind == "LocalEntryNotFoundError":
        hint = "HF_HUB_OFFLINE is set and the file is not in the cache: unset it, or give a path"
    elif kind in ("RepositoryNotFoundError", "EntryNotFoundError"):
        hint = "check the repository and file name on huggingface.co, or give a local path"
    else:
        hint = "check the network and HF_TOKEN, or download the file and give its path"
    return ModelNotFound(f"cannot fetch {filename} from {repo_id}: {kind}: {exc}", hint=hint)


# --- a family's files for one render ------------------------------------------------------


def role_of(family_name: str, family: Family, key: str) -> str:
    """The role a --model-file key names (a role, or its kohya option); ConfigError for
    a file the family does not take."""
    role = {f.option: f.role for f in family.files}.get(key, key)
    if role not in family.roles:
        raise ConfigError(
            f"{family_name} has no model file {key!r}",
            hint=f"its files are: {', '.join(family.roles)}",
        )
    return role


def resolve_model_files(
    family_name: str,
    family: Family,
    given: dict[str, str],
    *,
    cwd: Path,
    fetch: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """kohya option -> absolute path for every file the family needs, checked.

    given maps a role ("t5xxl") or its kohya option to a path or an "hf:" hub file. A
    missing role is fetched from its public source when fetch is set. Every problem is
    reported at once, in one ConfigError.
    """
    values = {role_of(family_name, family, key): value for key, value in given.items()}
    out: dict[str, str] = {}
    problems: list[str] = []
    for role, value in _with_defaults(family, values, fetch).items():
        option = family.file(role).option
        if value.startswith(HUB_PREFIX):
            value = str(fetch_model_file(value, on_progress=on_progress))
        path = Path(os.path.expanduser(value))
        path = path if path.is_absolute() else cwd / path
        out[option] = str(path.resolve())
        problems += check_model_file(family_name, role, option, out[option])
    missing = _missing_roles(family_name, family, out)
    if missing:
        problems.append(_missing_text(family, missing))
    if problems:
        raise ModelNotFound(
            f"{family_name} model files: " + "; ".join(problems),
            hint="kohya checks these only after scanning the dataset (FLUX: after loading the "
            "DiT), so kohyagen checks them first",
        )
    return out


def _with_defaults(family: Family, values: dict[str, str], fetch: bool) -> dict[str, str]:
    if not fetch:
        return values
    out = dict(values)
    for f in family.files:
        if f.role not in out and f.hub:
            out[f.role] = HUB_PREFIX + f.hub
    return out


def _missing_roles(family_name: str, family: Family, found: dict[str, str]) -> list[str]:
    missing = [f.role for f in family.files if f.option not in found]
    if family_name == "sd3" and "pretrained_model_name_or_path" in found:
        # SD3 checkpoints may carry the text encoders (sd3_utils.py:100-264).
        ckpt = Path(found["pretrained_model_name_or_path"])
        if ckpt.is_file():
            try:
                included = sd3_included_encoders(read_safetensors_header(ckpt))
            except ConfigError:
                included = set()
            missing = [r for r in missing if r not in included]
    return missing


def _missing_text(family: Family, missing: list[str]) -> str:
    parts = []
    for role in missing:
        f = family.file(role)
        source = f" (public: hf:{f.hub})" if f.hub else ""
        parts.append(f"--model-file {role}=PATH{source}")
    return "missing " + ", ".join(parts) + "; or --fetch to download the public ones"
