"""Point-cloud and mesh IO: numpy ``.npy``/``.npz`` always, ``.ply``/``.pcd``/``.obj`` via open3d.

open3d is optional (``prunekit[o3d]``, needs the Debian package ``libusb-1.0-0``) and is
imported only when such a file is read or written. Every reader returns
``(points N x 3 float64, colors N x 3 in [0, 1] or None)``; meshes are sampled with
:func:`~prunekit_voxel.voxelize.sample_mesh`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from prunekit import InputError

from .voxelize import sample_mesh

POINT_SUFFIXES = (".npy", ".npz", ".ply", ".pcd", ".obj")


def _o3d(path: Path):
    try:
        import open3d as o3d
    except ImportError as e:
        raise InputError(f"{path}: reading {path.suffix} files needs open3d (install prunekit[o3d]): {e}") from None
    # open3d prints its own "[Open3D WARNING] Read PLY failed" lines; our InputError says what went wrong
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


def _split(arr: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise InputError(f"{path}: expected an N x 3 (xyz) or N x 6 (xyz rgb) array, got shape {arr.shape}")
    pts = arr[:, :3].astype(np.float64)
    if not np.isfinite(pts).all():
        raise InputError(f"{path}: points contain NaN or infinite coordinates")
    if arr.shape[1] == 3:
        return pts, None
    col = arr[:, 3:6].astype(np.float64)
    return pts, col / 255.0 if col.max(initial=0) > 1.0 else col


def read_points(path: str | os.PathLike, mesh_samples: int = 100_000) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a point cloud (or sample a mesh) from ``path``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suf = path.suffix.lower()
    if suf not in POINT_SUFFIXES:
        raise InputError(f"{path}: unsupported suffix {suf!r} (readable: {', '.join(POINT_SUFFIXES)})")
    if suf in (".npy", ".npz"):
        try:
            arr = np.load(path, allow_pickle=False)
            if suf == ".npz":
                if "points" not in arr.files:
                    raise InputError(f"{path}: npz needs a 'points' array (has {', '.join(arr.files) or 'none'})")
                arr = arr["points"]
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad input
            raise InputError(f"{path}: not a readable numpy file ({type(e).__name__}: {e})") from None
        return _split(np.asarray(arr), path)
    o3d = _o3d(path)
    if suf == ".obj" or (suf == ".ply" and _ply_has_faces(path)):
        mesh = o3d.io.read_triangle_mesh(str(path))
        if len(mesh.triangles) == 0:
            raise InputError(f"{path}: mesh has no triangles")
        cols = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
        try:
            return sample_mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), mesh_samples, colors=cols)
        except ValueError as e:
            raise InputError(f"{path}: {e}") from None
    pcd = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(pcd.points)
    if pts.shape[0] == 0:
        raise InputError(f"{path}: no points could be read")
    return _split(np.hstack([pts, np.asarray(pcd.colors)]) if pcd.has_colors() else pts, path)


def _ply_has_faces(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    end = head.find(b"end_header")
    for line in head[: end if end >= 0 else len(head)].splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"face" and parts[2] != b"0":
            return True
    return False


def write_points(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write points (and colours in [0, 1]) to ``.npy`` (N x 3 or N x 6) or, via open3d, ``.ply``/``.pcd``."""
    path = Path(path)
    pts = np.asarray(points, dtype=np.float64)
    suf = path.suffix.lower()
    if suf == ".npy":
        arr = pts if colors is None else np.hstack([pts, np.asarray(colors, dtype=np.float64)])
        with open(path, "wb") as f:
            np.save(f, arr)
        return
    if suf not in (".ply", ".pcd"):
        raise InputError(f"{path}: cannot write {suf!r} point files (writable: .npy, .ply, .pcd)")
    o3d = _o3d(path)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if colors is not None:
        pcd.colors = o3d.utility.Vector3dVector(np.asarray(colors, dtype=np.float64))
    if not o3d.io.write_point_cloud(str(path), pcd):
        raise InputError(f"{path}: open3d failed to write the point cloud")
