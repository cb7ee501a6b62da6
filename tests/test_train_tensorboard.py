"""The TensorBoard event reader, on real kohya event files and on edge cases."""

from __future__ import annotations

import json
import math
import struct

import pytest

from kohyagen.report.event_writer import EventFileWriter, encode_scalar_event
from kohyagen.report.tensorboard import find_event_files, read_scalars, scalars_by_tag
from kohyagen.report.tfrecord import crc32c, frame_record


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("run", ["run_A", "run_B"])
def test_reads_real_kohya_event_files_exactly(shared_dir, run):
    root = shared_dir / "kohya" / "samples" / run
    files = find_event_files(root / "tensorboard")
    assert len(files) == 1
    expected = next(iter(json.loads((root / "tensorboard_scalars.json").read_text()).values()))
    got = scalars_by_tag(read_scalars(files[0], check_crc=True))
    assert set(got) == set(expected["scalars"])
    for tag, points in expected["scalars"].items():
        assert got[tag] == [(p["step"], p["value"]) for p in points], tag


def test_run_b_has_validation_tags_with_epoch_steps(shared_dir):
    files = find_event_files(shared_dir / "kohya" / "samples" / "run_B" / "tensorboard")
    tags = scalars_by_tag(read_scalars(files[0]))
    assert [s for s, _ in tags["loss/validation/epoch_average"]] == [1, 2]
    assert tags["loss/epoch_average"][1][1] == pytest.approx(1.0408, abs=1e-4)


def test_simple_and_tensor_scalars_round_trip(tmp_path):
    writer = EventFileWriter(tmp_path / "logs" / "x_20260101000000" / "network_train")
    writer.add_scalar("loss/current", 0.5, 1, wall_time=10.0)
    writer.add_scalar("loss/current", 0.25, 2, wall_time=11.0, as_tensor=True)
    writer.add_scalar("loss/current", float("nan"), 3, wall_time=12.0)
    events = read_scalars(writer.path, check_crc=True)
    assert [(e.tag, e.step, e.wall_time) for e in events][:2] == [
        ("loss/current", 1, 10.0),
        ("loss/current", 2, 11.0),
    ]
    assert events[0].value == 0.5 and events[1].value == 0.25
    assert math.isnan(events[2].value)
    assert find_event_files(tmp_path / "logs") == [writer.path]


def _tensor_event(tag: str, tensor: bytes, step: int) -> bytes:
    def key(n, w):
        return bytes([(n << 3) | w])

    def ld(n, payload):
        return key(n, 2) + bytes([len(payload)]) + payload

    value = ld(1, tag.encode()) + ld(8, tensor)
    return key(1, 1) + struct.pack("<d", 1.0) + key(2, 0) + bytes([step]) + ld(5, ld(1, value))


@pytest.mark.parametrize(
    ("tensor", "expected"),
    [
        (b"\x08\x01" + b"\x2a\x00" + b"\x2d" + struct.pack("<f", 1.5), 1.5),  # float_val (fixed32)
        (b"\x08\x02" + b"\x32\x08" + struct.pack("<d", 2.25), 2.25),  # packed double_val
        (b"\x08\x02" + b"\x22\x08" + struct.pack("<d", 3.5), 3.5),  # tensor_content double
        (b"\x08\x13" + b"\x22\x02" + struct.pack("<e", 0.5), 0.5),  # half tensor_content
        (b"\x08\x09" + b"\x50\x07", 7.0),  # int64_val
        (b"\x08\x01" + b"\x22\x08" + struct.pack("<2f", 1, 2), None),  # not a scalar
    ],
)
def test_tensor_encoded_scalars(tmp_path, tensor, expected):
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(frame_record(_tensor_event("t", tensor, 4)))
    events = read_scalars(path)
    if expected is None:
        assert events == []
    else:
        assert [(e.tag, e.step, e.value) for e in events] == [("t", 4, expected)]


def test_partial_last_record_and_garbage_stop_quietly(tmp_path):
    good = frame_record(encode_scalar_event("a", 1.0, 1, 1.0))
    second = frame_record(encode_scalar_event("a", 2.0, 2, 2.0))
    path = tmp_path / "events.out.tfevents.5.h"
    path.write_bytes(good + second[: len(second) - 3])  # still being written
    assert [e.value for e in read_scalars(path)] == [1.0]
    path.write_bytes(good + b"not a record at all....")
    assert [e.value for e in read_scalars(path)] == [1.0]
    corrupted = bytearray(good + second)
    corrupted[len(good) + 14] ^= 0xFF  # payload byte of the second record
    path.write_bytes(bytes(corrupted))
    assert [e.value for e in read_scalars(path, check_crc=True)] == [1.0]


def test_find_event_files_orders_and_filters_by_time(tmp_path):
    import os

    old = tmp_path / "p_1" / "network_train" / "events.out.tfevents.100.h.1.0"
    new = tmp_path / "p_2" / "network_train" / "events.out.tfevents.200.h.2.0"
    for path in (new, old):
        path.parent.mkdir(parents=True)
        path.write_bytes(frame_record(encode_scalar_event("a", 1.0, 1, 1.0)))
    os.utime(old, (1000, 1000))
    os.utime(new, (2000, 2000))
    assert find_event_files(tmp_path) == [old, new]
    assert find_event_files(tmp_path, newer_than=1500) == [new]
    assert find_event_files(tmp_path / "missing") == []


def test_last_write_for_a_step_wins():
    from kohyagen.report.tensorboard import ScalarEvent

    table = scalars_by_tag(
        [ScalarEvent("a", 2, 0, 1.0), ScalarEvent("a", 1, 0, 5.0), ScalarEvent("a", 2, 0, 3.0)]
    )
    assert table == {"a": [(1, 5.0), (2, 3.0)]}
