"""Speed and memory of scene pruning, 10k .. 2M Gaussians (tiles of a real scene).

For each size: PLY read and write throughput (MB/s, best of 3, wall and CPU); `prunekit prune
-m METHOD --keep 0.1` end to end as a subprocess: wall time, the child's CPU time (user+sys of
all its threads, from wait4), peak RSS (ru_maxrss) vs the file size, and the per-stage times of
its own ``--json`` report; splat-transform ``-g cpu --decimate 10%`` on the same file (the peer
tool, same run, wall and CPU). The 1-minute load average is recorded around every run: the
targets (1M Gaussians: read >= 500 MB/s, sundae prune <= 5 s, peak <= 3x file) are stated for
2 idle cores, and on a shared machine the child's CPU seconds are the figure that other jobs
disturb least. JSON: bench-out/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ply_io import best
from common import DATA, WORK, splat_transform, splat_transform_version, tile_scene, write_result

from prunekit_splat.formats import read_scene, write_scene

TARGETS = {"read_mb_s": 500.0, "prune_sundae_s": 5.0, "peak_over_file": 3.0}


# Peak RSS must be the measured program's own: Linux carries ru_maxrss across exec, and a child
# spawned from this (large) benchmark process would report our peak. So a small launcher forks
# a fresh process (whose maxrss starts at zero), execs the command there and reports its rusage.
_LAUNCH = """import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
sys.stderr.write("\\nRUSAGE " + json.dumps([ru.ru_utime + ru.ru_stime, ru.ru_maxrss]) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(cmd: list[str]) -> tuple[dict, bytes]:
    """Run ``cmd``; wall s, its CPU s (user+sys, all threads), its peak RSS MB, the 1-minute
    load average before/after; and its stdout. Raises on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load = os.getloadavg()[0]
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], stdout=out, stderr=err)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        text = err.read().decode(errors="replace")
        if p.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {text[-300:]}")
        cpu, maxrss_kb = json.loads(text.rsplit("RUSAGE ", 1)[1])
        stats = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": maxrss_kb / 1024.0, "load_1m": [load, os.getloadavg()[0]]}
        return stats, out.read()


def timed_cli(args: list[str]) -> dict:
    """One prunekit CLI run (``--json``) with the per-stage times of its report."""
    stats, stdout = run_child([sys.executable, "-m", "prunekit", *args])
    return {**stats, "stages_s": json.loads(stdout)["timings"]}


def timed_decimate(cmd: list[str], src: Path, dst: Path, count: int) -> dict:
    """splat-transform's merge-based decimation to ``count`` Gaussians."""
    return run_child([*cmd, "-q", "-w", "-g", "cpu", str(src), "--decimate", str(count), str(dst)])[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000,2000000")
    ap.add_argument("--methods", default="sundae,opacity,random")
    ap.add_argument("--source", default=str(DATA / "splats" / "train-1000.ply"))
    ap.add_argument("--decimate-max", type=int, default=1_000_000,
                    help="run splat-transform only up to this many Gaussians (it takes minutes at 1M)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    base = read_scene(args.source)
    st = splat_transform()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        path = WORK / f"tile_{n}.ply"
        scene = tile_scene(base, n)
        write_s = best(lambda: write_scene(scene, path), 1)
        del scene
        mb = path.stat().st_size / 1e6
        read_s = best(lambda: read_scene(path), 3)
        row = {"gaussians": n, "file_mb": round(mb, 2), "read_s": read_s[0], "read_cpu_s": read_s[1],
               "read_mb_s": mb / read_s[0], "read_mb_per_cpu_s": mb / read_s[1],
               "write_s": write_s[0], "write_cpu_s": write_s[1], "write_mb_s": mb / write_s[0]}
        for m in args.methods.split(","):
            out = WORK / f"out_{m}_{n}.ply"
            r = timed_cli(["prune", str(path), "-m", m, "--keep", "0.1", "-o", str(out), "--no-progress", "--json"])
            row[f"prune_{m}"] = {**r, "peak_over_file": r["peak_rss_mb"] / mb}
            row.update({f"prune_{m}_s": r["wall_s"], f"prune_{m}_cpu_s": r["cpu_s"],  # flat keys: README table
                        f"prune_{m}_peak_over_file": r["peak_rss_mb"] / mb})
        if st and n <= args.decimate_max:
            try:
                row["splat_transform_decimate"] = timed_decimate(st, path, WORK / f"dec_{n}.ply", n // 10)
                row["splat_transform_decimate_s"] = row["splat_transform_decimate"]["wall_s"]
                row["splat_transform_decimate_cpu_s"] = row["splat_transform_decimate"]["cpu_s"]
            except RuntimeError as e:
                row["splat_transform_error"] = str(e)[:200]
        rows.append(row)
        print(json.dumps(row), flush=True)
    met = {}
    for row in rows:
        if row["gaussians"] == 1_000_000 and "prune_sundae" in row:
            s = row["prune_sundae"]
            met = {"read_mb_s": row["read_mb_s"] >= TARGETS["read_mb_s"],
                   "prune_sundae_wall_s": s["wall_s"] <= TARGETS["prune_sundae_s"],
                   "prune_sundae_cpu_s": s["cpu_s"] <= TARGETS["prune_sundae_s"],
                   "peak_over_file": s["peak_over_file"] <= TARGETS["peak_over_file"]}
    write_result("speed", {"source": args.source, "keep": 0.1, "nice": os.nice(0), "targets": TARGETS,
                           "targets_met_at_1M": met, "rows": rows,
                           "splat_transform": splat_transform_version(st) if st else None})


if __name__ == "__main__":
    main()
