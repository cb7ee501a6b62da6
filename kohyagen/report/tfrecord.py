"""TFRecord framing, the container a TensorBoard event file is: records and their CRC-32C.

Each record is an 8-byte little-endian length, a masked CRC-32C of those 8 bytes, the
payload, and a masked CRC-32C of the payload. Kept apart from tensorboard.py, which
decodes what a record holds (a protobuf `Event`): the framing is the same whatever the
payload, and event_writer.py frames what it writes with it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

# --- CRC-32C (Castagnoli), as TFRecord masks it -------------------------------------------

_CRC_TABLE: list[int] = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        # the reflected Castagnoli polynomial: TFRecord uses CRC-32C, not zlib's CRC-32
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    # TFRecord's mask (rotate right by 15, add a constant), so that a CRC of data that itself
    # holds CRCs does not collide
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(data: bytes, *, check_crc: bool) -> Iterator[bytes]:
    """The payloads of the whole records in data; a torn or foreign record ends the read."""
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        # the length's CRC is always checked: a torn write would otherwise be read as a huge length
        if masked_crc32c(header) != length_crc:
            return  # not a record boundary: garbage or a torn write
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            return  # partial last record (file still being written)
        payload = data[start:end]
        if check_crc:
            (data_crc,) = struct.unpack("<I", data[end : end + 4])
            if masked_crc32c(payload) != data_crc:
                return
        yield payload
        pos = end + 4


def frame_record(payload: bytes) -> bytes:
    """One payload framed as a TFRecord (length, its CRC, payload, its CRC)."""
    header = struct.pack("<Q", len(payload))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + payload
        + struct.pack("<I", masked_crc32c(payload))
    )
