"""Crashes the file already shows, numbers out of range, and the rules a model family changes.

Each rule names the kohya behaviour it models. Family-dependent rules take the family
that kohyagen.config.family found; when it stays unknown they are warnings that say
both cases.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from kohyagen.config.family import (
    BUCKET_STEP,
    SD2,
    SD15,
    SDXL,
    FamilyGuess,
)
from kohyagen.findings import Finding, Severity

# The narrowest layer a LoRA of network_dim wraps (in/out features): a rank above it
# trains nothing more, only costs memory. SD1/SD2: 320-wide first U-Net block; SDXL: 640.
LAYER_WIDTH = {SD15: 320, SD2: 320, SDXL: 640}
LEARNING_RATES = ("learning_rate", "unet_lr", "text_encoder_lr")
AT_LEAST_ONE = ("max_train_epochs", "max_train_steps", "train_batch_size", "network_dim",
                "gradient_accumulation_steps", "save_every_n_epochs", "save_every_n_steps",
                "sample_every_n_epochs", "sample_every_n_steps")  # fmt: skip


def finding(sev: Severity, code: str, message: str, file: str, key: str | None,
            fix: str | None = None) -> Finding:  # fmt: skip
    return Finding(sev, code, message, file=file, key=key, fix=fix)


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_findings(file: str, flat: dict, family: FamilyGuess) -> list[Finding]:
    out: list[Finding] = []
    for key in LEARNING_RATES:
        value = flat.get(key)
        if not _number(value):
            continue
        if not math.isfinite(value) or value < 0 or (value == 0 and key == "learning_rate"):
            # a NaN/inf/negative step size makes the weights NaN or walks uphill
            out.append(finding(Severity.ERROR, "bad-learning-rate", f"{key} = {value} must be "
                               "a finite number above 0", file, key, f"{key} = 1e-4"))  # fmt: skip
    for key in AT_LEAST_ONE:
        value = flat.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            # 0 epochs/steps trains nothing; batch 0 or dim 0 fails when the first batch is built
            out.append(finding(Severity.ERROR, "below-one", f"{key} = {value} must be 1 or more",
                               file, key, f"{key} = 1 or more"))  # fmt: skip
    dim = flat.get("network_dim")
    width = LAYER_WIDTH.get(family.name or "")
    if isinstance(dim, int) and width and dim > width:
        out.append(finding(Severity.WARNING, "dim-above-width", f"network_dim {dim} is above the "
                           f"width of {family.name}'s narrowest layers ({width}): the extra rank "
                           "adds nothing but memory", file, "network_dim",
                           f"network_dim = {min(128, width)}"))  # fmt: skip
    return out


def runtime_findings(file: str, flat: dict) -> list[Finding]:
    """Combinations that crash kohya at run time, after the models are loaded."""
    out: list[Finding] = []
    if flat.get("persistent_data_loader_workers") is True and flat.get(
        "max_data_loader_n_workers"
    ) == 0:
        # torch's DataLoader raises ValueError: persistent_workers needs num_workers > 0
        out.append(finding(Severity.ERROR, "persistent-workers-without-workers",
                           "persistent_data_loader_workers = true with max_data_loader_n_workers "
                           "= 0: the DataLoader raises ValueError when kohya builds it", file,
                           "persistent_data_loader_workers",
                           "persistent_data_loader_workers = false"))  # fmt: skip
    sampling = [k for k in ("sample_every_n_epochs", "sample_every_n_steps") if flat.get(k)]
    if sampling and not flat.get("sample_prompts"):
        # kohya's sample_images opens args.sample_prompts without checking for None
        out.append(finding(Severity.ERROR, "sampling-without-prompts",
                           f"{sampling[0]} without sample_prompts: kohya fails with a TypeError "
                           "at the first sample", file, sampling[0],
                           'sample_prompts = "/abs/path/prompts.txt", or remove '
                           f"{sampling[0]}"))  # fmt: skip
    return out


def family_findings(file: str, flat: dict, family: FamilyGuess) -> list[Finding]:
    out: list[Finding] = []
    name = family.name
    clip_skip = flat.get("clip_skip")
    if _number(clip_skip) and clip_skip > 1 and name in (SDXL, None):
        # sdxl_train_network only logs that clip_skip "will be unexpected" and ignores it
        sev = Severity.WARNING
        msg = ("clip_skip is ignored by SDXL (kohya logs that it will be unexpected)" if name
               else "clip_skip is ignored if this is an SDXL model (used for SD1/SD2)")  # fmt: skip
        out.append(finding(sev, "clip-skip-ignored", msg, file, "clip_skip",
                           "remove it for SDXL"))  # fmt: skip
    if flat.get("v_parameterization") and not flat.get("v2") and name not in (SD2, SDXL):
        # right for SD2 768-v (with v2) and SDXL v-prediction models (NoobAI v-pred)
        msg = ("v_parameterization on an SD1 model: SD1 predicts noise, not v" if name == SD15
               else "v_parameterization without v2: right only for an SD2 768-v model (then set "
               "v2 = true) or an SDXL v-prediction model")  # fmt: skip
        if name in (SD15, None):
            out.append(finding(Severity.WARNING, "v-param-without-v2", msg, file,
                               "v_parameterization", "v2 = true for a 768-v model, or remove it"))  # fmt: skip
    return out


def bucket_step_finding(
    steps: Any, family: FamilyGuess, file: str, key: str
) -> Finding | None:
    """bucket_reso_steps against the family's assertion (unknown family: say both cases)."""
    if not isinstance(steps, int) or isinstance(steps, bool):
        return None
    if steps <= 0:
        return finding(Severity.ERROR, "bucket-steps", f"bucket_reso_steps {steps} must be "
                       "positive (kohya divides by it)", file, key, "bucket_reso_steps = 64")  # fmt: skip
    multiple = BUCKET_STEP.get(family.name or "")
    if multiple is not None:
        if steps % multiple:
            return finding(Severity.ERROR, "bucket-steps", f"bucket_reso_steps {steps} is not "
                           f"divisible by {multiple}, which kohya asserts for {family.name}",
                           file, key, f"bucket_reso_steps = {max(multiple, steps // 64 * 64)}")  # fmt: skip
        return None
    if steps % 32:
        return finding(Severity.ERROR, "bucket-steps", f"bucket_reso_steps {steps} is not "
                       "divisible by 32 (nor 64), which kohya asserts for every SD family",
                       file, key, "bucket_reso_steps = 64")  # fmt: skip
    if steps % 64:
        return finding(Severity.WARNING, "bucket-steps", f"bucket_reso_steps {steps}: right for "
                       "SDXL/SD3 (divisible by 32), but kohya asserts 64 for SD1/SD2/FLUX", file,
                       key, "bucket_reso_steps = 64, or name the family (--model)")  # fmt: skip
    return None
