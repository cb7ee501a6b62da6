"""What goes into a caption: order, thresholds, underscores, trigger, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from test_tag_helpers import (
    BLACK,
    BLUE,
    CYAN,
    GREEN,
    RED,
    WHITE,
    expected_scores,
    make_tagger,
    read_tags,
    solid,
)

from kohyagen.tagging.captions import (
    CaptionOptions,
    TagSelector,
    display_tag,
    merge_tags,
    split_tags,
    tag_key,
)
from kohyagen.tagging.directory import tag_directory
from kohyagen.tagging.images import load_square_rgb
from kohyagen.tagging.models import load_tags


@pytest.fixture
def tagger(tmp_path):
    return make_tagger(tmp_path / "tagger")


def tag_one(tmp_path, tagger, color, size=(32, 32), mode="RGB", **options):
    folder = tmp_path / "images"
    image = solid(folder / "img.png", color, size=size, mode=mode)
    result = tag_directory(folder, model=tagger, mode="overwrite", **options)
    assert result.tagged == 1, result
    return read_tags(image.with_suffix(".txt"))


def test_general_tags_by_confidence_not_csv_order(tmp_path, tagger):
    # CSV order is long_hair, 1girl, solo; confidences 0.881, 0.993, 0.971.
    assert tag_one(tmp_path, tagger, RED) == ["1girl", "solo", "long hair"]


def test_channel_order_is_bgr(tmp_path, tagger):
    # The model reads channel 0 as blue: a red picture must not look blue to it.
    tags = tag_one(tmp_path, tagger, RED)
    assert "blue sky" not in tags and "kirisame marisa" not in tags
    assert tag_one(tmp_path, tagger, BLUE) == ["kirisame marisa", "blue sky"]


def test_characters_before_general_and_no_crash_when_they_pass(tmp_path, tagger):
    # kohya's own tagger dies with UnboundLocalError as soon as a character tag passes.
    tags = tag_one(tmp_path, tagger, CYAN)
    assert tags == ["hatsune miku", "kirisame marisa", "^_^", "blue sky"]


def test_general_threshold(tmp_path, tagger):
    assert tag_one(tmp_path, tagger, RED, threshold=0.9) == ["1girl", "solo"]
    assert tag_one(tmp_path, tagger, RED, threshold=0.98) == ["1girl"]
    assert tag_one(tmp_path, tagger, RED, threshold=1.0) == [""]  # above 1 is refused (issue 15)


def test_character_threshold_separate_from_general(tmp_path, tagger):
    # kirisame_marisa scores 0.881 on blue.
    assert "kirisame marisa" in tag_one(tmp_path, tagger, BLUE, character_threshold=0.85)
    tags = tag_one(tmp_path, tagger, BLUE, character_threshold=0.9, threshold=0.1)
    assert "kirisame marisa" not in tags and "blue sky" in tags


def test_underscores_replaced_except_short_emoticons(tmp_path, tagger):
    assert tag_one(tmp_path, tagger, GREEN) == ["^_^"]
    assert "long hair" in tag_one(tmp_path, tagger, RED)
    kept = tag_one(tmp_path, tagger, RED, keep_underscores=True)
    assert kept == ["1girl", "solo", "long_hair"]


def test_trigger_first_and_not_repeated(tmp_path, tagger):
    assert tag_one(tmp_path, tagger, RED, trigger="sks woman")[0] == "sks woman"
    # A trigger that is also a predicted tag appears once, in front.
    assert tag_one(tmp_path, tagger, RED, trigger="solo") == ["solo", "1girl", "long hair"]


def test_always_first_only_when_predicted_in_given_order(tmp_path, tagger):
    tags = tag_one(
        tmp_path, tagger, RED, trigger="sks", always_first=("long_hair", "solo", "blue sky")
    )
    assert tags == ["sks", "long hair", "solo", "1girl"]


def test_undesired_tags_either_spelling(tmp_path, tagger):
    tags = tag_one(tmp_path, tagger, RED, undesired_tags=("long_hair", "Solo"))
    assert tags == ["1girl"]
    tags = tag_one(tmp_path, tagger, CYAN, undesired_tags=("hatsune miku",))
    assert tags == ["kirisame marisa", "^_^", "blue sky"]


def test_rating_is_the_top_rating_tag(tmp_path, tagger):
    assert tag_one(tmp_path, tagger, RED, rating=True, trigger="sks")[:2] == ["sks", "explicit"]
    assert tag_one(tmp_path, tagger, BLACK, rating=True) == ["general"]
    # Without --rating no rating tag is written, even one above the threshold.
    assert "explicit" not in tag_one(tmp_path, tagger, RED)


def test_transparency_is_composited_on_white(tmp_path, tagger):
    tags = tag_one(tmp_path, tagger, (0, 0, 0, 0), mode="RGBA")
    # On black it would have no tag at all.
    assert "simple background" in tags
    assert tags == tag_one(tmp_path, tagger, WHITE)


def test_padding_is_white(tmp_path, tagger):
    # A tall red image padded on white has channel means R=1, G=B=0.5: ^_^ and
    # blue_sky score exactly 0.5; black padding would give them 0.007.
    scores = expected_scores((255, 127.5, 127.5))
    assert scores["^_^"] == pytest.approx(0.5)
    tags = tag_one(tmp_path, tagger, RED, size=(32, 64), threshold=0.45)
    assert "^_^" in tags and "blue sky" in tags
    tags = tag_one(tmp_path, tagger, RED, size=(256, 64), threshold=0.55)
    assert "^_^" in tags  # wide: 3/4 of the square is white


def test_load_square_rgb_centres_and_resizes():
    from PIL import Image

    def run(size, target):
        import tempfile
        from pathlib import Path

        path = Path(tempfile.mkdtemp()) / "x.png"
        Image.new("RGB", size, RED).save(path)
        return load_square_rgb(path, target)

    out = run((40, 20), 32)  # downscale: 32x16 centred in 32x32
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    red_rows = np.flatnonzero((out[:, 16] == RED).all(axis=1))
    assert red_rows.min() == 8 and red_rows.max() == 23
    assert (out[:8] == 255).all() and (out[24:] == 255).all()
    out = run((10, 20), 40)  # upscale: 20x40 centred
    red_cols = np.flatnonzero((out[20] == RED).all(axis=1))
    assert red_cols.min() == 10 and red_cols.max() == 29
    assert (out[:, :10] == 255).all()


def test_large_jpeg_decoded_at_reduced_scale_keeps_geometry(tmp_path, tagger):
    from PIL import Image

    path = tmp_path / "big" / "photo.jpg"
    path.parent.mkdir()
    Image.new("RGB", (2000, 1000), RED).save(path, quality=95)
    out = load_square_rgb(path, 32)
    assert out.shape == (32, 32, 3)
    red_rows = np.flatnonzero(out[:, 16, 1] < 50)  # red, not white
    assert (red_rows.min(), red_rows.max()) == (8, 23)
    assert (out[:7] == 255).all()
    tag_directory(path.parent, model=tagger)
    assert read_tags(path.with_suffix(".txt"))[:3] == ["1girl", "solo", "long hair"]


def test_grayscale_and_palette_images(tmp_path, tagger):
    from PIL import Image

    folder = tmp_path / "modes"
    folder.mkdir()
    Image.new("L", (32, 32), 255).save(folder / "gray.png")
    Image.new("RGB", (32, 32), GREEN).convert("P").save(folder / "pal.png")
    Image.new("RGB", (32, 32), WHITE).save(folder / "photo.jpg", quality=95)
    result = tag_directory(folder, model=tagger)
    assert result.tagged == 3
    white = read_tags(folder / "gray.txt")
    assert "simple background" in white
    assert read_tags(folder / "pal.txt") == ["^_^"]
    assert read_tags(folder / "photo.txt") == white


def test_selector_directly(tmp_path, tagger):
    tags = load_tags(tagger / "selected_tags.csv")
    selector = TagSelector(tags, CaptionOptions(threshold=0.5, character_threshold=0.5))
    probs = np.zeros(len(tags), dtype=np.float32)
    probs[[4, 5, 11]] = [0.9, 0.6, 0.7]  # long_hair, 1girl, kirisame_marisa
    assert selector.select(probs) == ["kirisame marisa", "long hair", "1girl"]
    probs[5] = 0.9  # a tie keeps the tag list's order
    assert selector.select(probs) == ["kirisame marisa", "long hair", "1girl"]


def test_caption_helpers():
    assert display_tag("^_^", False) == "^_^"
    assert display_tag("x_x", False) == "x_x"
    assert display_tag("long_hair", False) == "long hair"
    assert display_tag("long_hair", True) == "long_hair"
    assert tag_key("Long_Hair ") == tag_key("long hair")
    assert split_tags("a, b,,c\nd, ") == ["a", "b", "c", "d"]
    assert merge_tags(["a", "long_hair"], ["sks", "long hair", "b"], "sks") == [
        "sks",
        "a",
        "long_hair",
        "b",
    ]
    assert merge_tags(["sks", "a"], ["sks", "b"], "sks") == ["sks", "a", "b"]
