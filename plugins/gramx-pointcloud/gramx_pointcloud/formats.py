"""Cheap structural checks of point-cloud / mesh files, done before open3d reads them.

open3d does not raise on bad files: it logs a warning and returns an empty geometry, or,
for a truncated binary PLY or OFF, the declared number of points with the missing ones
left as zeros. These checks read headers and counts so the loader can tell an empty file
from a corrupt one and never hands on half-read geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Declared", "FormatProblem", "inspect"]

_PLY_SIZES = {
    "char": 1, "int8": 1, "uchar": 1, "uint8": 1,
    "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
    "int": 4, "int32": 4, "uint": 4, "uint32": 4,
    "float": 4, "float32": 4, "double": 8, "float64": 8,
}
_HEADER_LIMIT = 1 << 16


class FormatProblem(ValueError):
    """The file's structure is broken (bad header, truncated data)."""


@dataclass(frozen=True)
class Declared:
    """What a file says about itself. ``None``: the format does not say (or has no data)."""

    points: int | None = None
    faces: int | None = None
    has_data: bool = True  # False: a text file with no data lines at all


def inspect(path: Path, ext: str) -> Declared:
    """Check ``path``'s structure for its extension; raise :class:`FormatProblem` if broken."""
    if ext == ".ply":
        return _inspect_ply(path)
    if ext == ".off":
        return _inspect_off(path)
    if ext == ".pcd":
        return _inspect_pcd(path)
    return Declared(has_data=bool(_data_lines(path)))  # .obj / .xyz / .xyzn / .xyzrgb: nothing but comments?


def _data_lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _inspect_ply(path: Path) -> Declared:
    with path.open("rb") as fh:
        head = fh.read(_HEADER_LIMIT)
    if not head.startswith(b"ply"):
        raise FormatProblem("not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise FormatProblem("PLY header has no 'end_header' line")
    body_start = head.index(b"\n", end) + 1 if b"\n" in head[end:] else len(head)
    header = head[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[list] = []  # [name, count, fixed_bytes, min_list_bytes]
    for line in header[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append([words[1], int(words[2]), 0, 0])
        elif words[0] == "property" and elements:
            elem = elements[-1]
            if len(words) == 5 and words[1] == "list" and words[2] in _PLY_SIZES and words[3] in _PLY_SIZES:
                items = 3 if elem[0] == "face" else 0  # faces have at least 3 indices
                elem[3] += _PLY_SIZES[words[2]] + items * _PLY_SIZES[words[3]]
            elif len(words) == 3 and words[1] in _PLY_SIZES:
                elem[2] += _PLY_SIZES[words[1]]
            else:
                raise FormatProblem(f"PLY header has an unreadable property line {line.strip()!r}")
        else:
            raise FormatProblem(f"PLY header has an unreadable line {line.strip()!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise FormatProblem(f"PLY header has no valid 'format' line (got {fmt!r})")
    counts = {name: count for name, count, _, _ in elements}
    if "vertex" not in counts:
        raise FormatProblem("PLY header declares no 'vertex' element")
    declared = Declared(points=counts["vertex"], faces=counts.get("face", 0))
    if fmt == "ascii":
        body = path.read_bytes()[body_start:].decode("ascii", errors="replace")
        rows = sum(1 for line in body.splitlines() if line.strip())
        needed = sum(counts.values())
        if rows < needed:
            raise FormatProblem(f"truncated: the header declares {_counts(counts)} but only {rows} data lines follow")
    else:
        body = path.stat().st_size - body_start
        needed = sum(count * (fixed + lists) for _, count, fixed, lists in elements)
        if body < needed:
            raise FormatProblem(
                f"truncated: the header declares {_counts(counts)} (at least {needed} bytes) "
                f"but only {body} data bytes follow"
            )
    return declared


def _counts(counts: dict[str, int]) -> str:
    return " and ".join(f"{n} {name}{'es' if name == 'vertex' and n != 1 else ''}" for name, n in counts.items())


def _inspect_off(path: Path) -> Declared:
    lines = _data_lines(path)
    if not lines or not lines[0].split()[0].endswith("OFF"):
        raise FormatProblem("not an OFF file (it does not start with 'OFF')")
    words = lines[0].split()[1:]
    rest = lines[1:]
    if not words:
        if not rest:
            raise FormatProblem("OFF file has no vertex/face counts")
        words, rest = rest[0].split(), rest[1:]
    try:
        nv, nf = int(words[0]), int(words[1])
    except (IndexError, ValueError):
        raise FormatProblem(f"OFF counts line is unreadable: {' '.join(words)!r}") from None
    if len(rest) < nv + nf:
        raise FormatProblem(
            f"truncated: the header declares {nv} vertices and {nf} faces but only {len(rest)} data lines follow"
        )
    return Declared(points=nv, faces=nf)


def _inspect_pcd(path: Path) -> Declared:
    with path.open("rb") as fh:
        head = fh.read(_HEADER_LIMIT).decode("ascii", errors="replace")
    points = None
    saw_data = False
    for line in head.splitlines():
        words = line.split()
        if words and words[0] == "POINTS" and len(words) == 2 and words[1].isdigit():
            points = int(words[1])
        if words and words[0] == "DATA":
            saw_data = True
            break
    if not saw_data:
        raise FormatProblem("not a PCD file (no 'DATA' header line)")
    return Declared(points=points)
