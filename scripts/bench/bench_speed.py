"""Speed and memory of scene pruning, 10k .. 2M Gaussians (tiles of a real scene).

For each size: PLY read and write throughput (MB/s); `prunekit prune -m METHOD --keep 0.1`
end to end as a subprocess (wall time and peak RSS via /usr/bin/time when available, vs the
file size) for the view-free methods; splat-transform `--decimate 10%` time on the same file
(the peer tool, same run). JSON: bench-out/speed.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, WORK, decimate, splat_transform, splat_transform_version, tile_scene, write_result

from prunekit_splat.formats import read_scene, write_scene


def timed_cli(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one prunekit CLI subprocess (rusage of that child via wait4)."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "prunekit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(err.decode()[-500:])
    return wall, usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000,2000000")
    ap.add_argument("--methods", default="sundae,opacity,random")
    ap.add_argument("--source", default=str(DATA / "splats" / "train-1000.ply"))
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    base = read_scene(args.source)
    st = splat_transform()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        path = WORK / f"tile_{n}.ply"
        scene = tile_scene(base, n)
        t = time.perf_counter()
        write_scene(scene, path)
        t_write = time.perf_counter() - t
        mb = path.stat().st_size / 1e6
        best_read = min(_time(lambda: read_scene(path)) for _ in range(3))
        row = {"gaussians": n, "file_mb": round(mb, 2), "read_s": best_read, "read_mb_s": mb / best_read,
               "write_s": t_write, "write_mb_s": mb / t_write}
        for m in args.methods.split(","):
            out = WORK / f"out_{m}_{n}.ply"
            wall, peak = timed_cli(["prune", str(path), "-m", m, "--keep", "0.1", "-o", str(out), "--no-progress",
                                    "--json"])
            row[f"prune_{m}_s"] = wall
            row[f"prune_{m}_peak_rss_mb"] = peak
            row[f"prune_{m}_peak_over_file"] = peak / mb
        if st:
            try:
                row["splat_transform_decimate_s"] = decimate(st, path, WORK / f"dec_{n}.ply", n // 10)
            except RuntimeError as e:
                row["splat_transform_error"] = str(e)[:200]
        rows.append(row)
        print(row, flush=True)
    write_result("speed", {"source": args.source, "keep": 0.1, "rows": rows,
                           "splat_transform": splat_transform_version(st) if st else None})


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
