"""Pinhole cameras in gsplat's convention, their readers/writers, and synthetic views.

``viewmat`` is the 4x4 world-to-camera matrix in OpenCV axes (x right, y down, z
forward); ``K`` the 3x3 intrinsics in pixels.

- :func:`load_cameras` reads INRIA ``cameras.json`` (list of ``{id, img_name, width, height,
  position, rotation, fx, fy}``, ``rotation`` = camera-to-world 3x3 in OpenCV axes, principal
  point at the image centre) and instant-ngp / nerfstudio ``transforms.json``
  (``transform_matrix`` = camera-to-world in OpenGL axes, converted to OpenCV world-to-camera:
  ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``, ``viewmat = inv(c2w_cv)``). Lens distortion
  (k1, k2, p1, p2) is ignored.
- :func:`write_cameras_json` writes the INRIA form.
- :func:`synthesize_cameras` spreads views over a Fibonacci sphere around a scene.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import InputError
from prunekit.fileio import atomic_write_text

GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG")


@dataclass
class Camera:
    viewmat: torch.Tensor  # [4, 4] world -> camera, OpenCV axes
    K: torch.Tensor  # [3, 3] pixels
    width: int
    height: int
    name: str = ""
    image_path: str | None = None

    @property
    def position(self) -> torch.Tensor:
        """Camera centre in world coordinates."""
        R, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -R.T @ t

    def scaled(self, factor: float) -> "Camera":
        """The same camera at ``factor`` times the resolution (intrinsics scaled)."""
        K = self.K.clone()
        K[:2] *= factor
        return Camera(self.viewmat.clone(), K, max(1, round(self.width * factor)), max(1, round(self.height * factor)),
                      self.name, self.image_path)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def viewmat_from_c2w(R_c2w: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """World-to-camera 4x4 from an orthonormal camera-to-world rotation and the camera centre."""
    R = R_c2w.to(torch.float64)
    V = torch.eye(4, dtype=torch.float64)
    V[:3, :3] = R.T
    V[:3, 3] = -R.T @ centre.to(torch.float64)
    return V.to(torch.float32)


# ---------------------------------------------------------------------------- reading
def load_cameras(path: str | os.PathLike, require_images: bool = True) -> list[Camera]:
    """Cameras from an INRIA ``cameras.json`` or a ``transforms.json`` (or a folder holding one).

    For ``transforms.json`` frames whose image file is missing are skipped with one warning
    (``require_images=False`` keeps them, with ``image_path=None``).
    """
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("transforms.json", "cameras.json") if (path / n).is_file()]
        if not found:
            raise InputError(f"{path}: folder has no transforms.json or cameras.json")
        path = found[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not readable as JSON ({str(e).splitlines()[0]})") from None
    if isinstance(data, list):
        return _inria(data, path)
    if isinstance(data, dict) and "frames" in data:
        return _transforms(data, path, require_images)
    raise InputError(f"{path}: expected a list of INRIA cameras or an object with 'frames' (transforms.json)")


def _num(d: dict, key: str, where: str, default: Any = None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{where}: {key!r} is {'missing' if v is None else repr(v)[:40]}; expected a finite number")
    return float(v)


def _matrix(v: Any, rows: int, cols: int, where: str, key: str) -> torch.Tensor:
    try:
        t = torch.tensor(v, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.shape != (rows, cols) or not bool(torch.isfinite(t).all()):
        raise InputError(f"{where}: {key!r} is not a finite {rows}x{cols} matrix")
    return t


def _inria(data: list, path: Path) -> list[Camera]:
    cams = []
    for i, c in enumerate(data):
        where = f"{path}: camera {i}"
        if not isinstance(c, dict):
            raise InputError(f"{where}: expected an object with id, img_name, width, height, position, rotation, "
                             "fx, fy")
        w, h = _dims(_num(c, "width", where), _num(c, "height", where), where)
        R = _matrix(c.get("rotation"), 3, 3, where, "rotation")
        pos = _matrix([c.get("position")], 1, 3, where, "position")[0]
        fx, fy = _positive(_num(c, "fx", where), _num(c, "fy", where), where)
        K = intrinsics(fx, fy, _num(c, "cx", where, w / 2), _num(c, "cy", where, h / 2))
        name = str(c.get("img_name", c.get("id", i)))
        cams.append(Camera(viewmat_from_c2w(R, pos), K, w, h, name, _find_image(path.parent / "images", name)))
    return cams


def _find_image(folder: Path, name: str) -> str | None:
    for cand in [folder / name] + [folder / (name + e) for e in _IMAGE_EXTS]:
        if cand.is_file():
            return str(cand)
    return None


def _transforms(data: dict, path: Path, require_images: bool) -> list[Camera]:
    frames = data["frames"]
    if not isinstance(frames, list):
        raise InputError(f"{path}: 'frames' is {type(frames).__name__}; expected a list")
    cams, skipped = [], 0
    for i, fr in enumerate(frames):
        where = f"{path}: frame {i}"
        if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str):
            raise InputError(f"{where}: expected an object with 'file_path' and 'transform_matrix'")
        c2w = _matrix(fr.get("transform_matrix"), 4, 4, where, "transform_matrix")
        image = _resolve_image(path.parent, fr["file_path"])
        if image is None and require_images:
            skipped += 1
            continue
        g = {**data, **fr}  # per-frame intrinsics override the top-level ones
        w, h = _size(g, image, where)
        fx, fy = _positive(*_focals(g, w, h, where), where)
        K = intrinsics(fx, fy, _num(g, "cx", where, w / 2), _num(g, "cy", where, h / 2))
        try:
            V = torch.linalg.inv(c2w @ GL_TO_CV).to(torch.float32)
        except RuntimeError:  # torch.linalg.LinAlgError
            raise InputError(f"{where}: 'transform_matrix' is singular; expected a camera-to-world pose") from None
        cams.append(Camera(V, K, w, h, Path(fr["file_path"]).stem, image))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} of {len(frames)} frames whose image file is missing", stacklevel=3)
        if not cams:
            raise InputError(f"{path}: none of the {len(frames)} frames has its image file; expected images beside "
                             "transforms.json (or pass require_images=False)")
    return cams


def _resolve_image(root: Path, file_path: str) -> str | None:
    p = root / file_path
    if p.is_file():
        return str(p)
    if not p.suffix:  # NeRF-synthetic style "./train/r_0"
        return _find_image(p.parent, p.name)
    return None


def _size(g: dict, image: str | None, where: str) -> tuple[int, int]:
    if "w" in g and "h" in g:
        return _dims(_num(g, "w", where), _num(g, "h", where), where)
    if image is not None:
        try:
            from PIL import Image

            with Image.open(image) as im:
                return im.size
        except Exception:  # noqa: BLE001 - unreadable image: report below as a missing size
            pass
    raise InputError(f"{where}: no 'w'/'h' and the image size could not be read; expected w and h")


def _dims(w: float, h: float, where: str) -> tuple[int, int]:
    if w < 1 or h < 1 or w != int(w) or h != int(h):
        raise InputError(f"{where}: image size {w} x {h}; expected whole numbers of pixels >= 1")
    return int(w), int(h)


def _positive(fx: float, fy: float, where: str) -> tuple[float, float]:
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
        raise InputError(f"{where}: focal lengths {fx}, {fy}; expected positive finite pixels")
    return fx, fy


def _focals(g: dict, w: int, h: int, where: str) -> tuple[float, float]:
    if "fl_x" in g:
        fx = _num(g, "fl_x", where)
        return fx, _num(g, "fl_y", where, fx)
    if "camera_angle_x" in g:
        fx = 0.5 * w / math.tan(0.5 * _num(g, "camera_angle_x", where))
        fy = 0.5 * h / math.tan(0.5 * _num(g, "camera_angle_y", where)) if "camera_angle_y" in g else fx
        return fx, fy
    raise InputError(f"{where}: no focal length; expected 'fl_x' (pixels) or 'camera_angle_x' (radians)")


# ---------------------------------------------------------------------------- writing
def write_cameras_json(cameras: list[Camera], path: str | os.PathLike) -> None:
    """Write INRIA ``cameras.json`` (atomically); ``cx``/``cy`` are added only when off-centre."""
    out = []
    for i, cam in enumerate(cameras):
        R_c2w = cam.viewmat[:3, :3].to(torch.float64).T
        entry = {"id": i, "img_name": cam.name or f"{i:05d}", "width": cam.width, "height": cam.height,
                 "position": cam.position.to(torch.float64).tolist(), "rotation": R_c2w.tolist(),
                 "fx": float(cam.K[0, 0]), "fy": float(cam.K[1, 1])}
        cx, cy = float(cam.K[0, 2]), float(cam.K[1, 2])
        if abs(cx - cam.width / 2) > 1e-6 or abs(cy - cam.height / 2) > 1e-6:
            entry.update(cx=cx, cy=cy)
        out.append(entry)
    atomic_write_text(path, json.dumps(out, indent=1))


# ---------------------------------------------------------------------------- synthesis
def fibonacci_sphere(n: int) -> torch.Tensor:
    """``n`` near-uniform unit directions: z_i = 1 - 2(i + 0.5)/n, azimuth i * golden angle."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt((1 - z * z).clamp_min(0))
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1)


