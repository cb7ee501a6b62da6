"""The builtin trainer buckets images exactly where `dataset check` says kohya puts them."""

from __future__ import annotations

import pytest

from kohyagen.dataset.buckets import bucket_for

pytest.importorskip("torch")


@pytest.mark.parametrize("no_upscale", [False, True])
@pytest.mark.parametrize("resolution", [(512, 512), (768, 512)])
def test_trainer_bucket_matches_dataset_check(no_upscale, resolution):
    from kohyagen.trainer.data import make_buckets, select_bucket

    buckets = make_buckets(resolution, 256, 1024, 64)
    for w in range(100, 2200, 53):
        for h in range(100, 2200, 61):
            expected = bucket_for(w, h, resolution=resolution, no_upscale=no_upscale)
            got = select_bucket(
                (w, h), buckets, max_reso=resolution, steps=64, no_upscale=no_upscale
            )
            assert got == expected, (w, h)


def test_trainer_bucket_of_a_tall_thin_image_keeps_kohyas_aspect_choice():
    from kohyagen.trainer.data import make_buckets, select_bucket

    buckets = make_buckets((512, 512), 256, 1024, 64)
    # kohya scales 174x1535 to 128x1129 and crops to 128x1088 (not 128x1472)
    assert select_bucket((174, 1535), buckets, max_reso=(512, 512), steps=64, no_upscale=True) == (
        128,
        1088,
    )


def test_trainer_caption_not_utf8_is_a_dataset_error(tmp_path):
    from kohyagen.errors import DatasetError
    from kohyagen.trainer.config import SubsetSpec
    from kohyagen.trainer.data import read_caption

    image = tmp_path / "a.png"
    image.write_bytes(b"")
    (tmp_path / "a.txt").write_bytes("sks".encode("utf-16"))
    subset = SubsetSpec(tmp_path, 1, "sks", ".txt")
    with pytest.raises(DatasetError) as info:
        read_caption(image, subset)
    assert info.value.path == tmp_path / "a.txt" and "UTF-8" in str(info.value)


def test_min_bucket_reso_below_one_step_is_a_clean_error(tmp_path):
    from kohyagen.dataset.buckets import BucketSettings

    problems = BucketSettings((64, 64), 32, 128, 64).problems()
    assert problems and "rounds" in problems[0]


def test_trainer_refuses_a_min_bucket_reso_kohya_rounds_to_zero(tmp_path):
    from PIL import Image

    from kohyagen.errors import DatasetError
    from kohyagen.trainer.config import load_config
    from kohyagen.trainer.data import prepare
    from tests.trainer_helpers import write_config

    sub = tmp_path / "data" / "1_sks"
    sub.mkdir(parents=True)
    Image.new("RGB", (128, 96)).save(sub / "a.png")
    config = write_config(
        tmp_path, tmp_path / "model", data=tmp_path / "data", enable_bucket=True,
        min_bucket_reso=32, max_bucket_reso=128,
    )  # fmt: skip
    with pytest.raises(DatasetError, match="min_bucket_reso"):
        prepare(load_config(config).datasets[0])
