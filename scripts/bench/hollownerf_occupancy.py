#!/usr/bin/env python
"""How much of the synthetic scene's box HollowNeRF can leave out, and how many hash rows its kept cells reach.

Figures (all written to the JSON, nothing trained unless ``--train``):

- **volume**: fraction of the unit cube inside the solids of ``data.synthetic_render`` (three spheres and a
  slab), Monte Carlo with ``--mc`` points (standard error given);
- **cells**: of the G^3 saliency cells, those that intersect a solid ("occupied": the closest point of the
  cell to a sphere centre is within its radius, or the cell overlaps the slab), and those that contain
  solid surface (occupied and not entirely inside one solid);
- **per level** l (resolution R_l) and mask M: V_l(M) = distinct lattice vertices that points in the cells of
  M read (``compact.kept_vertices`` without compaction's 1e-6 safety margin), the load V_l / T of a table of T rows, and the fraction of the T rows some of
  those vertices hash to (what compaction keeps), for M = all cells, occupied cells, surface cells and,
  with ``--train``, the masks that HollowNeRF learns at the table sizes of the 30 % / 55 % points (same
  recipe as ``bench_hollownerf.py``), with their overlap with the occupied/surface cells;
- with ``--train``, also the share of the hash-table gradient of a trained *dense* grid that comes from
  samples outside the occupied cells, and outside the learned 30 % mask (the traffic that HollowNeRF's gate
  removes): per-row gradients of one batch split by where the sample lies, sum of squares.

    python scripts/bench/hollownerf_occupancy.py --train -o bench-out/hollownerf-occupancy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def solid_masks(res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(occupied, surface) flat G^3 masks of the synthetic scene's cells (z-fastest, like ``cell_index``)."""
    from prunekit_hashgrid.data import _BOX, _SPHERES

    ax = torch.arange(res, dtype=torch.float64) / res
    lo = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    hi = lo + 1.0 / res
    occ = torch.zeros(lo.shape[0], dtype=torch.bool)
    inside = torch.zeros_like(occ)
    for cx, cy, cz, r, _ in _SPHERES:
        c = torch.tensor([cx, cy, cz], dtype=torch.float64)
        near = torch.maximum(lo, torch.minimum(c, hi))  # closest point of the cell to the centre
        far = torch.where((c - lo).abs() > (hi - c).abs(), lo, hi)  # farthest corner
        occ |= (near - c).norm(dim=-1) <= r
        inside |= (far - c).norm(dim=-1) <= r
    bmin, bmax = (torch.tensor(v, dtype=torch.float64) for v in _BOX[:2])
    occ |= ((lo < bmax) & (hi > bmin)).all(-1)
    inside |= ((lo >= bmin) & (hi <= bmax)).all(-1)
    return occ, occ & ~inside


def solid_volume(n: int, seed: int = 0) -> tuple[float, float]:
    """(fraction of the unit cube inside a solid, its standard error), Monte Carlo."""
    from prunekit_hashgrid.data import _BOX, _SPHERES

    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    hit = ((x >= torch.tensor(_BOX[0], dtype=torch.float64)) & (x <= torch.tensor(_BOX[1], dtype=torch.float64))).all(-1)
    for cx, cy, cz, r, _ in _SPHERES:
        hit |= (x - torch.tensor([cx, cy, cz], dtype=torch.float64)).norm(dim=-1) <= r
    p = float(hit.double().mean())
    return p, (p * (1 - p) / n) ** 0.5


def level_table(mask: torch.Tensor, res: int, scalings: list[int], tables: list[int]) -> list[dict]:
    """Per level: vertices the mask's cells touch, and per table size T the load and the fraction of rows hit."""
    from prunekit_hashgrid.compact import kept_vertices
    from prunekit_hashgrid.encoding import hash_vertices

    out = []
    for R in scalings:
        hit = {T: torch.zeros(T, dtype=torch.bool) for T in tables}
        n = 0
        for v in kept_vertices(mask, res, R, max_slab=1 << 21, margin=0.0):
            n += v.shape[0]
            for T in tables:
                hit[T][hash_vertices(v, T)] = True
        out.append({"resolution": R, "vertices": n, "lattice_vertices": (R + 1) ** 3,
                    **{f"T{T}": {"load": n / T, "rows_reached": float(hit[T].float().mean())} for T in tables}})
    return out


