"""Mask: named groups of bool tensors, True = keep.

Combine with ``&``, ``|`` and ``~``; count; save and load (safetensors or npz);
summarise. Applying a mask to a model or a scene is the plugin's job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .fileio import atomic_path
from .groups import NamedGroups


@dataclass
class Mask(NamedGroups):
    """Keep-masks per group: ``groups[name][i]`` is True when unit ``i`` is kept."""

    groups: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        out = {}
        for k, v in self.groups.items():
            t = torch.as_tensor(v)
            if t.dim() != 1:
                raise ValueError(f"mask group {k!r}: expected 1-D, got shape {tuple(t.shape)}")
            out[k] = t.to(torch.bool)
        self.groups = out

    # construction -------------------------------------------------------------
    @classmethod
    def full(cls, sizes: dict[str, int], keep: bool = True) -> "Mask":
        return cls({k: torch.full((n,), keep, dtype=torch.bool) for k, n in sizes.items()})

    @classmethod
    def single(cls, values, name: str = "units") -> "Mask":
        return cls({name: values})

    # access ---------------------------------------------------------------------
    @property
    def only(self) -> torch.Tensor:
        """The tensor of a single-group mask."""
        if len(self.groups) != 1:
            raise ValueError(f"mask has {len(self.groups)} groups, expected exactly one")
        return next(iter(self.groups.values()))

    # combination ----------------------------------------------------------------
    def _check_same(self, other: "Mask") -> None:
        if list(self.groups) != list(other.groups):
            raise ValueError(f"masks have different groups: {list(self.groups)} vs {list(other.groups)}")
        for k in self.groups:
            if self.groups[k].shape != other.groups[k].shape:
                raise ValueError(f"mask group {k!r} sizes differ: {self.groups[k].numel()} vs {other.groups[k].numel()}")

    def __and__(self, other: "Mask") -> "Mask":
        self._check_same(other)
        return Mask({k: self.groups[k] & other.groups[k] for k in self.groups})

    def __or__(self, other: "Mask") -> "Mask":
        self._check_same(other)
        return Mask({k: self.groups[k] | other.groups[k] for k in self.groups})

    def __invert__(self) -> "Mask":
        return Mask({k: ~v for k, v in self.groups.items()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or list(self.groups) != list(other.groups):
            return False
        return all(torch.equal(self.groups[k], other.groups[k]) for k in self.groups)

    # counting -------------------------------------------------------------------
    def kept(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.groups.items()}

    def sizes(self) -> dict[str, int]:
        return {k: v.numel() for k, v in self.groups.items()}

    @property
    def total_kept(self) -> int:
        return sum(self.kept().values())

    @property
    def total(self) -> int:
        return sum(self.sizes().values())

    @property
    def kept_fraction(self) -> float:
        return self.total_kept / self.total if self.total else 1.0

    def summary(self) -> str:
        """One line per group: ``name: kept/total (pct)``."""
        lines = []
        for k, v in self.groups.items():
            n, kept = v.numel(), int(v.sum())
            pct = 100.0 * kept / n if n else 100.0
            lines.append(f"{k}: {kept}/{n} kept ({pct:.1f}%)")
        return "\n".join(lines)

    # IO -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as ``.safetensors`` (default) or ``.npz`` by suffix."""
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix == ".npz":
                with open(tmp, "wb") as f:
                    np.savez(f, **{k: v.numpy() for k, v in self.groups.items()})
            else:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in self.groups.items()}, str(tmp), metadata={"format": "prunekit.mask"})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mask":
        path = Path(path)
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    return cls({k: torch.from_numpy(z[k].astype(bool)) for k in z.files})
            from safetensors.torch import load_file

            return cls(dict(load_file(str(path))))
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad input file
            raise InputError(f"{path}: not a readable mask file ({type(e).__name__}: {e})") from None
