"""--model-file and --fetch, declared once for `kohyagen config` and `kohyagen run`.

A DiT family (FLUX, SD3, Lumina 2, HunyuanImage, Anima) trains from several model files;
both commands render the same configs from them, and the error that names a missing file
tells the user to pass `--model-file ROLE=PATH` or `--fetch`, so both must take them alike.
"""

from __future__ import annotations

import click

from kohyagen.cli.run_options import ParamDecorator


def model_file_option() -> ParamDecorator:
    return click.option(
        "--model-file", "model_files", multiple=True, metavar="ROLE=PATH",
        help="A DiT family's model file (flux: dit, clip_l, t5xxl, ae; sd3: checkpoint, "
        "clip_l, clip_g, t5xxl; lumina2: dit, gemma2, ae; hunyuan-image: dit, "
        "text_encoder, byt5, vae; anima: dit, qwen3, vae). PATH may be "
        "hf:OWNER/REPO/FILE to fetch it from the Hugging Face hub. Repeatable.",
    )  # fmt: skip


def fetch_option() -> ParamDecorator:
    return click.option(
        "--fetch", is_flag=True,
        help="Fetch the family's public model files that are not given from the Hugging "
        "Face hub (its cache; HF_TOKEN for gated repos; HF_HUB_OFFLINE honoured).",
    )  # fmt: skip


def parse_model_files(items: tuple[str, ...]) -> dict[str, str]:
    """ROLE=PATH items as role -> path; a usage error names the item that is not one."""
    out = {}
    for item in items:
        # split at the first "=" only: a Windows or hf: path may hold more of them
        role, sep, path = item.partition("=")
        if not sep or not role.strip() or not path.strip():
            raise click.BadParameter(f"{item!r} is not ROLE=PATH", param_hint="--model-file")
        out[role.strip()] = path.strip()
    return out