def dense_gradient_split(field, views, occupied: torch.Tensor, res: int, samples: int, rays: int, seed: int) -> dict:
    """Share of the table gradient (sum over rows of |g_row|^2, one batch) from samples outside the cells of
    ``occupied`` (the occupied cells, or a learned HollowNeRF mask)."""
    from prunekit_hashgrid.render import render_rays
    from prunekit_hashgrid.saliency import cell_index

    g = torch.Generator().manual_seed(seed)
    rgb = views.images.reshape(-1, 3)
    ro, rd = views.rays_o.reshape(-1, 3), views.rays_d.reshape(-1, 3)
    idx = torch.randint(0, rgb.shape[0], (rays,), generator=g)
    enc = field.encoding
    grads = {}
    for part in ("inside", "outside", "all"):
        def features(x, part=part):
            h = enc(x)
            if part == "all":
                return h
            inside = occupied[cell_index(x, res)][:, None]
            return torch.where(inside if part == "inside" else ~inside, h, h.detach())
        field.features = features
        field.zero_grad(set_to_none=True)
        out = render_rays(field, ro[idx], rd[idx], samples, perturb=True, hard=True,
                          generator=torch.Generator().manual_seed(seed + 1))
        torch.mean((out.rgb - rgb[idx]) ** 2).backward()
        grads[part] = enc.hash_table.grad.detach().clone()
    del field.features
    energy = {k: float((v**2).sum()) for k, v in grads.items()}
    return {"gradient_energy": energy, "outside_share": energy["outside"] / max(1e-30, energy["inside"] + energy["outside"]),
            "split_is_exact": bool(torch.allclose(grads["inside"] + grads["outside"], grads["all"], atol=1e-9, rtol=1e-4)),
            "rays": rays}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--saliency-res", type=int, default=32)
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--max-res", type=int, default=256)
    ap.add_argument("--tables", default="614,1126,2048", help="rows per level to evaluate the load for")
    ap.add_argument("--mc", type=int, default=1 << 22, help="Monte Carlo points for the solid volume")
    ap.add_argument("--train", action="store_true", help="also train HollowNeRF masks and a dense grid (600 steps)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default=str(ROOT / "bench-out" / "hollownerf-occupancy.json"))
    a = ap.parse_args(argv)

    from prunekit import atomic_write_text
    from prunekit.report import machine_info
    from prunekit_hashgrid.encoding import level_resolutions

    try:
        tables = [int(t) for t in a.tables.split(",")]
        if a.saliency_res < 1 or a.levels < 1 or a.mc < 1 or min(tables) < 1:
            raise ValueError
    except ValueError:
        print("error: --tables must be positive integers; --saliency-res, --levels, --mc >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    G = a.saliency_res
    scalings = [int(r) for r in level_resolutions(a.levels, 16, a.max_res).tolist()]
    occ, surf = solid_masks(G)
    vol, vol_se = solid_volume(a.mc, a.seed)
    out = {"benchmark": "hollownerf-occupancy", "machine": machine_info(), "commands": [" ".join(sys.argv)],
           "inputs": {k: v for k, v in vars(a).items() if k != "output"},
           "volume_fraction": vol, "volume_fraction_stderr": vol_se,
           "cells": {"total": G**3, "occupied": int(occ.sum()), "surface": int(surf.sum()),
                     "occupied_fraction": float(occ.float().mean()), "surface_fraction": float(surf.float().mean())},
           "masks": {}}
    masks = {"all": torch.ones(G**3, dtype=torch.bool), "occupied": occ, "surface": surf}
    if a.train:
        out["masks_trained"] = _train_masks(a, G, occ, surf, masks, out)
    for name, m in masks.items():
        out["masks"][name] = {"cells": int(m.sum()), "per_level": level_table(m, G, scalings, tables)}
        print(f"{name:12s} cells {int(m.sum()):6d}  vertices per level "
              f"{[r['vertices'] for r in out['masks'][name]['per_level']]}", flush=True)
    atomic_write_text(a.output, json.dumps(out, indent=2) + "\n")
    print(f"volume {vol:.4f}  occupied cells {out['cells']['occupied_fraction']:.4f}  "
          f"surface cells {out['cells']['surface_fraction']:.4f}  -> {a.output}")
    return 0


def _train_masks(a, G, occ, surf, masks, out) -> dict:
    """HollowNeRF masks at the 30 % / 55 % table sizes and a dense grid, with the bench's recipe (one seed)."""
    from prunekit_hashgrid.data import load_scene, split
    from prunekit_hashgrid.train import TrainConfig, train

    tr, _ = split(load_scene("synthetic", res=48, n_views=24))
    grid = dict(num_levels=a.levels, min_res=16, max_res=a.max_res, features_per_level=2)
    base = dict(steps=a.steps, batch_rays=512, samples=32, saliency_res=G, saliency_target=0.1, seed=a.seed, threads=1)
    info = {}
    for name, T in (("hollow@0.3", 614), ("hollow@0.55", 1126)):
        kept = train(tr, TrainConfig(mode="hollow", grid={**grid, "table_size": T}, **base)).field.saliency.kept()
        masks[name] = kept
        info[name] = {"table_size": T, "kept_fraction": float(kept.float().mean()),
                      "kept_that_are_occupied": float((kept & occ).sum() / kept.sum()),
                      "occupied_kept": float((kept & occ).sum() / occ.sum()),
                      "surface_kept": float((kept & surf).sum() / surf.sum())}
        print(name, info[name], flush=True)
    dense = train(tr, TrainConfig(mode="dense", grid={**grid, "table_size": 2048}, **base)).field
    out["dense_gradient_split"] = {f"outside_{k}": dense_gradient_split(dense, tr, masks[k], G, 32, 4096, a.seed)
                                   for k in ("occupied", "hollow@0.3")}
    print("dense gradient split", out["dense_gradient_split"], flush=True)
    return info


if __name__ == "__main__":
    sys.exit(main())
