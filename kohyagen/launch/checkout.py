"""Where the sd-scripts checkout is, and the Python that runs it.

Apart from the launch itself because more than `train` asks it: `kohyagen lint` and
`kohyagen config` check against the checkout train would run, and the run pipeline records
its revision in the manifest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kohyagen.errors import SdScriptsNotFound, UsageError

CLONE_HINT = "git clone https://github.com/kohya-ss/sd-scripts vendor/sd-scripts"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _is_checkout(path: Path) -> bool:
    # every sd-scripts checkout has it at the top, whatever the version
    return (path / "train_network.py").is_file()


def find_sd_scripts(flag: str | Path | None = None, *, cwd: Path | None = None) -> Path:
    """The sd-scripts checkout: --sd-scripts, then KOHYA_SD_SCRIPTS, then vendor/sd-scripts
    (beside the kohyagen checkout, then in the working folder), then ~/sd-scripts."""
    if flag is not None:
        path = Path(flag).expanduser().resolve()
        if not _is_checkout(path):
            raise SdScriptsNotFound(
                "not a kohya sd-scripts checkout (no train_network.py)", path=path, hint=CLONE_HINT
            )
        return path
    env = os.environ.get("KOHYA_SD_SCRIPTS")
    if env:
        # set but wrong is an error too: training with some other checkout would hide it
        path = Path(env).expanduser().resolve()
        if not _is_checkout(path):
            raise SdScriptsNotFound(
                "KOHYA_SD_SCRIPTS does not point at a kohya sd-scripts checkout "
                "(no train_network.py)",
                path=path,
                hint=CLONE_HINT,
            )
        return path
    cwd = Path(cwd or Path.cwd())
    candidates = [
        # vendor/ beside a kohyagen checkout first: where the README tells people to clone it
        _PACKAGE_ROOT / "vendor" / "sd-scripts",
        cwd / "vendor" / "sd-scripts",
        Path.home() / "sd-scripts",
    ]
    for path in candidates:
        if _is_checkout(path):
            return path.resolve()
    raise SdScriptsNotFound(
        "no kohya sd-scripts checkout found (looked at --sd-scripts, KOHYA_SD_SCRIPTS, "
        + ", ".join(str(p) for p in candidates)
        + ")",
        hint=f"{CLONE_HINT}, or pass --sd-scripts PATH, or use --backend builtin",
    )


def find_python(sd_scripts: Path | None, flag: str | Path | None = None) -> str:
    """--python, else the checkout's own venv (venv/ or .venv/), else this interpreter."""
    if flag is not None:
        path = Path(flag).expanduser()
        if not path.exists():
            raise UsageError("the --python interpreter does not exist", path=path)
        return str(path)
    if sd_scripts is not None:
        for venv in ("venv", ".venv"):
            # kohya's install guide makes venv/ in the checkout: its pinned torch and diffusers are
            # what the scripts were written for, so they run there and not in kohyagen's venv
            for exe in ("bin/python", "bin/python3", "Scripts/python.exe"):
                candidate = sd_scripts / venv / exe
                if candidate.exists():
                    return str(candidate)
    return sys.executable


def script_in(checkout: Path | None, script_name: str) -> Path | None:
    """The kohya script in the checkout (None for the builtin trainer)."""
    script = checkout / f"{script_name}.py" if checkout is not None else None
    if script is not None and not script.is_file():
        raise SdScriptsNotFound(
            f"{script.name} is missing from the checkout", path=checkout, hint=CLONE_HINT
        )
    return script
