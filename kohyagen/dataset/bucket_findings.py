"""The bucket options a check counts with, and the findings about them: options kohya
would refuse, and images kohya's bucketing would crash on.

Separate from the check because these are the one place where a finding changes the
settings the numbers use (bucket_no_upscale is turned off, as `kohyagen config` renders
it), and that rule is easier to read on its own.
"""

from __future__ import annotations

import dataclasses

from kohyagen.dataset.buckets import BucketSettings, bucket_range, kohya_bucket_fails
from kohyagen.dataset.images import ImageProbe
from kohyagen.dataset.rules import finding
from kohyagen.findings import Finding, Severity

__all__ = ["crash_findings_and_settings", "default_bucket_settings", "settings_findings"]

# `kohyagen config` renders bucket_no_upscale = true (render_values.dataset_choices).
RENDERED_NO_UPSCALE = True


def default_bucket_settings(
    res: int,
    min_bucket_reso: int | None,
    max_bucket_reso: int | None,
    bucket_reso_steps: int,
    bucket_no_upscale: bool | None,
) -> BucketSettings:
    """The bucket options, each defaulting to what `kohyagen config` renders."""
    low, high = bucket_range(res, bucket_reso_steps)
    return BucketSettings(
        (res, res),
        # not given: the range `kohyagen config` renders (resolution/2 to 2×resolution)
        min_bucket_reso or low,
        max_bucket_reso or high,
        bucket_reso_steps,
        RENDERED_NO_UPSCALE if bucket_no_upscale is None else bucket_no_upscale,
    )


def settings_findings(settings: BucketSettings) -> list[Finding]:
    """The bucket options kohya would refuse."""
    out = []
    for problem in settings.problems():
        out.append(finding(Severity.ERROR, "bucket-settings", f"kohya would stop: {problem}",
                           None, "fix the bucket options",
                           key="min_bucket_reso/max_bucket_reso"))  # fmt: skip
    return out


def crash_findings_and_settings(
    probes: dict[str, ImageProbe], settings: BucketSettings, bucket_no_upscale: bool | None
) -> tuple[list[Finding], BucketSettings]:
    """Images kohya's bucketing would crash on, and the settings the counts then use."""
    crash = _bucket_crash_findings(probes, settings, explicit=bucket_no_upscale is not None)
    if crash and bucket_no_upscale is None:
        # kohyagen config renders bucket_no_upscale = false for such a dataset (render_fixes)
        settings = dataclasses.replace(settings, no_upscale=False)
    return crash, settings


def _bucket_crash_findings(
    probes: dict[str, ImageProbe], settings: BucketSettings, *, explicit: bool
) -> list[Finding]:
    """Images that stop real kohya in select_bucket (a bucket side rounds down to 0).

    An error when bucket_no_upscale was asked for; otherwise a warning, because
    `kohyagen config` then renders bucket_no_upscale = false for this dataset.
    """
    out = []
    sev = Severity.ERROR if explicit else Severity.WARNING
    then = ("kohya stops with a ZeroDivisionError in select_bucket" if explicit else
            "kohyagen config therefore renders bucket_no_upscale = false (kohya would stop "
            "with a ZeroDivisionError in select_bucket)")  # fmt: skip
    for path, probe in probes.items():
        if probe.error is None and kohya_bucket_fails(probe.width, probe.height, settings):
            res = settings.resolution
            out.append(finding(sev, "bucket-zero-side",
                               f"{probe.width}x{probe.height} at resolution {res[0]}x{res[1]} "
                               f"with bucket_no_upscale: a bucket side rounds down to 0 at "
                               f"bucket_reso_steps {settings.steps}; {then}", path,
                               "remove or enlarge the image, or set bucket_no_upscale = false"))  # fmt: skip
    return out
