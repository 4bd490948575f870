"""Checkpoints of hash-grid fields: one ``.safetensors`` file, tensors + JSON metadata (no pickle).

Metadata: ``format = "prunekit.hashgrid"``, ``version``, ``spec`` (field architecture), ``kind``
(``dense`` | ``hollow`` | ``compact``) and free-form ``info`` (training config and log summary).
A compacted model's kept-row index and cell mask are stored as bitmaps (1 bit per logical row / cell)
and expanded to a sorted int32 index when loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from prunekit import InputError

FORMAT = "prunekit.hashgrid"
VERSION = "1"


def field_kind(field) -> str:
    from .field import CompactField

    if isinstance(field, CompactField):
        return "compact"
    return "dense" if field.saliency is None else "hollow"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool [N] -> uint8 [ceil(N/8)], little bit order."""
    m = torch.nn.functional.pad(mask.reshape(-1).to(torch.uint8), (0, (-mask.numel()) % 8)).view(-1, 8)
    return (m << torch.arange(8, dtype=torch.uint8)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    bits = (packed.to(torch.uint8)[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1
    if bits.numel() < n:
        raise ValueError(f"bitmap holds {bits.numel()} bits, expected {n}")
    return bits.reshape(-1)[:n].to(torch.bool)


def stored_state(field) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores (compact index and mask packed as bitmaps), on the CPU."""
    state = {k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
    if "encoding.kept_rows" in state:
        rows = state.pop("encoding.kept_rows").long()
        used = torch.zeros(field.encoding.logical_size(), dtype=torch.bool)
        used[rows] = True
        state["encoding.kept_bitmap"] = pack_bits(used)
    if "saliency.mask" in state:
        state["saliency.mask_bitmap"] = pack_bits(state.pop("saliency.mask"))
    return state


def save(field, path: str | Path, info: dict[str, Any] | None = None) -> None:
    """Write ``field`` to ``path`` (the caller makes it atomic, e.g. with :func:`prunekit.atomic_path`)."""
    from safetensors.torch import save_file

    state = stored_state(field)
    meta = {"format": FORMAT, "version": VERSION, "spec": json.dumps(field.spec()), "kind": field_kind(field),
            "info": json.dumps(info or {}, default=float)}
    save_file(state, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str] | None:
    """The file's safetensors metadata, or None when it is not a readable safetensors file."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # noqa: BLE001 - any failure means "not ours"
        return None


def load(path: str | Path) -> tuple[Any, dict]:
    """(field, info) from a checkpoint written by :func:`save`. Raises InputError on anything else."""
    from safetensors.torch import load_file

    from .compact import CompactHashGrid
    from .field import CompactField, HollowField
    from .saliency import CellMask

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    meta = read_metadata(path)
    if meta is None:
        raise InputError(f"{path}: not a safetensors file")
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r} (a prunekit hash-grid checkpoint)")
    try:
        spec = json.loads(meta["spec"])
        kind = meta["kind"]
        info = json.loads(meta.get("info", "{}"))
        state = load_file(str(path))
        field = HollowField(spec["grid"], spec["saliency_res"], spec["hidden"], spec["geo_dim"],
                            background=None if spec["background"] is None else tuple(spec["background"]))
        if kind == "compact":
            field.__class__ = CompactField
            n_rows = field.encoding.num_levels * field.encoding.table_size
            rows = unpack_bits(state.pop("encoding.kept_bitmap"), n_rows).nonzero().flatten().to(torch.int32)
            state["encoding.kept_rows"] = rows
            state["saliency.mask"] = unpack_bits(state.pop("saliency.mask_bitmap"), spec["saliency_res"] ** 3)
            field.encoding = CompactHashGrid(field.grid_spec, rows)
            field.saliency = CellMask(state["saliency.mask"], spec["saliency_res"])
        elif kind not in ("dense", "hollow"):
            raise ValueError(f"unknown kind {kind!r}")
        field.load_state_dict(state, strict=True)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed metadata or tensors: one clear line
        raise InputError(f"{path}: not a valid {FORMAT} checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(f"{path}: tensor {bad[0]!r} has non-finite values")
    field.eval()
    return field, info


def sizes(field) -> dict[str, float]:
    """Hash-table parameters, all parameters, bytes stored in a checkpoint, bytes held in memory at render
    time (a compact index is an int32 per kept row there), kept cells."""
    state = field.state_dict()
    out = {"hash_params": float(field.encoding.hash_table.numel()),
           "params": float(sum(v.numel() for k, v in state.items() if v.is_floating_point())),
           "bytes": float(sum(v.numel() * v.element_size() for v in stored_state(field).values())),
           "memory_bytes": float(sum(v.numel() * v.element_size() for v in state.values()))}
    if field.saliency is not None:
        out["cells"] = float(field.saliency.kept().sum())
    return out
