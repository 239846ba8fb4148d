"""Byte ranges of a file part: what lets a browser's player seek in a recording or clip (HTTP 206).

A part is ``size`` bytes at ``offset`` of a file: a whole file, or a file inside a shard's
tar. One range per request (``bytes=A-B``, ``bytes=A-``, ``bytes=-N``), as players send;
anything else gets the whole part, and a range past its end 416. The bytes are streamed in
blocks, so memory does not grow with the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from fastapi.responses import Response, StreamingResponse

__all__ = ["BLOCK", "part_response"]

#: Bytes read and sent at a time.
BLOCK = 1 << 18
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _blocks(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        while length > 0:
            data = os.pread(f.fileno(), min(BLOCK, length), start)
            if not data:
                return
            yield data
            start, length = start + len(data), length - len(data)


def part_response(path: Path, content_type: str, offset: int, size: int, range_header: str | None) -> Response:
    """The part's bytes (200), or the one range ``range_header`` asks for (206; 416 when none of it exists)."""
    headers = {"accept-ranges": "bytes"}
    wanted = _RANGE.fullmatch((range_header or "").strip())
    if not wanted or wanted.groups() == ("", ""):
        return StreamingResponse(_blocks(path, offset, size), media_type=content_type,
                                 headers={**headers, "content-length": str(size)})
    first, last = wanted.groups()
    start, stop = (size - min(int(last), size), size) if first == "" else (int(first), min(int(last or size - 1) + 1, size))
    if start >= stop:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    return StreamingResponse(_blocks(path, offset + start, stop - start), status_code=206, media_type=content_type,
                             headers={**headers, "content-length": str(stop - start),
                                      "content-range": f"bytes {start}-{stop - 1}/{size}"})
