"""``prunekit prune / info / eval`` for hash-grid checkpoints (the hashgrid domain's FileTarget).

Units are saliency cells. ``prunekit prune CKPT -m hollownerf --threshold 0 -o OUT.safetensors`` keeps the
cells the trained gate kept (logit > 0); ``--keep r`` keeps the top r of cells by saliency logit. The kept
cells are then compacted (``compact.compact_field``): hash rows reached only from pruned cells are freed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunekit import InputError, Scores, option


@dataclass
class HashgridOptions:
    eval_views: int = option(8, "orbit views rendered to compare models (prune report and `prunekit eval`)")
    resolution: int = option(48, "side in pixels of those comparison renders")
    samples: int = option(64, "samples per ray of those comparison renders")

    def __post_init__(self) -> None:
        for name in ("resolution", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_views < 0:
            raise ValueError(f"--eval-views must be >= 0, got {self.eval_views}")


def saliency_scores(field, ctx, cfg) -> Scores:
    """Scores of the ``cells`` group: the trained saliency logits s_c (higher = more salient)."""
    from .checkpoint import field_kind

    kind = field_kind(field)
    if kind != "hollow":
        raise InputError(f"a {kind} checkpoint has no trained saliency grid to prune by "
                         f"(train with `scripts/train_hashgrid.py --mode hollow`)")
    return Scores({"cells": field.saliency.logits.detach().clone()})


def orbit_rays(n: int, res: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` cameras on a sphere (radius 1.6) around the unit cube, looking at its centre."""
    from .data import camera_rays, look_at

    g = torch.Generator().manual_seed(seed)
    f = 0.5 * res / math.tan(math.radians(20))
    centre = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    out = []
    for i in range(n):
        az = 2 * math.pi * (i / max(n, 1)) + float(torch.rand((), generator=g))
        el = math.radians(-30 + 90 * float(torch.rand((), generator=g)))
        eye = centre + 1.6 * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)],
                                          dtype=torch.float64)
        out.append(camera_rays(look_at(eye, centre), res, res, f, f, res / 2, res / 2))
    return out


def compare(ref, cand, opts: HashgridOptions) -> dict[str, float]:
    """Mean PSNR of ``cand``'s renders against ``ref``'s over orbit views, and field queries of each."""
    from .render import render_image
    from .train import psnr

    ps, qa, qb, n = [], 0, 0, 0
    for o, d in orbit_rays(opts.eval_views, opts.resolution):
        a, na, n_ = render_image(ref, o, d, opts.samples, keep=_keep(ref))
        b, nb, _ = render_image(cand, o, d, opts.samples, keep=_keep(cand))
        ps.append(psnr(b, a.clamp(0, 1)))
        qa, qb, n = qa + na, qb + nb, n + n_
    finite = [p for p in ps if math.isfinite(p)]
    return {"psnr_vs_reference": sum(finite) / len(finite) if finite else float("inf"),
            "query_fraction_reference": qa / max(1, n), "query_fraction": qb / max(1, n), "views": float(len(ps))}


def _keep(field):
    return field.saliency.keep_fn() if field.saliency is not None else None


class HashgridFiles:
    domain = "hashgrid"
    suffixes = (".safetensors",)
    reads = "hash-grid NeRF .safetensors checkpoints written by scripts/train_hashgrid.py"
    options = HashgridOptions

    def can_read(self, path) -> bool:
        from .checkpoint import FORMAT, read_metadata

        p = Path(path)
        if p.suffix != ".safetensors":
            return False
        if not p.exists():
            return True  # let load() say "no such file"
        meta = read_metadata(p)
        return meta is not None and meta.get("format") == FORMAT

    def load(self, path):
        from .checkpoint import load

        return load(path)[0]

    def save(self, field, path) -> None:
        from .checkpoint import save

        save(field, path, {"pruned_by": "prunekit hollownerf"})

    def size(self, field) -> dict[str, float]:
        from .checkpoint import sizes

        return sizes(field)

    def info(self, field, path) -> dict[str, Any]:
        import json

        from .checkpoint import field_kind, read_metadata, sizes

        info = json.loads((read_metadata(path) or {}).get("info", "{}"))
        d: dict[str, Any] = {"file": str(path), "kind": field_kind(field), "file_bytes": Path(path).stat().st_size,
                             **{k: int(v) for k, v in sizes(field).items()}, "grid": field.grid_spec,
                             "saliency_res": field.saliency.res if field.saliency is not None else 0}
        d.update({k: v for k, v in info.items() if not isinstance(v, (list, dict))})
        return d

    def context(self, field, opts: HashgridOptions, path):
        return None

    def apply(self, field, mask, ctx, opts: HashgridOptions, report):
        from .compact import compact_field

        kept = mask["cells"]
        trained = field.saliency.kept()
        out, stats = compact_field(field, kept)
        report.notes.append(f"hash rows kept {stats['rows_kept']:,}/{stats['rows_total']:,} "
                            f"(per level: {', '.join(map(str, stats['rows_kept_per_level']))})")
        reopened = int((kept & ~trained).sum())
        if reopened:
            report.notes.append(f"{reopened} kept cells were pruned by the trained gate: their features were not "
                                f"trained for them, expect renders to change there")
        if opts.eval_views:
            with report.time("compare"):
                m = compare(field, out, opts)
            report.metrics["psnr_vs_original"] = m["psnr_vs_reference"]
            report.metrics["query_fraction"] = m["query_fraction"]  # field queries / samples in the cube
        return out

    def evaluate(self, ref, cand, opts: HashgridOptions, report) -> dict[str, float]:
        return compare(ref, cand, opts)


HASHGRID_FILES = HashgridFiles()
