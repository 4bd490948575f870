"""PLY header parsing (http://paulbourke.net/dataformats/ply/) with one-line errors.

Only what a Gaussian-splat reader needs: the encoding, the elements with their counts
and (scalar or list) properties, and the raw header bytes so that a writer can
reproduce them exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from prunekit.errors import InputError

# PLY type name -> numpy type code (without byte order)
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
ENCODINGS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
MAX_HEADER_BYTES = 16 << 20
_END = re.compile(rb"(?:^|\n)end_header[ \t]*\r?\n")


@dataclass
class PlyProperty:
    name: str
    type: str  # PLY type name as written (e.g. "float")
    list_types: tuple[str, str] | None = None  # (count type, item type) for list properties

    @property
    def code(self) -> str:
        return PLY_TYPES[self.type]


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.list_types for p in self.properties)


@dataclass
class PlyHeader:
    encoding: str
    elements: list[PlyElement]
    raw: bytes  # the header bytes, "ply" up to and including the end_header line
    comments: list[str]

    @property
    def byte_order(self) -> str | None:
        return ENCODINGS[self.encoding]

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


def read_header(f: BinaryIO, path: Path) -> PlyHeader:
    """Read and parse the header from the start of ``f``; leave ``f`` just after it."""
    magic = f.read(4)
    if magic[:3] != b"ply" or magic[3:4] not in (b"\n", b"\r"):
        raise InputError(f"{path}: not a PLY file (first bytes {magic!r}; expected 'ply' on the first line)")
    buf = bytearray(magic)
    while True:
        m = _END.search(buf)
        if m:
            break
        chunk = f.read(1 << 16)
        if not chunk:
            raise InputError(f"{path}: PLY header has no 'end_header' line (file truncated in the header?)")
        buf += chunk
        if len(buf) > MAX_HEADER_BYTES:
            raise InputError(f"{path}: PLY header longer than {MAX_HEADER_BYTES >> 20} MiB without 'end_header'")
    raw = bytes(buf[: m.end()])
    f.seek(len(raw))
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # comments may hold odd bytes; keywords are checked below
    return _parse(text, raw, path)


def _parse(text: str, raw: bytes, path: Path) -> PlyHeader:
    encoding = None
    elements: list[PlyElement] = []
    comments: list[str] = []
    for lineno, line in enumerate(text.splitlines()[1:], start=2):
        tokens = line.split()
        if not tokens:
            continue
        key = tokens[0]
        where = f"{path}: PLY header line {lineno}"
        if key in ("comment", "obj_info"):
            comments.append(line.strip())
        elif key == "format":
            if len(tokens) != 3 or tokens[1] not in ENCODINGS:
                raise InputError(f"{where}: format {' '.join(tokens[1:])!r}; expected ascii, "
                                 "binary_little_endian or binary_big_endian with a version")
            encoding = tokens[1]
        elif key == "element":
            if len(tokens) != 3 or not tokens[2].isdigit():
                raise InputError(f"{where}: {line.strip()!r}; expected 'element NAME COUNT' with a count >= 0")
            if any(e.name == tokens[1] for e in elements):
                raise InputError(f"{where}: element {tokens[1]!r} declared twice")
            elements.append(PlyElement(tokens[1], int(tokens[2])))
        elif key == "property":
            _need_element(elements, where, line)
            elements[-1].properties.append(_property(tokens, where, elements[-1]))
        elif key == "end_header":
            break
        else:
            raise InputError(f"{where}: unknown header keyword {key!r}")
    if encoding is None:
        raise InputError(f"{path}: PLY header has no 'format' line")
    return PlyHeader(encoding, elements, raw, comments)


def _need_element(elements: list[PlyElement], where: str, line: str) -> None:
    if not elements:
        raise InputError(f"{where}: {line.strip()!r} comes before any 'element' line")


def _property(tokens: list[str], where: str, element: PlyElement) -> PlyProperty:
    if len(tokens) == 5 and tokens[1] == "list":
        count_t, item_t, name = tokens[2], tokens[3], tokens[4]
        for t in (count_t, item_t):
            if t not in PLY_TYPES:
                raise InputError(f"{where}: property {name!r} has unknown type {t!r}; expected one of "
                                 f"{', '.join(PLY_TYPES)}")
        prop = PlyProperty(name, item_t, (count_t, item_t))
    elif len(tokens) == 3:
        if tokens[1] not in PLY_TYPES:
            raise InputError(f"{where}: property {tokens[2]!r} has unknown type {tokens[1]!r}; expected one of "
                             f"{', '.join(PLY_TYPES)}")
        prop = PlyProperty(tokens[2], tokens[1])
    else:
        raise InputError(f"{where}: {' '.join(tokens)!r}; expected 'property TYPE NAME' or "
                         "'property list COUNT_TYPE ITEM_TYPE NAME'")
    if any(p.name == prop.name for p in element.properties):
        raise InputError(f"{where}: property {prop.name!r} declared twice in element {element.name!r}")
    return prop


def with_vertex_count(raw: bytes, count: int) -> bytes:
    """``raw`` with the count on its ``element vertex`` line replaced (all other bytes kept)."""
    return re.sub(rb"(?m)^(element[ \t]+vertex[ \t]+)\d+", lambda m: m.group(1) + str(count).encode(), raw, count=1)
