"""A small reader of TensorBoard event files, without the tensorboard package.

An event file is a sequence of TFRecords (tfrecord.py: the length, the payload and their
CRC-32C); writing one is event_writer.py's. Each payload is a protobuf `Event`
(wall_time = 1, step = 2, summary = 5); a `Summary` holds repeated
`Value`s (tag = 1, simple_value = 2, tensor = 8). Scalars come either as simple_value
(what torch's SummaryWriter and accelerate write) or as a rank-0 `TensorProto`
(what TF2-style writers produce). Only scalars are decoded; everything else is skipped.

A file still being written ends in a partial record: reading stops there quietly.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohyagen.report.tfrecord import read_records

EVENT_FILE_GLOB = "events.out.tfevents.*"


@dataclass(frozen=True)
class ScalarEvent:
    tag: str
    step: int
    wall_time: float
    value: float


# --- protobuf wire format ------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        # protobuf varints: 7 bits per byte, low group first, high bit = more
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        # ten bytes hold 64 bits: anything longer is not a varint but garbage
        if shift > 70:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): ints for varint/fixed, bytes for length-delimited."""
    # The value's type follows the wire type, which callers check before using it: Any,
    # since no static type can tie the two together.
    pos, end = 0, len(buf)
    value: int | bytes
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        # a length that runs past the buffer: a torn record, reported to the caller
        if pos > end:
            raise ValueError("truncated field")
        yield number, wire, value


# TensorProto dtypes that a scalar may use, with struct formats for tensor_content.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_BFLOAT16, DT_HALF = 1, 2, 3, 9, 14, 19
_CONTENT_FORMAT = {DT_FLOAT: "<f", DT_DOUBLE: "<d", DT_INT32: "<i", DT_INT64: "<q"}


def _packed(values: Any, wire: int, fmt: str) -> list[float]:
    if wire == 2:  # packed repeated
        data = bytes(values)
        size = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, data, i)[0] for i in range(0, len(data) - size + 1, size)]
    if wire in (1, 5):
        return [struct.unpack(fmt, values)[0]]
    return [float(values)]


def _packed_varints(values: Any, wire: int) -> list[int]:
    if wire != 2:
        return [int(values)]
    data, pos, out = bytes(values), 0, []
    while pos < len(data):
        value, pos = _varint(data, pos)
        out.append(value)
    return out


def _bfloat16(bits: int) -> float:
    # bfloat16 is the top half of a float32
    return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def _half(bits: int) -> float:
    return struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0]


def _tensor_scalar(buf: bytes) -> float | None:
    """The single number held by a TensorProto, or None when it is not one number."""
    dtype = 0
    content = b""
    values: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype = int(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += _packed(value, wire, "<f")
        elif number == 6:
            values += _packed(value, wire, "<d")
        elif number in (7, 10):  # int_val / int64_val (zigzag is not used for these)
            values += [
                struct.unpack("<q", struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF))[0]
                for v in _packed_varints(value, wire)
            ]
        elif number == 13:  # half_val holds fp16 / bf16 bit patterns
            convert = _bfloat16 if dtype == DT_BFLOAT16 else _half
            values += [convert(v) for v in _packed_varints(value, wire)]
    if content:
        if dtype in _CONTENT_FORMAT:
            fmt = _CONTENT_FORMAT[dtype]
            if len(content) != struct.calcsize(fmt):
                return None
            return float(struct.unpack(fmt, content)[0])
        if dtype in (DT_HALF, DT_BFLOAT16) and len(content) == 2:
            bits = struct.unpack("<H", content)[0]
            return _bfloat16(bits) if dtype == DT_BFLOAT16 else _half(bits)
        return None
    # only a rank-0 tensor is a scalar; a vector is skipped
    return float(values[0]) if len(values) == 1 else None


def _summary_scalars(buf: bytes) -> Iterator[tuple[str, float]]:
    for number, _wire, value in _fields(buf):
        if number != 1:
            continue
        tag, scalar = "", None
        for f_number, f_wire, f_value in _fields(bytes(value)):
            if f_number == 1:
                tag = bytes(f_value).decode("utf-8", "replace")
            # simple_value is what kohya's tracker (accelerate's TensorBoard) writes
            elif f_number == 2 and f_wire == 5:
                scalar = struct.unpack("<f", f_value)[0]
            elif f_number == 8 and f_wire == 2:
                scalar = _tensor_scalar(bytes(f_value))
        if tag and scalar is not None:
            yield tag, float(scalar)


def read_scalars(path: str | Path, *, check_crc: bool = False) -> list[ScalarEvent]:
    """Every scalar in one event file, in file order.

    check_crc also verifies each payload's checksum (slow in pure Python; the length
    checksum, always verified, already catches torn and foreign files).
    """
    data = Path(path).read_bytes()
    events: list[ScalarEvent] = []
    for record in read_records(data, check_crc=check_crc):
        wall_time, step, summary = 0.0, 0, None
        try:
            for number, wire, value in _fields(record):
                if number == 1 and wire == 1:
                    wall_time = struct.unpack("<d", value)[0]
                elif number == 2 and wire == 0:
                    # int64 in a varint: reinterpret as signed
                    step = struct.unpack("<q", struct.pack("<Q", int(value)))[0]
                elif number == 5 and wire == 2:
                    summary = bytes(value)
            if summary is not None:
                events += [
                    ScalarEvent(tag, step, wall_time, value)
                    for tag, value in _summary_scalars(summary)
                ]
        except (ValueError, struct.error):
            continue  # one undecodable record does not spoil the rest
    return events


def find_event_files(logging_dir: str | Path, *, newer_than: float | None = None) -> list[Path]:
    """Event files under a logging_dir, oldest first (by the unix time in the file name).

    newer_than keeps only files written to at or after that unix time, so that a report
    reads the successful attempt and not an earlier one that ran out of memory (two
    attempts in the same second share kohya's timestamped folder).
    """
    root = Path(logging_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.rglob(EVENT_FILE_GLOB):
        if not path.is_file():
            continue
        # a hundredth of a second of slack for filesystems that round modification times
        if newer_than is not None and path.stat().st_mtime < newer_than - 0.01:
            continue
        found.append((_created_at(path), str(path), path))
    return [item[2] for item in sorted(found)]


def _created_at(path: Path) -> float:
    # the writer puts its start time in the name; mtime only says when it was last written
    match = re.match(r"events\.out\.tfevents\.(\d+)", path.name)
    if match:
        return float(match.group(1))
    return path.stat().st_mtime


def scalars_by_tag(events: Iterable[ScalarEvent]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)], sorted by step; a later write for the same step wins."""
    table: dict[str, dict[int, float]] = {}
    for event in events:
        # kohya logs every micro-batch at the same global_step with gradient accumulation: the
        # last one written is the step's value, as TensorBoard's own reader keeps it
        table.setdefault(event.tag, {})[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in table.items()}