def look_at(centre: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """World-to-camera (OpenCV) for a camera at ``centre`` looking at ``target``, image y along -up."""
    z = target - centre
    z = z / z.norm()
    if abs(float(z @ up)) > 0.99:  # looking along up: take another reference
        up = torch.tensor([1.0, 0.0, 0.0], dtype=z.dtype) if abs(float(z[0])) < 0.9 else \
            torch.tensor([0.0, 1.0, 0.0], dtype=z.dtype)
    y = -up + (up @ z) * z
    y = y / y.norm()
    x = torch.linalg.cross(y, z)
    return viewmat_from_c2w(torch.stack([x, y, z], dim=1), centre)


def synthesize_cameras(scene, n: int = 64, width: int = 256, height: int = 256, fov_deg: float = 60.0,
                       distances: tuple[float, ...] = (0.8, 1.2, 1.8, 2.5), seed: int = 0,
                       up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> list[Camera]:
    """Views over the whole sphere around ``scene``, looking at its robust centre.

    Robust bounds are the 1%-99% quantiles of the means; r is their half-diagonal. View i sits
    at ``centre + distances[j] * r * d_i`` with ``d_i`` a Fibonacci-sphere direction (randomly
    rotated by ``seed``) and distances assigned round-robin in a seeded order, so close-ups
    (< 1 r) and overviews are both spread over all directions. ``fov_deg`` is horizontal.
    """
    lo, hi = scene.bounds(0.01)
    centre = ((lo + hi) / 2).to(torch.float64)
    r = float((hi - lo).to(torch.float64).norm() / 2) or 1.0
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    dirs = fibonacci_sphere(n) @ q.T
    order = torch.randperm(len(distances), generator=gen).tolist()
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = intrinsics(f, f, width / 2, height / 2)
    up_t = torch.tensor(up, dtype=torch.float64)
    cams = []
    for i in range(n):
        d = distances[order[i % len(distances)]]
        eye = centre + d * r * dirs[i]
        cams.append(Camera(look_at(eye, centre, up_t), K.clone(), width, height, f"synth_{i:03d}"))
    return cams
