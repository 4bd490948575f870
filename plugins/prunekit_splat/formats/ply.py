"""INRIA 3D Gaussian Splatting PLY (Kerbl et al., SIGGRAPH 2023) reader and writer.

Per-vertex properties ``x y z [nx ny nz] f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3``,
pre-activation (see :mod:`prunekit_splat.scene`). ``f_rest`` is **channel-major** in the file
(``f_rest_{c*K + k}`` is colour ``c`` of coefficient ``k``) and becomes ``shN[:, k, c]`` in memory.
``f_rest_*``/``scale_*``/``rot_*``/``f_dc_*`` are ordered by numeric suffix, not file order.

Also read: gsplat's writer (no normals), nerfstudio ``ns-export`` (header comments), big-endian
and ASCII files, any numeric scalar type (converted to float32). ``nx ny nz`` become
``scene.extra["normals"]``; every other property is kept in ``scene.extra[name]``.

Faithful writing: ``scene.meta["ply"]`` keeps the raw header, the property order and types and
the bytes of any other elements, so an unchanged scene is written back byte for byte (binary
encodings; ASCII is value-exact). A scene whose properties changed (e.g. SH degree) gets a fresh
header in the canonical INRIA order that keeps the comments.

Reading is vectorised: the vertex block is read with one ``readinto`` into a numpy buffer and
viewed as an ``[N, P]`` float32 matrix; the scene's tensors are strided views of its columns
(no per-property copies). Big-endian or mixed-type files are converted (one copy per block).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import InputError, UsageError
from prunekit.fileio import atomic_path

from ..scene import GaussianScene
from .ply_header import ENCODINGS, PLY_TYPES, PlyElement, PlyHeader, read_header, with_vertex_count
from .repair import repair_scene

REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
GROUPS = {"f_dc": 3, "scale": 3, "rot": 4}  # fixed-size indexed groups
F_REST_TO_K = {0: 0, 9: 3, 24: 8, 45: 15}
NORMALS = ("nx", "ny", "nz")
_INDEXED = re.compile(r"^(f_dc|f_rest|scale|rot)_(0|[1-9]\d*)$")  # "f_rest_07" is just an extra
# numpy code -> dtype torch can hold without loss; torch dtype -> PLY type for new extras
_TORCH_SAFE = {"u2": "i4", "u4": "i8"}
_DEFAULT_TYPE = {torch.float32: "float", torch.float64: "double", torch.float16: "float", torch.int8: "char",
                 torch.uint8: "uchar", torch.int16: "short", torch.int32: "int", torch.int64: "int",
                 torch.bool: "uchar"}


# ---------------------------------------------------------------------------- reading
def read_ply(path: str | os.PathLike) -> GaussianScene:
    """Read an INRIA-style 3DGS PLY; messy values are repaired (see :mod:`.repair`)."""
    path = Path(path)
    with _open(path) as f:
        header = read_header(f, path)
        vertex = _vertex_element(header, path)
        k = _check_layout(vertex, path)
        if header.encoding == "ascii":
            table, prefix, trailer = _read_ascii(f, header, vertex, path)
        else:
            table, prefix, trailer = _read_binary(f, header, vertex, path)
    n = vertex.count
    t = table.block
    known = set(REQUIRED) | {f"f_rest_{i}" for i in range(3 * k)}
    extra: dict[str, torch.Tensor] = {}
    if all(p in table.index for p in NORMALS):
        if "normals" in table.index:
            raise InputError(f"{path}: element vertex has both 'normals' and nx ny nz; expected one of them")
        extra["normals"] = t(NORMALS)
        known |= set(NORMALS)
    for p in vertex.properties:
        if p.name not in known:
            extra[p.name] = torch.from_numpy(table.column(p.name, _TORCH_SAFE.get(p.code, p.code)))
    ply_meta = {"encoding": header.encoding, "header": header.raw.decode("latin-1"),
                "properties": [[p.name, p.type] for p in vertex.properties]}
    if prefix:
        ply_meta["prefix"] = prefix
    if trailer:
        ply_meta["trailer"] = trailer
    scene = GaussianScene(
        means=t(["x", "y", "z"]), quats=t([f"rot_{i}" for i in range(4)]),
        scales=t([f"scale_{i}" for i in range(3)]), opacities=t(["opacity"]).reshape(n),
        sh0=t([f"f_dc_{i}" for i in range(3)]), shN=table.sh_rest(k), extra=extra,
        meta={"format": "ply", "source": str(path), "comments": header.comments, "ply": ply_meta})
    return repair_scene(scene, str(path), all_finite=table.all_finite())


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; expected a .ply file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror})") from None


def _vertex_element(header: PlyHeader, path: Path) -> PlyElement:
    vertex = header.element("vertex")
    names = {p.name for p in vertex.properties} if vertex else set()
    if header.element("chunk") is not None or "packed_position" in names:
        raise InputError(f"{path}: a PlayCanvas compressed PLY (element 'chunk' / packed_position); "
                         "expected an uncompressed INRIA 3DGS PLY (decompress it first, e.g. with splat-transform)")
    if vertex is None:
        raise InputError(f"{path}: PLY has no 'element vertex'; expected the Gaussians as vertices")
    return vertex


def _check_layout(vertex: PlyElement, path: Path) -> int:
    """Validate the vertex properties; return K, the higher SH coefficients per colour."""
    where = f"{path}: element vertex"
    for p in vertex.properties:
        if p.list_types:
            raise InputError(f"{where}: property {p.name!r} is a list; expected a scalar number")
    names = [p.name for p in vertex.properties]
    missing = [r for r in REQUIRED if r not in names]
    if missing:
        raise InputError(f"{where}: missing property {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if
                         len(missing) > 1 else "") + "; a 3DGS PLY needs x y z f_dc_0..2 opacity scale_0..2 rot_0..3")
    indexed: dict[str, list[int]] = {}
    for name in names:
        m = _INDEXED.match(name)
        if m:
            indexed.setdefault(m.group(1), []).append(int(m.group(2)))
    for group, size in GROUPS.items():
        if sorted(indexed[group]) != list(range(size)):
            raise InputError(f"{where}: properties {group}_* have suffixes {sorted(indexed[group])}; "
                             f"expected {group}_0..{group}_{size - 1}")
    rest = sorted(indexed.get("f_rest", []))
    if len(rest) not in F_REST_TO_K or rest != list(range(len(rest))):
        raise InputError(f"{where}: {len(rest)} f_rest_* properties with suffixes "
                         f"{_span(rest)}; expected f_rest_0..N-1 with N in 0, 9, 24, 45 (SH degree 0-3)")
    return F_REST_TO_K[len(rest)]


def _span(xs: list[int]) -> str:
    return "none" if not xs else f"{xs[0]}..{xs[-1]}"


class _Table:
    """The vertex data: an ``[N, P]`` matrix (one type) or a structured array (mixed types).

    With a native float32 matrix (the usual binary little-endian 3DGS file) the scene's
    tensors are **views** into it (strided column slices, no copy): the matrix is the one
    copy of the vertex data in memory."""

    def __init__(self, names: list[str], matrix: np.ndarray | None = None, records: np.ndarray | None = None):
        self.index = {name: i for i, name in enumerate(names)}
        self.matrix, self.records = matrix, records
        if matrix is not None and matrix.dtype == np.float32 and matrix.dtype.isnative:
            self.tensor = torch.from_numpy(matrix)
        else:
            self.tensor = None

    def block(self, names) -> torch.Tensor:
        """Float32 ``[N, len(names)]`` of the named columns (a view when they are adjacent)."""
        idx = [self.index[n] for n in names]
        lo = idx[0] if idx else 0
        if self.tensor is not None:
            if idx == list(range(lo, lo + len(idx))):
                return self.tensor[:, lo:lo + len(idx)]
            return self.tensor.index_select(1, torch.tensor(idx, dtype=torch.long))
        if self.matrix is not None:
            return torch.from_numpy(np.take(self.matrix, idx, axis=1).astype(np.float32, copy=False))
        out = np.empty((len(self.records), len(names)), np.float32)
        for j, name in enumerate(names):  # one vectorised column copy per property (mixed-type records)
            out[:, j] = self.records[name]
        return torch.from_numpy(out)

    def sh_rest(self, k: int) -> torch.Tensor:
        """``[N, K, 3]`` from channel-major ``f_rest_{c*K + j}`` (j = coefficient, c = colour)."""
        n = len(self.matrix) if self.matrix is not None else len(self.records)
        idx = [self.index[f"f_rest_{i}"] for i in range(3 * k)]
        if self.tensor is not None and k and idx == list(range(idx[0], idx[0] + 3 * k)):
            return self.tensor[:, idx[0]:idx[0] + 3 * k].unflatten(1, (3, k)).transpose(1, 2)  # a view
        return self.block([f"f_rest_{c * k + j}" for j in range(k) for c in range(3)]).reshape(n, k, 3)

    def all_finite(self) -> bool:
        """True when the float32 block's sum is finite: then no value is NaN/inf (one pass, no
        temporaries; an overflowing sum of finite values only costs the exact check later)."""
        return self.tensor is not None and bool(np.isfinite(self.matrix.sum()))

    def column(self, name: str, code: str) -> np.ndarray:
        src = self.matrix[:, self.index[name]] if self.matrix is not None else self.records[name]
        return src.astype(np.dtype(code))  # native byte order, own memory


def _read_binary(f, header: PlyHeader, vertex: PlyElement, path: Path):
    order = header.byte_order
    before = header.elements[: header.elements.index(vertex)]
    prefix_size = 0
    for e in before:
        if e.has_lists:
            raise InputError(f"{path}: element {e.name!r} before 'vertex' has list properties; "
                             "expected the vertex element first or fixed-size elements before it")
        prefix_size += e.count * sum(np.dtype(p.code).itemsize for p in e.properties)
    dtype = np.dtype([(p.name, order + p.code) for p in vertex.properties])
    need = vertex.count * dtype.itemsize
    avail = os.fstat(f.fileno()).st_size - len(header.raw) - prefix_size
    if avail < need:
        raise InputError(f"{path}: truncated: element vertex declares {vertex.count} vertices x {dtype.itemsize} B "
                         f"= {need} B, but only {max(avail, 0)} B follow the header")
    prefix = f.read(prefix_size)
    data = np.empty(need, np.uint8)  # the one buffer: the scene's tensors will be views into it
    if need and f.readinto(memoryview(data)) != need:
        raise InputError(f"{path}: truncated while reading the vertex data ({need} B expected)")
    trailer = f.read()
    names = [p.name for p in vertex.properties]
    codes = {p.code for p in vertex.properties}
    if len(codes) == 1:
        matrix = data.view(order + codes.pop()).reshape(vertex.count, len(names))
        if not matrix.dtype.isnative:
            matrix = matrix.astype(matrix.dtype.newbyteorder("="))
        return _Table(names, matrix=matrix), prefix, trailer
    return _Table(names, records=data.view(dtype)), prefix, trailer


def _read_ascii(f, header: PlyHeader, vertex: PlyElement, path: Path):
    lines = f.read().splitlines(keepends=True)
    at = 0
    for e in header.elements[: header.elements.index(vertex)]:
        at += e.count  # one line per element, as every writer does
    body = lines[at: at + vertex.count]
    p = len(vertex.properties)
    tokens = b"".join(body).split()
    if len(body) < vertex.count or len(tokens) != vertex.count * p:
        raise InputError(f"{path}: ASCII vertex data has {len(tokens)} values in {len(body)} lines; expected "
                         f"{vertex.count} lines of {p} values (truncated or malformed)")
    try:
        values = np.array(tokens, dtype=np.float64).reshape(vertex.count, p)
    except ValueError as e:
        raise InputError(f"{path}: ASCII vertex data: {e}; expected numbers") from None
    names = [q.name for q in vertex.properties]
    return _Table(names, matrix=values), b"".join(lines[:at]), b"".join(lines[at + vertex.count:])


# ---------------------------------------------------------------------------- writing
def write_ply(scene: GaussianScene, path: str | os.PathLike, encoding: str | None = None) -> None:
    """Write ``scene`` as an INRIA PLY (atomically). ``encoding`` defaults to the source file's
    encoding, else ``binary_little_endian``."""
    if encoding is not None and encoding not in ENCODINGS:
        raise UsageError(f"PLY encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    blocks, default_types = _blocks(scene)
    columns = [name for names, _ in blocks for name in names]
    src = scene.meta.get("ply")
    n = len(scene)
    same = (src is not None and sorted(p[0] for p in src["properties"]) == sorted(columns)
            and encoding in (None, src["encoding"]))
    if same:
        props = [(name, typ) for name, typ in src["properties"]]
        enc = src["encoding"]
        head = with_vertex_count(src["header"].encode("latin-1"), n)
        prefix, trailer = src.get("prefix", b""), src.get("trailer", b"")
    else:
        declared = dict(map(tuple, src["properties"])) if src else {}
        props = [(name, declared.get(name, default_types[name])) for name in columns]
        enc = encoding or (src["encoding"] if src else "binary_little_endian")
        comments = "".join(c + "\n" for c in scene.meta.get("comments", []))
        head = (f"ply\nformat {enc} 1.0\n{comments}element vertex {n}\n"
                + "".join(f"property {t} {name}\n" for name, t in props) + "end_header\n").encode("latin-1")
        prefix = trailer = b""
    body = _encode(blocks, props, enc, n)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for part in (head, prefix, body, trailer):
            f.write(part)


def _blocks(scene: GaussianScene) -> tuple[list[tuple[list[str], torch.Tensor]], dict[str, str]]:
    """``(names, tensor [N, ...])`` blocks in canonical INRIA order (names follow the C-order
    flattening of each tensor's trailing dims), and the default PLY type of each name."""
    f32 = lambda t: t.detach().cpu().to(torch.float32)  # noqa: E731
    blocks = [(["x", "y", "z"], f32(scene.means))]
    extra = dict(scene.extra)
    if "normals" in extra:
        blocks.append((list(NORMALS), f32(extra.pop("normals"))))
    k = scene.shN.shape[1]
    blocks += [([f"f_dc_{i}" for i in range(3)], f32(scene.sh0)),
               ([f"f_rest_{i}" for i in range(3 * k)], f32(scene.shN).transpose(1, 2)),  # channel-major view
               (["opacity"], f32(scene.opacities)[:, None]), ([f"scale_{i}" for i in range(3)], f32(scene.scales)),
               ([f"rot_{i}" for i in range(4)], f32(scene.quats))]
    types = {name: "float" for names, _ in blocks for name in names}
    for key, t in extra.items():
        t = t.detach().cpu()
        width = int(np.prod(t.shape[1:]))
        names = [key] if t.dim() == 1 else [f"{key}_{i}" for i in range(width)]
        blocks.append((names, t if t.dim() > 1 else t[:, None]))
        types.update((name, _DEFAULT_TYPE.get(t.dtype, "double")) for name in names)
    return blocks, types


def _encode(blocks: list[tuple[list[str], torch.Tensor]], props: list[tuple[str, str]], enc: str, n: int):
    """The vertex data as a bytes-like object."""
    codes = [PLY_TYPES[t] for _, t in props]
    if enc != "ascii" and set(codes) == {"f4"}:
        matrix = _float_matrix(blocks, [name for name, _ in props], n).numpy()
        if ENCODINGS[enc] == ">":
            matrix = matrix.astype(">f4")
        return matrix.reshape(-1).view(np.uint8)
    where = {name: (t, j) for names, t in blocks for j, name in enumerate(names)}

    def col(name: str) -> np.ndarray:
        t, j = where[name]
        return t.reshape(n, -1)[:, j].numpy() if t.numel() else np.zeros(n, np.float32)

    if enc == "ascii":
        fmt = ["%.9g" if c == "f4" else "%.17g" if c == "f8" else "%d" for c in codes]
        table = np.empty((n, len(props)), np.float64)
        for j, (name, _) in enumerate(props):
            table[:, j] = _cast(col(name), codes[j])
        out = io.BytesIO()
        np.savetxt(out, table, fmt=fmt, delimiter=" ", newline="\n")
        return out.getvalue()
    order = ENCODINGS[enc]
    rec = np.empty(n, np.dtype([(name, order + c) for (name, _), c in zip(props, codes)]))
    for (name, _), c in zip(props, codes):
        rec[name] = _cast(col(name), c)
    return rec.view(np.uint8)


def _float_matrix(blocks: list[tuple[list[str], torch.Tensor]], order: list[str], n: int) -> torch.Tensor:
    """Float32 ``[N, P]`` with columns in ``order``: blocks copied straight into their slices."""
    canon = [name for names, _ in blocks for name in names]
    out = torch.empty(n, len(canon), dtype=torch.float32)
    at = 0
    for names, t in blocks:
        if names:
            out[:, at:at + len(names)].unflatten(1, t.shape[1:]).copy_(t)
        at += len(names)
    if order != canon:
        pos = {name: i for i, name in enumerate(canon)}
        out = out.index_select(1, torch.tensor([pos[name] for name in order], dtype=torch.long))
    return out


def _cast(values: np.ndarray, code: str) -> np.ndarray:
    """``values`` in numpy type ``code``; integers are rounded and clipped to the type's range."""
    dt = np.dtype(code)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.clip(np.rint(np.nan_to_num(values.astype(np.float64))), info.min, info.max).astype(dt)
    return values.astype(dt)
