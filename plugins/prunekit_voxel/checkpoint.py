"""Checkpoints of :class:`~prunekit_voxel.model.Tsp3dNet`: safetensors weights + the constructor
arguments and voxel size in the safetensors metadata (no pickles; safe for untrusted files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from prunekit import InputError, atomic_path

from .model import Tsp3dNet

FORMAT = "prunekit.tsp3d/1"


def save_checkpoint(net: Tsp3dNet, path: str | os.PathLike, arch: dict, voxel_size: float, **info) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "arch": json.dumps(arch), "voxel_size": repr(float(voxel_size)), "info": json.dumps(info)}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)


def load_checkpoint(path: str | os.PathLike) -> tuple[Tsp3dNet, float, dict]:
    """(network in eval mode, voxel size, info) or a one-line :class:`InputError`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise InputError(f"{path}: not a TSP3D checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
        net = Tsp3dNet(**json.loads(meta["arch"]))
        net.load_state_dict(load_file(str(path)))
        return net.eval(), float(meta["voxel_size"]), json.loads(meta.get("info", "{}"))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad input file
        raise InputError(f"{path}: unreadable TSP3D checkpoint ({type(e).__name__}: {e})") from None
