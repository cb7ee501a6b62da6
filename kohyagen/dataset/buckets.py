"""kohya's aspect-ratio bucketing, reimplemented so a check can say where each image lands.

sd-scripts (library/train_util.py BucketManager, library/model_util.py) works like this:

- The bucket area is resolution width × height. min/max bucket reso are first snapped to
  multiples of the step (min rounded down, max rounded up).
- Without `bucket_no_upscale` a fixed list of buckets is made: the square whose side is
  sqrt(area) floored to the step, plus, for every width from min to max in steps, the pair
  (width, height) and (height, width) where height is area // width floored to the step and
  capped at max, kept only when height >= min. An image whose exact size is one of these
  buckets goes there; otherwise it goes to the bucket with the nearest aspect ratio (first
  in sorted order on ties). It is scaled so that it covers the bucket, then center-cropped.
- With `bucket_no_upscale` there is no fixed list: an image larger than the area is scaled
  down to that area keeping its aspect (snapping width or height to the step, whichever
  keeps the aspect closer); then each side is floored to the step. min/max are ignored.
- Each image × repeats goes into its bucket; a batch never mixes buckets, so an epoch has
  sum(ceil(n_bucket / batch_size)) steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class BucketSettings:
    """The kohya options that decide buckets (enable_bucket is assumed on)."""

    resolution: tuple[int, int] = (512, 512)
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64
    no_upscale: bool = False

    def adjusted(self) -> BucketSettings:
        """min/max snapped to the step the way kohya does before it builds buckets."""
        # BucketManager.__init__: min rounded down, max rounded up, each with a warning
        lo = self.min_reso - self.min_reso % self.steps
        hi = self.max_reso
        if hi % self.steps:
            hi = hi + self.steps - hi % self.steps
        return BucketSettings(self.resolution, lo, hi, self.steps, self.no_upscale)

    def problems(self) -> list[str]:
        """What kohya would assert on for these settings (empty when fine)."""
        out = []
        if self.steps <= 0:
            return ["bucket_reso_steps must be positive"]
        adj = self.adjusted()
        if adj.min_reso <= 0:
            # kohya rounds min down to the step, then divides by it building buckets
            return [
                f"min_bucket_reso {self.min_reso} rounds down to 0 with bucket_reso_steps "
                f"{self.steps} (kohya fails building the buckets)"
            ]
        if min(self.resolution) < adj.min_reso:
            out.append(
                f"min_bucket_reso {adj.min_reso} is larger than the resolution {self.resolution}"
            )
        if max(self.resolution) > adj.max_reso:
            out.append(
                f"max_bucket_reso {adj.max_reso} is smaller than the resolution {self.resolution}"
            )
        return out


@lru_cache(maxsize=32)
def bucket_resolutions(
    resolution: tuple[int, int], min_reso: int, max_reso: int, steps: int
) -> tuple[tuple[int, int], ...]:
    """The fixed bucket list kohya makes when upscaling is allowed, sorted as kohya sorts it."""
    area = resolution[0] * resolution[1]
    # model_util.make_bucket_resolutions always adds the square bucket first
    found = {(int(math.sqrt(area) // steps) * steps,) * 2}
    # kohya rounds min_bucket_reso down to a multiple of the step; below one step its
    # loop would make 0-sided buckets (and divide by zero), so one step is the floor.
    floor = max(min_reso, steps)
    width = floor
    while width <= max_reso:
        height = min(max_reso, int((area // width) // steps) * steps)
        if height >= floor:
            found.add((width, height))
            found.add((height, width))
        width += steps
    # sorted as kohya sorts them: ties in aspect error go to the first
    return tuple(sorted(found))


def _round_to_steps(x: float, steps: int) -> int:
    # kohya's round_to_steps: round half up, then floor to the step
    n = int(x + 0.5)
    return n - n % steps


def _bucket_predefined(w: int, h: int, s: BucketSettings) -> tuple[int, int]:
    resos = bucket_resolutions(s.resolution, s.min_reso, s.max_reso, s.steps)
    # an exact fit needs no resize: kohya checks that before the aspect search
    if (w, h) in resos:
        return (w, h)
    aspect = w / h
    best, best_err = resos[0], math.inf
    for reso in resos:
        # strict < keeps the first of equal errors, as numpy's argmin does in kohya
        err = abs(reso[0] / reso[1] - aspect)
        if err < best_err:
            best, best_err = reso, err
    return best


def _bucket_no_upscale(w: int, h: int, s: BucketSettings) -> tuple[int, int]:
    area = s.resolution[0] * s.resolution[1]
    aspect = w / h
    if w * h > area:
        rw = math.sqrt(area * aspect)
        rh = area / rw
        bw = _round_to_steps(rw, s.steps)
        bh_w = _round_to_steps(bw / aspect, s.steps)
        bh = _round_to_steps(rh, s.steps)
        bw_h = _round_to_steps(bh * aspect, s.steps)
        ar_w = bw / bh_w if bh_w else math.inf
        ar_h = bw_h / bh if bh else math.inf
        # kohya tries snapping the width and snapping the height, and keeps whichever keeps the
        # aspect closer (BucketManager.select_bucket with no_upscale)
        if abs(ar_w - aspect) < abs(ar_h - aspect):
            size = (bw, int(bw / aspect + 0.5))
        else:
            size = (int(bh * aspect + 0.5), bh)
    else:
        size = (w, h)
    # floored to the step: the crop removes at most steps-1 pixels per side
    return (size[0] - size[0] % s.steps, size[1] - size[1] % s.steps)


def kohya_bucket_fails(w: int, h: int, settings: BucketSettings) -> bool:
    """True when kohya's select_bucket divides by zero for a w×h image.

    With bucket_no_upscale kohya rounds the fitted size down to bucket_reso_steps and
    then divides by a side (ar_width_rounded = b_width / b_height_in_wr, and
    ar_error = reso[0] / reso[1]): a side that rounds down to 0 stops the run with a
    ZeroDivisionError while the dataset is built -- e.g. a 128x96 image at resolution
    64, or at resolution 512 any image with a side under 64 px. (A 0 width passes that
    division and fails resizing the image to nothing.)
    """
    if w <= 0 or h <= 0 or settings.steps <= 0:
        return False
    s = settings.adjusted()
    if not s.no_upscale:
        return False
    area = s.resolution[0] * s.resolution[1]
    aspect = w / h
    if w * h > area:
        rw = math.sqrt(area * aspect)
        bw = _round_to_steps(rw, s.steps)
        bh = _round_to_steps(area / rw, s.steps)
        if _round_to_steps(bw / aspect, s.steps) == 0 or bh == 0:
            return True
    bucket = _bucket_no_upscale(w, h, s)
    # a 0 height divides (ar_error); a 0 width gives an empty resize a moment later
    return 0 in bucket


def bucket_for(
    w: int,
    h: int,
    *,
    resolution: int | tuple[int, int],
    min_reso: int = 256,
    max_reso: int = 1024,
    steps: int = 64,
    no_upscale: bool = False,
) -> tuple[int, int]:
    """The (width, height) bucket kohya puts a w×h image into."""
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    settings = BucketSettings((resolution[0], resolution[1]), min_reso, max_reso, steps, no_upscale)
    return select_bucket(w, h, settings)


def select_bucket(w: int, h: int, settings: BucketSettings) -> tuple[int, int]:
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    s = settings.adjusted()
    if s.no_upscale:
        return _bucket_no_upscale(w, h, s)
    return _bucket_predefined(w, h, s)


def crop_fraction(w: int, h: int, bucket: tuple[int, int]) -> float:
    """Share of the image kohya crops away to fill the bucket (0 when the aspects match)."""
    if bucket[0] <= 0 or bucket[1] <= 0:
        return 1.0
    a, b = w / h, bucket[0] / bucket[1]
    # the image is scaled to cover the bucket, so the share cut is 1 - the aspect ratio of ratios
    return 1.0 - min(a / b, b / a)


def bucket_key(bucket: tuple[int, int]) -> str:
    return f"{bucket[0]}x{bucket[1]}"


def steps_per_epoch(bucket_counts: Iterable[int], batch_size: int) -> int:
    """Batches never mix buckets: each bucket's samples make ceil(n / batch) steps."""
    batch = max(1, batch_size)
    # -(-n // b) is ceil(n / b) in integers
    return sum(-(-n // batch) for n in bucket_counts if n > 0)


def bucket_range(resolution: int, steps: int = 64) -> tuple[int, int]:
    """min/max bucket sides kohya accepts: multiples of steps around the resolution.

    The defaults `kohyagen config` renders (render_values) and `dataset check` assumes;
    kept here so that a check does not import the renderer."""
    # kohya asserts min_bucket_reso <= min(resolution) and max_bucket_reso >= max(resolution)
    return max(steps, (resolution // 2) // steps * steps), resolution * 2
