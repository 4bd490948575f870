"""Hand-made PLY bytes for the splat format tests (independent of the code under test)."""

from __future__ import annotations

import numpy as np

NP = {"float": "f4", "double": "f8", "uchar": "u1", "char": "i1", "short": "i2", "ushort": "u2",
      "int": "i4", "uint": "u4"}


def inria_columns(n: int, degree: int = 0, normals: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 columns in INRIA order (name -> [n] array)."""
    rng = np.random.default_rng(seed)
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + [f"f_dc_{i}" for i in range(3)]
    names += [f"f_rest_{i}" for i in range(3 * {0: 0, 1: 3, 2: 8, 3: 15}[degree])]
    names += ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    cols = {name: rng.normal(size=n).astype(np.float32) for name in names}
    if normals:
        for c in ("nx", "ny", "nz"):
            cols[c][:] = 0
    return cols


def make_ply(columns: dict[str, np.ndarray], types: dict[str, str] | None = None,
             encoding: str = "binary_little_endian", comments: tuple[str, ...] = (),
             count: int | None = None, after: bytes = b"", after_header: str = "") -> bytes:
    """PLY bytes with one vertex element; ``count`` overrides the declared vertex count."""
    types = types or {}
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    head = ["ply", f"format {encoding} 1.0", *[f"comment {c}" for c in comments],
            f"element vertex {n if count is None else count}"]
    head += [f"property {types.get(name, 'float')} {name}" for name in names]
    if after_header:
        head.append(after_header)
    head.append("end_header")
    header = ("\n".join(head) + "\n").encode()
    if encoding == "ascii":
        rows = [" ".join(repr(float(columns[name][i])) if types.get(name, "float") in ("float", "double")
                         else str(int(columns[name][i])) for name in names) for i in range(n)]
        return header + "".join(r + "\n" for r in rows).encode() + after
    order = "<" if encoding == "binary_little_endian" else ">"
    rec = np.empty(n, [(name, order + NP[types.get(name, "float")]) for name in names])
    for name in names:
        rec[name] = columns[name]
    return header + rec.tobytes() + after
