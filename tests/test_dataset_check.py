"""check_dataset: each defect is found exactly once, a clean dataset yields nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dataset_fixtures import (
    build_clean_dataset,
    build_defect_dataset,
    caption,
    noise,
    solid,
    truncate,
)
from PIL import Image

from kohyagen.dataset.check import check_dataset
from kohyagen.errors import DatasetError, PresetError, UsageError
from kohyagen.findings import Severity


def pairs(report, root: Path) -> set[tuple[str, str]]:
    return {(f.code, os.path.relpath(f.file, root)) for f in report.findings}


def test_each_defect_yields_exactly_the_expected_findings(tmp_path):
    train, reg, expected = build_defect_dataset(tmp_path)
    report = check_dataset(train, trigger="sks", caption_ext=".txt", reg=reg)
    assert pairs(report, train) == expected
    by_code = {f.code: f for f in report.findings}
    assert by_code["decompression-bomb"].severity is Severity.ERROR
    assert "30000x30000" in by_code["decompression-bomb"].message
    assert by_code["empty-caption"].severity is Severity.ERROR  # kohya asserts on it
    assert by_code["mode-palette"].severity is Severity.INFO
    assert by_code["repeated-tag"].key == "dog"
    assert all(f.fix for f in report.findings)
    assert report.errors and report.kind == "train_dir"
    assert {f.message for f in report.findings if f.code == "duplicate"} == {
        "same bytes as 10_sks dog/good1.png"
    }


def test_deep_check_of_the_defect_dataset(tmp_path):
    train, reg, expected = build_defect_dataset(tmp_path)
    report = check_dataset(train, trigger="sks", caption_ext=".txt", reg=reg, deep=True)
    # decoding adds nothing to find here (the damage is all visible in the structure), and
    # no two pictures are alike, so deep agrees with the fast check
    assert pairs(report, train) == expected


def test_clean_dataset_has_no_findings(tmp_path):
    root = build_clean_dataset(tmp_path / "train")
    report = check_dataset(root, trigger="sks", caption_ext=".txt", batch_size=2)
    assert report.findings == ()
    assert report.image_count == 16
    assert report.images_x_repeats == 160
    # kohyagen's configs set bucket_no_upscale: 512x640 is above the 512² area, so it is
    # scaled down to 410x512 and floored to 384x512 (worked by hand in the buckets test)
    assert report.buckets == {"384x512": 160}
    assert report.steps_per_epoch == 80
    assert report.bucket_settings.no_upscale
    assert (report.bucket_settings.min_reso, report.bucket_settings.max_reso) == (256, 1024)
    upscale = check_dataset(root, caption_ext=".txt", bucket_no_upscale=False)
    assert upscale.buckets == {"448x576": 160}  # 0.8 -> nearest bucket 448x576 (0.78)
    assert report.caption_extension == ".txt"
    assert report.tag_frequencies["sks"] == 16
    assert "low side" in report.size_advice  # 16: under the guide's 20-40
    deep = check_dataset(root, trigger="sks", caption_ext=".txt", deep=True)
    assert deep.findings == ()


def test_default_caption_extension_warning(tmp_path):
    root = build_clean_dataset(tmp_path / "train")
    report = check_dataset(root, trigger="sks")  # kohya would read .caption
    assert {f.code for f in report.findings} == {"caption-extension"}
    assert report.caption_extension == ".txt"  # the captions found, to configure kohya with
    assert '"' + ".txt" + '"' in report.findings[0].fix
    root2 = build_clean_dataset(tmp_path / "train2", ext=".caption")
    assert check_dataset(root2, trigger="sks").findings == ()
    mismatch = check_dataset(root2, trigger="sks", caption_ext=".txt")
    codes = {f.code for f in mismatch.findings}
    assert "caption-extension" in codes and "no-captions" in codes


def test_near_duplicates_need_pixels(tmp_path):
    sub = tmp_path / "train" / "5_x"
    a = noise(sub / "a.png", size=(512, 512), seed=1)
    im = Image.open(a).convert("RGB")
    im.point(lambda v: min(255, v + 4)).save(sub / "b.png")  # same picture, a bit brighter
    noise(sub / "c.png", size=(512, 512), seed=2)
    fast = check_dataset(tmp_path / "train")
    assert "near-duplicate" not in {f.code for f in fast.findings}
    assert any("--deep" in n for n in fast.notes)
    deep = check_dataset(tmp_path / "train", deep=True)
    near = [f for f in deep.findings if f.code == "near-duplicate"]
    assert [(Path(f.file).name, Path(a).name in f.message) for f in near] == [("b.png", True)]


def test_deep_finds_damage_inside_the_pixel_data(tmp_path):
    sub = tmp_path / "train" / "5_x"
    path = noise(sub / "img.png", size=(512, 512), seed=3)
    data = bytearray(path.read_bytes())
    pos = data.find(b"IDAT") + 200
    data[pos : pos + 8] = b"\xff" * 8  # damage, not truncation: the chunk structure holds
    path.write_bytes(bytes(data))
    fast = check_dataset(tmp_path / "train")
    assert not fast.errors
    deep = check_dataset(tmp_path / "train", deep=True)
    assert [(f.code, Path(f.file).name) for f in deep.errors] == [("decode-failed", "img.png")]


def test_opaque_alpha_is_only_info_when_decoded(tmp_path):
    sub = tmp_path / "train" / "5_x"
    sub.mkdir(parents=True)
    Image.new("RGBA", (600, 600), (10, 20, 30, 255)).save(sub / "a.png")
    fast = check_dataset(tmp_path / "train")
    deep = check_dataset(tmp_path / "train", deep=True)
    assert [f.severity for f in fast.findings if f.code == "alpha-channel"] == [Severity.WARNING]
    assert [f.severity for f in deep.findings if f.code == "alpha-channel"] == [Severity.INFO]


def test_pool_and_single_process_agree(tmp_path):
    sub = tmp_path / "train" / "3_many"
    for i in range(70):  # above the pool threshold
        solid(sub / f"i{i:02d}.png", size=(64 + i, 80))
    truncate(solid(tmp_path / "full.png", size=(300, 300)), sub / "t.png")
    one = check_dataset(tmp_path / "train", deep=True, workers=1)
    two = check_dataset(tmp_path / "train", deep=True, workers=2)
    assert one.findings == two.findings
    assert one.images == two.images
    assert ("truncated", "t.png") in {(f.code, Path(f.file).name) for f in two.findings}


def test_numbers_repeats_and_regularisation(tmp_path):
    train, reg = tmp_path / "train", tmp_path / "reg"
    for i in range(3):
        noise(train / "2_sks" / f"t{i}.png", size=(512, 512), seed=i)
    for i in range(2):
        noise(reg / "1_dog" / f"r{i}.png", size=(1024, 768), seed=50 + i)
    report = check_dataset(train, reg=reg)
    assert report.image_count == 3 and report.images_x_repeats == 6
    assert report.reg_image_count == 2
    # kohya cycles the 2 reg images until they match the 6 training samples: 3 each;
    # 1024x768 without upscaling shrinks to 512x384 (worked by hand in the buckets test)
    assert report.buckets == {"512x384": 6, "512x512": 6}
    assert report.steps_per_epoch == 12
    assert [s.is_reg for s in report.subsets] == [False, True]
    assert report.subsets[0].buckets == {"512x512": 3}


def test_image_folder_is_reported_as_such(tmp_path):
    for i in range(20):
        noise(tmp_path / f"p{i}.jpg", size=(512, 512), seed=i)
    report = check_dataset(tmp_path)
    assert report.kind == "image_folder"
    assert {f.code for f in report.findings} == {"image-folder"}
    assert report.image_count == 20 and report.images_x_repeats == 20


def test_pointing_at_the_subset_folder_itself(tmp_path):
    root = build_clean_dataset(tmp_path / "train")
    report = check_dataset(root / "10_sks", caption_ext=".txt")
    assert [(f.code, f.fix) for f in report.findings] == [
        ("subset-folder-given", f"check (and train on) {root}")
    ]


def test_a_folder_named_without_repeats_is_no_data(tmp_path):
    solid(tmp_path / "concept" / "a.png")
    report = check_dataset(tmp_path)
    assert {(f.code, Path(f.file).name) for f in report.findings} == {
        ("skipped-folder", "concept"),
        ("no-images", tmp_path.name),
    }


def test_trigger_in_class_tokens_counts_for_uncaptioned_images(tmp_path):
    for i in range(2):
        solid(tmp_path / "5_sks dog" / f"a{i}.png")
        solid(tmp_path / "5_dog" / f"b{i}.png")
    report = check_dataset(tmp_path, trigger="sks")
    trig = {Path(f.file).name for f in report.findings if f.code == "trigger-missing"}
    assert trig == {"5_dog"}


def test_model_minimum_side(tmp_path):
    solid(tmp_path / "5_x" / "a.png", size=(800, 800))
    assert "too-small" not in {f.code for f in check_dataset(tmp_path, model="sd2").findings}
    assert "too-small" in {f.code for f in check_dataset(tmp_path, model="sdxl").findings}


def test_bad_arguments_raise_usage_errors(tmp_path):
    with pytest.raises(PresetError, match="sd9"):
        check_dataset(tmp_path, model="sd9")
    with pytest.raises(UsageError):
        check_dataset(tmp_path, batch_size=0)
    with pytest.raises(DatasetError):
        check_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError):
        check_dataset(tmp_path, reg=tmp_path / "nope")


def test_report_to_dict_is_json_ready(tmp_path):
    import json

    root = build_clean_dataset(tmp_path / "t", n=2)
    caption(root / "10_sks" / "orphan.txt", "x")
    data = json.loads(json.dumps(check_dataset(root, caption_ext=".txt").to_dict()))
    assert data["counts"]["warning"] >= 2
    assert data["findings"][0]["severity"] in ("error", "warning", "info")
    assert data["images"][0]["bucket"] == "384x512"
    assert data["bucket_settings"]["resolution"] == [512, 512]


def crash_on_marked_file(path: str, **kw):
    """Stands in for probe_image in worker processes: dies like a crashing C decoder."""
    from kohyagen.dataset.images import probe_image

    if path.endswith("crash.png"):
        os._exit(1)
    return probe_image(path, **kw)


def test_a_worker_crash_is_pinned_on_its_file(tmp_path, monkeypatch):
    import kohyagen.dataset.probe_pool as pool_mod

    sub = tmp_path / "3_many"
    for i in range(70):
        solid(sub / f"i{i:02d}.png", size=(64, 64))
    solid(sub / "crash.png", size=(64, 64))
    monkeypatch.setattr(pool_mod, "probe_image", crash_on_marked_file)
    probes = pool_mod.probe_many([str(p) for p in sorted(sub.iterdir())], deep=True, workers=2)
    bad = [(Path(p.path).name, p.error) for p in probes if p.error]
    assert bad == [("crash.png", "unreadable")]
    assert len(probes) == 71


def test_regularisation_folder_without_subsets(tmp_path):
    build_clean_dataset(tmp_path / "train")
    solid(tmp_path / "reg" / "dog.png")  # not inside an N_class/ folder
    report = check_dataset(tmp_path / "train", caption_ext=".txt", reg=tmp_path / "reg")
    assert {(f.code, Path(f.file).name) for f in report.findings} == {
        ("reg-no-images", "reg"),
        ("loose-image", "dog.png"),
    }


def test_bucket_settings_kohya_would_stop_on_are_an_error_finding(tmp_path):
    # min_bucket_reso 32 rounds down to 0 with 64-pixel steps: kohya fails building buckets
    root = build_clean_dataset(tmp_path / "train", n=2)
    report = check_dataset(root, caption_ext=".txt", min_bucket_reso=32)
    found = [f for f in report.findings if f.code == "bucket-settings"]
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert found[0].key == "min_bucket_reso/max_bucket_reso"
    assert found[0].fix == "fix the bucket options" and "rounds down to 0" in found[0].message


def test_to_dict_is_the_dataclass_as_plain_data(tmp_path):
    """to_dict builds the dict field by field (speed); it must say what asdict says."""
    import dataclasses
    import json

    train, reg, _ = build_defect_dataset(tmp_path)
    report = check_dataset(train, trigger="sks", caption_ext=".txt", reg=reg)
    expected = dataclasses.asdict(report)
    expected["findings"] = [f.to_dict() for f in report.findings]
    expected["bucket_settings"]["resolution"] = list(report.bucket_settings.resolution)
    expected["counts"] = {s.value: sum(f.severity is s for f in report.findings) for s in Severity}
    data = report.to_dict()
    assert list(data) == list(expected) and data["images"]
    assert json.dumps(data, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_the_training_folder_is_no_regularisation_folder(tmp_path):
    root = tmp_path / "train"
    (root / "10_sks").mkdir(parents=True)
    Image.new("RGB", (512, 512)).save(root / "10_sks" / "a.png")
    for reg in (root, tmp_path / "train" / "." / "10_sks" / ".."):
        with pytest.raises(UsageError, match="regularisation folder is the training folder"):
            check_dataset(root, reg=reg)


def test_a_caption_kohya_cannot_read_is_not_counted_as_captioned(tmp_path):
    folder = tmp_path / "train" / "10_sks"
    folder.mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (512, 512)).save(folder / f"{name}.png")
    (folder / "a.txt").write_text("sks, red\n")
    (folder / "b.txt").write_bytes(b"\xff\xfe\x00bad utf-8 \xc3")
    os.mkfifo(folder / "c.txt")
    report = check_dataset(tmp_path / "train", caption_ext=".txt")
    assert report.subsets[0].captioned == 1
    codes = {f.code for f in report.findings}
    assert {"caption-not-utf8", "unreadable"} <= codes
