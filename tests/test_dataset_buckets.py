"""kohya's bucketing, against buckets computed by hand from its rules."""

from __future__ import annotations

import pytest

from kohyagen.dataset.buckets import (
    BucketSettings,
    bucket_for,
    bucket_resolutions,
    crop_fraction,
    select_bucket,
    steps_per_epoch,
)

# Worked by hand for resolution 512 (area 262144), min 256, max 1024, step 64: the square
# floor(sqrt(area)/64)*64 = 512, then for each width w = 256, 320, ... 1024 the height
# min(1024, (262144 // w) // 64 * 64), kept when >= 256, and its transpose.
SD15_BUCKETS = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640),
    (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256),
    (896, 256), (960, 256), (1024, 256),
]  # fmt: skip


def test_sd15_bucket_list_matches_hand_computation():
    assert list(bucket_resolutions((512, 512), 256, 1024, 64)) == SD15_BUCKETS


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((512, 512), (512, 512)),  # exact square
        ((448, 576), (448, 576)),  # exact bucket size wins before any aspect comparison
        ((1024, 768), (576, 448)),  # 1.333: 576/448=1.286 is nearest (512/512 and 640/384 farther)
        ((768, 1024), (448, 576)),
        ((1920, 1080), (640, 384)),  # 1.778: 640/384=1.667 beats 704/320=2.2
        ((3000, 1000), (832, 256)),  # 3.0: 832/256=3.25 beats 768/320=2.4 and 896/256=3.5
        ((520, 600), (448, 576)),  # 0.867: 448/576=0.778 beats 1.0
        ((64, 64), (512, 512)),  # small images are upscaled into a bucket
        ((10000, 100), (1024, 256)),  # beyond the most extreme bucket: the most extreme one
    ],
)
def test_sd15_buckets(size, bucket):
    assert bucket_for(*size, resolution=512) == bucket


def test_sdxl_buckets():
    # area 1048576; w=768 gives h=(1048576//768)//64*64=1344, so 1344x768 is a bucket
    assert bucket_for(1344, 768, resolution=1024, max_reso=2048) == (1344, 768)
    # 1.778: 1344/768=1.75 is nearest (1280/768=1.667, 1472/704=2.09)
    assert bucket_for(1600, 900, resolution=1024, max_reso=2048) == (1344, 768)
    assert bucket_for(1024, 1024, resolution=1024, max_reso=2048) == (1024, 1024)


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        # smaller than the area: no resize, each side floored to 64
        ((300, 200), (256, 192)),
        ((512, 512), (512, 512)),
        # 1024x768 (1.333) scaled to area 262144: 591.2 x 443.4. Width rounded to 576 gives
        # height 384 (1.5); height rounded to 384 gives width 512 (1.333, exact) -> 512x384
        ((1024, 768), (512, 384)),
        # 512x640 (0.8) scaled to the area: 457.9 x 572.4. Width 448 gives height 512 (0.875);
        # height 512 gives width 384 (0.75, closer) -> resized 410x512 -> floored 384x512
        ((512, 640), (384, 512)),
        # 4:1 scaled to the area is exactly 1024x256
        ((4000, 1000), (1024, 256)),
    ],
)
def test_no_upscale_buckets(size, bucket):
    assert bucket_for(*size, resolution=512, no_upscale=True) == bucket


def test_min_max_are_snapped_to_steps_as_kohya_does():
    s = BucketSettings((512, 512), 250, 1000, 64).adjusted()
    assert (s.min_reso, s.max_reso) == (192, 1024)
    assert BucketSettings((512, 512), 250, 1000, 64).problems() == []
    assert BucketSettings((512, 512), 640, 1024, 64).problems()  # min above resolution
    assert BucketSettings((1024, 1024), 256, 768, 64).problems()  # max below resolution


def test_steps_per_epoch_never_mixes_buckets():
    assert steps_per_epoch([10, 3], 4) == 3 + 1
    assert steps_per_epoch([10, 3], 1) == 13
    assert steps_per_epoch([0, 8], 4) == 2


def test_crop_fraction():
    assert crop_fraction(512, 512, (512, 512)) == 0
    assert crop_fraction(1000, 500, (512, 512)) == pytest.approx(0.5)


def test_select_bucket_rejects_empty_sizes():
    with pytest.raises(ValueError):
        select_bucket(0, 10, BucketSettings())


def test_min_bucket_reso_below_one_step_makes_no_empty_buckets():
    # kohya rounds min_bucket_reso=32 down to 0 with 64-pixel steps
    from kohyagen.dataset.buckets import bucket_resolutions

    resos = bucket_resolutions((64, 64), 0, 128, 64)
    assert resos and all(w >= 64 and h >= 64 for w, h in resos)
    assert bucket_for(128, 96, resolution=64, min_reso=32, max_reso=128, steps=64) == (64, 64)
