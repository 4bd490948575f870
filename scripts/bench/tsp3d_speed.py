#!/usr/bin/env python
"""TSP3D speed per operating point: forward CPU time unpruned vs TGP at fixed kept fractions (issue 9).

With ``--keep-ratios`` TGP keeps the top-k of each level, so the voxel counts (and with them every
stage's cost) depend on the room and the kept fractions, not on the weights: the speed of an operating
point can be measured without a trained checkpoint (``--checkpoint`` optional; default: the trained
architecture of ``scripts/train_tsp3d.py``, randomly initialised, seed 0). Accuracy needs a trained
network and ``bench_tsp3d.py``. CBA is left out (its added voxels depend on the weights).

Per held-out room (seeds >= 1,000,000, as in ``bench_tsp3d.py``) the unpruned forward and every
operating point run back to back in one single-threaded process, each on a fresh copy of the voxels
(no cached neighbour maps); reported: mean process CPU time per forward and per stage, voxel counts,
and the ratio unpruned / pruned of the summed CPU time. ``--repeat`` runs the whole pass again and keeps
the last (the first warms caches).

  python scripts/bench/tsp3d_speed.py --rooms 40 --keep-ratios 0.3,0.15 0.4,0.25 0.5,0.35 --name tsp3d_speed
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from prunekit.errors import run_script
from prunekit_voxel.checkpoint import load_checkpoint
from prunekit_voxel.data import room_sample
from prunekit_voxel.model import Tsp3dNet
from prunekit_voxel.sparse import SparseVoxels
from prunekit_voxel.text import TextEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tsp3d import STAGES, StageTimer  # noqa: E402
from common import write_result  # noqa: E402


def _pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two kept fractions like 0.4,0.25, got {text!r}") from None
    if not (0 < a <= 1 and 0 < b <= 1):
        raise argparse.ArgumentTypeError(f"kept fractions must lie in (0, 1], got {text!r}")
    return a, b


def measure(net, encoder, samples, voxel_size: float, points: list[tuple[float, float]]) -> dict:
    timer = StageTimer(net)
    settings = {"full": dict(prune=False)} | {f"{a},{b}": dict(prune=True, keep_ratios=(a, b)) for a, b in points}
    acc = {name: {"cpu": [], "stages": [], "counts": []} for name in settings}
    for s in samples:
        tok, pad = encoder.encode([s.text])
        for name, kw in settings.items():
            vox = SparseVoxels(s.voxels.coords, s.voxels.feats, s.voxels.stride)
            timer.take()
            with torch.no_grad():
                c = time.process_time()
                out = net(vox, tok[0], pad[0], voxel_size=voxel_size, cba=False, **kw)
                acc[name]["cpu"].append(time.process_time() - c)
            acc[name]["stages"].append(timer.take())
            acc[name]["counts"].append(out["counts"])
    n = len(samples)
    result = {}
    for name, a in acc.items():
        result[name] = {"mean_cpu_seconds": sum(a["cpu"]) / n,
                        "mean_stage_cpu_seconds": {k: sum(st.get(k, 0.0) for st in a["stages"]) / n
                                                   for k in dict.fromkeys(STAGES.values()) if k != "cba"},
                        "mean_counts": {k: sum(c[k] for c in a["counts"]) / n for k in a["counts"][0]}}
    for name in settings:
        if name != "full":
            result[name]["speedup_vs_full"] = sum(acc["full"]["cpu"]) / sum(acc[name]["cpu"])
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="trained TSP3D checkpoint (default: random init, same architecture)")
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--keep-ratios", type=_pair, nargs="+", default=[(0.3, 0.15), (0.4, 0.25), (0.5, 0.35)],
                    help="operating points R8,R4: kept fraction of the voxels reaching each TGP block")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--max-keys", type=int, default=512)
    ap.add_argument("--name", default="tsp3d_speed", help="bench-out/NAME.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    encoder = TextEncoder()
    if args.checkpoint is not None:
        net, voxel_size, _ = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        net, voxel_size = Tsp3dNet(cin=4, d=args.width, text_dim=encoder.dim, heads=4, layers=2,
                                   max_keys=args.max_keys, cba_layers=1).eval(), 0.04
    samples = [s for s in (room_sample(1_000_000 + i, voxel_size) for i in range(args.rooms)) if s is not None]
    for _ in range(args.repeat):
        result = measure(net, encoder, samples, voxel_size, args.keep_ratios)
    for name, r in result.items():
        print(f"{name:>10}: {1000 * r['mean_cpu_seconds']:7.1f} ms/forward"
              + (f"  {r['speedup_vs_full']:.2f}x" if "speedup_vs_full" in r else ""))
    path = write_result(args.name, {"inputs": {"checkpoint": str(args.checkpoint) if args.checkpoint else "random init",
                                               "rooms": len(samples), "voxel_size": voxel_size, "threads": 1,
                                               "keep_ratios": args.keep_ratios, "repeat": args.repeat},
                                    "settings": result})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_script(main)
