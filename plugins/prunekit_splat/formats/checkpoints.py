"""Training checkpoints: gsplat ``simple_trainer`` ``.pt`` (read/write) and nerfstudio splatfacto
``.ckpt`` (read). Both are loaded with ``torch.load(weights_only=True)`` only: plain tensors and
containers, never arbitrary pickled objects.

- gsplat: ``{"step", "splats": {means [N,3], scales [N,3] log, quats [N,4] wxyz, opacities [N] logit,
  sh0 [N,1,3], shN [N,K,3]}}``; other per-Gaussian tensors in ``splats`` are kept in
  ``scene.extra`` and written back.
- nerfstudio: ``pipeline["_model.gauss_params.{means, scales, quats, features_dc [N,3],
  features_rest [N,K,3], opacities [N,1]}"]`` (features_rest already coefficient-major).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import InputError
from prunekit.fileio import atomic_path

from ..scene import SH_COEFFS_TO_DEGREE, GaussianScene
from .repair import repair_scene

GSPLAT_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def _numpy_scalar_globals() -> list:
    """Globals needed to unpickle numpy scalars, which stock nerfstudio checkpoints contain (its
    learning-rate schedulers store ``numpy.float64`` values; nerfstudio issue #3683). They only
    rebuild numbers from bytes, so allowing them keeps ``weights_only=True`` safe."""
    import importlib
    import warnings

    import numpy as np

    scalars = []
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2 / numpy 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scalars.append(importlib.import_module(name).scalar)
        except (ImportError, AttributeError):
            pass
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)}
    return [*scalars, np.dtype, *dtypes]


def load_checkpoint(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: file not found" if not path.exists() else f"{path}: not a regular file")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/unsafe pickles; all mean "bad file"
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(f"{path}: cannot load as a torch checkpoint with weights_only=True "
                         f"({type(e).__name__}: {first})") from None


def _tensor(d: dict, key: str, path: Path, shape: tuple, where: str) -> torch.Tensor:
    """``d[key]`` as float32, checked against ``shape`` (ints; -1 = any; N shared via shape[0])."""
    t = d.get(key)
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{path}: {where}{key} is {'missing' if t is None else type(t).__name__}; "
                         f"expected a tensor of shape {_fmt(shape)}")
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise InputError(f"{path}: {where}{key} has dtype {t.dtype}; expected real numbers")
    ok = t.dim() == len(shape) and all(s in (-1, d_) for s, d_ in zip(shape, t.shape))
    if not ok:
        raise InputError(f"{path}: {where}{key} has shape {list(t.shape)}; expected {_fmt(shape)}")
    return t.detach().to(torch.float32).contiguous()


def _fmt(shape: tuple) -> str:
    return "[" + ", ".join("N" if i == 0 else ("*" if s == -1 else str(s)) for i, s in enumerate(shape)) + "]"


def _n(d: dict, key: str, path: Path, where: str) -> int:
    t = d.get(key)
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        raise InputError(f"{path}: {where}{key} is missing or not a tensor; expected [N, 3] positions")
    return t.shape[0]


def read_gsplat_ckpt(path: str | os.PathLike) -> GaussianScene:
    path = Path(path)
    ckpt = load_checkpoint(path)
    splats = ckpt.get("splats") if isinstance(ckpt, dict) else None
    if not isinstance(splats, dict):
        raise InputError(f"{path}: no 'splats' dict; expected a gsplat simple_trainer checkpoint "
                         "{'step', 'splats': {means, scales, quats, opacities, sh0, shN}}")
    w = "splats."
    if "sh0" not in splats and ("colors" in splats or "features" in splats):
        raise InputError(f"{path}: splats has 'colors'/'features' (appearance optimisation) but no 'sh0'; "
                         "expected SH colours (sh0, shN)")
    n = _n(splats, "means", path, w)
    opac = splats.get("opacities")
    if isinstance(opac, torch.Tensor) and opac.dim() == 2 and opac.shape[1:] == (1,):
        opac = opac[:, 0]
    sh0 = splats.get("sh0")
    if isinstance(sh0, torch.Tensor) and sh0.dim() == 2:
        sh0 = sh0[:, None, :]
    fields = dict(splats, opacities=opac, sh0=sh0)
    scene = GaussianScene(
        means=_tensor(fields, "means", path, (n, 3), w), quats=_tensor(fields, "quats", path, (n, 4), w),
        scales=_tensor(fields, "scales", path, (n, 3), w), opacities=_tensor(fields, "opacities", path, (n,), w),
        sh0=_tensor(fields, "sh0", path, (n, 1, 3), w)[:, 0],
        shN=_sh_rest(fields, "shN", path, n, w),
        extra={k: v for k, v in splats.items() if k not in GSPLAT_KEYS and isinstance(v, torch.Tensor)
               and v.dim() > 0 and v.shape[0] == n},
        meta=_meta(ckpt, "gsplat_ckpt", path, {"splats"}))
    return repair_scene(scene, str(path))


def read_nerfstudio_ckpt(path: str | os.PathLike) -> GaussianScene:
    path = Path(path)
    ckpt = load_checkpoint(path)
    pipe = ckpt.get("pipeline") if isinstance(ckpt, dict) else None
    if not isinstance(pipe, dict):
        raise InputError(f"{path}: no 'pipeline' dict; expected a nerfstudio checkpoint (step-*.ckpt)")
    prefix = next((k[: -len("means")] for k in pipe if isinstance(k, str) and k.endswith("gauss_params.means")), None)
    if prefix is None:
        raise InputError(f"{path}: pipeline has no '_model.gauss_params.means'; expected a splatfacto checkpoint")
    g = {k[len(prefix):]: v for k, v in pipe.items() if isinstance(k, str) and k.startswith(prefix)}
    w = prefix
    n = _n(g, "means", path, w)
    if isinstance(g.get("opacities"), torch.Tensor) and g["opacities"].dim() == 1:
        g["opacities"] = g["opacities"][:, None]
    if isinstance(g.get("features_dc"), torch.Tensor) and g["features_dc"].dim() == 3:
        g["features_dc"] = g["features_dc"].reshape(g["features_dc"].shape[0], -1)
    scene = GaussianScene(
        means=_tensor(g, "means", path, (n, 3), w), quats=_tensor(g, "quats", path, (n, 4), w),
        scales=_tensor(g, "scales", path, (n, 3), w), opacities=_tensor(g, "opacities", path, (n, 1), w)[:, 0],
        sh0=_tensor(g, "features_dc", path, (n, 3), w),
        shN=_sh_rest(g, "features_rest", path, n, w),
        meta=_meta(ckpt, "nerfstudio_ckpt", path, {"pipeline", "optimizers", "schedulers", "scalers"}))
    scene = repair_scene(scene, str(path))
    net = {k[len("_model.compensation."):]: v for k, v in pipe.items()
           if isinstance(k, str) and k.startswith("_model.compensation.")}
    if net:  # splatfacto-sundae's jointly trained compensation net: eval applies it
        from ..compensation import net_from_state_dict

        try:
            scene.meta = dict(scene.meta, compensation=net_from_state_dict(net))
        except (ValueError, RuntimeError) as e:
            raise InputError(f"{path}: unreadable _model.compensation.* weights ({e})") from None
    return scene


def _sh_rest(d: dict, key: str, path: Path, n: int, where: str) -> torch.Tensor:
    if d.get(key) is None:
        return torch.zeros(n, 0, 3)
    t = _tensor(d, key, path, (n, -1, 3), where)
    if t.shape[1] not in SH_COEFFS_TO_DEGREE:
        raise InputError(f"{path}: {where}{key} has {t.shape[1]} coefficients per colour; expected 0, 3, 8 or 15")
    return t


def _meta(ckpt: dict, fmt: str, path: Path, used: set[str]) -> dict:
    try:
        step = int(ckpt.get("step", 0))
    except (TypeError, ValueError, RuntimeError):
        step = 0
    meta: dict[str, Any] = {"format": fmt, "source": str(path), "step": step}
    dropped = sorted(str(k) for k in ckpt if k not in used and k != "step")
    if dropped:
        meta["dropped_keys"] = dropped
    return meta


def write_gsplat_ckpt(scene: GaussianScene, path: str | os.PathLike) -> None:
    """Write a gsplat simple_trainer checkpoint (atomically); ``step`` from ``scene.meta``."""
    splats = {"means": scene.means, "scales": scene.scales, "quats": scene.quats, "opacities": scene.opacities,
              "sh0": scene.sh0[:, None, :], "shN": scene.shN}
    splats = {k: v.detach().cpu().contiguous() for k, v in splats.items()}
    splats.update((k, v.detach().cpu().contiguous()) for k, v in scene.extra.items() if k not in splats)
    with atomic_path(path) as tmp:
        torch.save({"step": int(scene.meta.get("step", 0)), "splats": splats}, tmp)
