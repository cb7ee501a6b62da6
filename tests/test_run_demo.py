"""kohyagen demo: the generated dataset, and the whole pipeline offline on the CPU."""

from __future__ import annotations

from kohyagen.run.demo import TRIGGER, make_demo_dataset


def test_demo_dataset_has_matching_captions(tmp_path):
    from PIL import Image

    images = make_demo_dataset(tmp_path, count=6)
    assert len(images) == 6
    for image in images:
        caption = image.with_suffix(".txt").read_text()
        color, shape = image.stem.split("_")[1:]
        assert caption.startswith(f"{TRIGGER}, {color} {shape}")
        with Image.open(image) as im:
            assert im.size[0] >= 64 and im.mode == "RGB"
    # the shapes really differ: not every image is the same picture
    assert len({Image.open(p).tobytes() for p in images}) == 6
    # a second call keeps what is there
    before = images[0].stat().st_mtime_ns
    make_demo_dataset(tmp_path, count=6)
    assert images[0].stat().st_mtime_ns == before
