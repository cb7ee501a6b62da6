"""Writing TensorBoard event files (used by tests and tools; kohya and the builtin trainer
write their own).

Kept apart from tensorboard.py, the reader a report uses: nothing in a report writes events.
The Event layout written here is the one the reader decodes (see tensorboard.py).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from kohyagen.report.tensorboard import DT_FLOAT
from kohyagen.report.tfrecord import frame_record

# --- protobuf encoding: only the field kinds an Event holding one scalar needs ------------


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def encode_scalar_event(
    tag: str, value: float, step: int, wall_time: float, *, as_tensor: bool = False
) -> bytes:
    """One Event holding one scalar, as simple_value or as a rank-0 float tensor."""
    if as_tensor:
        tensor = (
            _key(1, 0) + _encode_varint(DT_FLOAT) + _length_delimited(4, struct.pack("<f", value))
        )
        summary_value = _length_delimited(1, tag.encode()) + _length_delimited(8, tensor)
    else:
        summary_value = _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value)
    summary = _length_delimited(1, summary_value)
    return (
        _key(1, 1)
        + struct.pack("<d", wall_time)
        + _key(2, 0)
        + _encode_varint(step)
        + _length_delimited(5, summary)
    )


class EventFileWriter:
    """Appends scalar events to a new event file in a folder (flushes every write)."""

    def __init__(self, folder: str | Path, *, wall_time: float | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        created = wall_time if wall_time is not None else time.time()
        self.path = folder / f"events.out.tfevents.{int(created)}.kohyagen.0"
        # the file_version event every TensorBoard file starts with; readers check it
        version = _key(1, 1) + struct.pack("<d", created) + _length_delimited(3, b"brain.Event:2")
        with open(self.path, "wb") as handle:
            handle.write(frame_record(version))

    def add_scalar(
        self,
        tag: str,
        value: float,
        step: int,
        *,
        wall_time: float | None = None,
        as_tensor: bool = False,
    ) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"scalar value must be a number, got {type(value).__name__}")
        payload = encode_scalar_event(
            tag,
            float(value),
            step,
            wall_time if wall_time is not None else time.time(),
            as_tensor=as_tensor,
        )
        with open(self.path, "ab") as handle:
            handle.write(frame_record(payload))
