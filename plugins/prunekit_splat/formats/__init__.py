"""Gaussian-splat scene files: ``read_scene(path)`` / ``write_scene(scene, path)`` by suffix.

========  =====================================================  ==========
suffix    format                                                 access
========  =====================================================  ==========
.ply      INRIA 3DGS PLY (also gsplat / nerfstudio exports)      read/write
.splat    antimatter15 web-viewer splats (32 B, quantised)       read/write
.pt       gsplat simple_trainer checkpoint                       read/write
.ckpt     nerfstudio splatfacto checkpoint                       read
========  =====================================================  ==========

Bad files raise :class:`prunekit.errors.InputError` (one line naming file, field, expectation);
messy but readable content is repaired and counted in ``scene.meta["repairs"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

from prunekit.errors import InputError, UsageError

from ..scene import GaussianScene

FORMATS = {
    ".ply": "INRIA 3DGS PLY",
    ".splat": "antimatter15 .splat",
    ".pt": "gsplat simple_trainer checkpoint",
    ".ckpt": "nerfstudio splatfacto checkpoint (read only)",
}
SUFFIXES: tuple[str, ...] = tuple(FORMATS)  # readable
WRITE_SUFFIXES: tuple[str, ...] = (".ply", ".splat", ".pt")


def read_scene(path: str | os.PathLike) -> GaussianScene:
    """Read a Gaussian-splat scene; the format comes from the suffix (see :data:`FORMATS`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        from .ply import read_ply
        return read_ply(path)
    if suffix == ".splat":
        from .splat import read_splat
        return read_splat(path)
    if suffix == ".pt":
        from .checkpoints import read_gsplat_ckpt
        return read_gsplat_ckpt(path)
    if suffix == ".ckpt":
        from .checkpoints import read_nerfstudio_ckpt
        return read_nerfstudio_ckpt(path)
    raise InputError(f"{path}: unsupported splat format {suffix or '(no suffix)'!r}; expected one of "
                     f"{', '.join(SUFFIXES)}")


def write_scene(scene: GaussianScene, path: str | os.PathLike, **options) -> None:
    """Write ``scene`` atomically in the format of the suffix. Options: ``encoding=`` for .ply,
    ``sort=`` for .splat. An unwritable suffix is a :class:`~prunekit.errors.UsageError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        from .ply import write_ply
        return write_ply(scene, path, **options)
    if suffix == ".splat":
        from .splat import write_splat
        return write_splat(scene, path, **options)
    if suffix == ".pt":
        from .checkpoints import write_gsplat_ckpt
        return write_gsplat_ckpt(scene, path, **options)
    raise UsageError(f"{path}: cannot write {suffix or 'suffix-less'} splat files; writable: "
                     f"{', '.join(WRITE_SUFFIXES)}")


def can_read(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


__all__ = ["FORMATS", "SUFFIXES", "WRITE_SUFFIXES", "read_scene", "write_scene", "can_read"]
