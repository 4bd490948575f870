"""SUNDAE graph build: the radius pair search ("auto") against the all-points kNN build, same run.

For each scene: wall and CPU seconds of ``high_pass_scores`` with ``build="auto"`` and
``build="knn"`` (best of ``--repeats``), their ratio, and how far the scores differ (both
builds are exact, so only float rounding and distance ties should show), plus the graph
facts (edges, share of Gaussians with a non-zero score). JSON: bench-out/sundae_graph.json.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from bench_ply_io import best
from common import DATA, ROOT, WORK, write_result

from prunekit_splat import graph
from prunekit_splat.formats import read_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", default=",".join([str(DATA / "splats" / "donut.ply"), str(ROOT / "scenes" / "cow.ply"),
                                                   str(WORK / "tile_100000.ply"), str(WORK / "tile_1000000.ply")]))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    graph.high_pass_scores(torch.randn(100, 3))  # imports scipy.spatial outside the timings
    rows = []
    for path in args.scenes.split(","):
        if not os.path.exists(path):
            rows.append({"scene": path, "skipped": "missing (bench_speed.py makes the tiles)"})
            continue
        means = read_scene(path).means.clone()
        out = {}
        timing = {}
        for build in ("auto", "knn"):
            timing[build] = best(lambda: out.__setitem__(build, graph.high_pass_scores(means, build=build)),
                                 args.repeats)
        a, k = out["auto"].double(), out["knn"].double()
        x = means.double().numpy()
        src, _, _ = graph.radius_graph((x - x.mean(0)).astype(np.float32), 16)
        rows.append({
            "scene": path, "gaussians": len(means),
            "auto_wall_s": timing["auto"][0], "auto_cpu_s": timing["auto"][1],
            "knn_wall_s": timing["knn"][0], "knn_cpu_s": timing["knn"][1],
            "speedup_wall": timing["knn"][0] / timing["auto"][0], "speedup_cpu": timing["knn"][1] / timing["auto"][1],
            "max_abs_diff_over_max_score": float((a - k).abs().max() / k.abs().max().clamp_min(1e-30)),
            "same_nonzero_set": bool(torch.equal(a > 0, k > 0)),
            "directed_edges": int(len(src)), "nonzero_score_share": float((k > 0).double().mean()),
            "load_1m": os.getloadavg()[0],
        })
        print(rows[-1], flush=True)
    write_result("sundae_graph", {"max_neighbors": 16, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
