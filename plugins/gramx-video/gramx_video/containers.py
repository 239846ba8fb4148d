"""Spotting truncated MP4/MOV and Matroska/WebM files from their headers.

FFmpeg decodes what is there of a cut-short file and stops quietly, so a truncated
download would load as a shorter clip. Both container families declare the sizes of their
top-level parts up front; a part that runs past the end of the file means the file was
cut. Only headers are read.
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["declared_size"]

_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"moof"}
_EBML = b"\x1a\x45\xdf\xa3"
_SEGMENT = b"\x18\x53\x80\x67"


def _iso_size(fh, size: int) -> int | None:
    """End of the last top-level box of an ISO base media file (MP4, MOV, 3GP, ...)."""
    offset = 0
    while offset + 8 <= size:
        fh.seek(offset)
        head = fh.read(16)
        box, kind = struct.unpack(">I", head[:4])[0], head[4:8]
        if box == 1:  # 64-bit size follows
            if len(head) < 16:
                return offset + 16
            box = struct.unpack(">Q", head[8:16])[0]
        elif box == 0:  # runs to the end of the file
            return None
        if box < 8 or not kind.isascii():
            return None  # not something to judge here; FFmpeg will say what is wrong
        offset += box
    return offset


def _vint(data: bytes, pos: int) -> tuple[int, int, bool] | None:
    """EBML variable-length integer at ``pos``: ``(value, length, all ones = unknown size)``."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length, value == (1 << (7 * length)) - 1


def _ebml_size(fh) -> int | None:
    """End of the Segment of a Matroska / WebM file, or ``None`` when its size is open."""
    fh.seek(0)
    data = fh.read(4096)
    header = _vint(data, 4)
    if header is None:
        return None
    pos = 4 + header[1] + header[0]
    if data[pos : pos + 4] != _SEGMENT:
        return None
    segment = _vint(data, pos + 4)
    if segment is None or segment[2]:
        return None  # live-written files leave the segment size unknown
    return pos + 4 + segment[1] + segment[0]


def declared_size(path: Path) -> int | None:
    """The byte size ``path``'s container header promises, or ``None`` when it does not say."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head[:4] == _EBML:
            return _ebml_size(fh)
        if len(head) == 8 and head[4:8] in _ISO_BOXES:
            return _iso_size(fh, size)
    return None
