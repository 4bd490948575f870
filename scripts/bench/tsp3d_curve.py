#!/usr/bin/env python
"""Learning curve of the TSP3D pruned-vs-full gap from ``bench_tsp3d.py`` runs on the same rooms (issue 9).

    python scripts/bench/tsp3d_curve.py --point 0 PRE.json --point 12 A.json --point 19.5 B.json ... \\
        --out bench-out/tsp3d_curve.json

Each ``--point MINUTES JSON`` is one checkpoint evaluated on the same held-out rooms at the same
operating point; MINUTES is its training (CPU-minutes) at that operating point. Per point, over the
first ``--rooms`` rooms: Acc@0.25 of full / TGP / TGP+CBA with binomial standard errors, speed-ups,
and the paired gaps ``g_i = hit_pruned,i - hit_full,i`` (mean, ``std(g) / sqrt(n)``,
``bench_tsp3d.paired``). Against the first point, the paired change of each gap per room
``g_i(k) - g_i(0)`` (mean, ``std / sqrt(n)``) and of full accuracy; the same against the previous point
(the gain of each training segment).

Trend: ordinary least squares ``gap = a + b * minutes`` over the points from each point on (all, without
the first, ..., the last three),
and its uncertainty by a bootstrap over rooms (the same resampled rooms for every point, so the
correlation between checkpoints evaluated on one room set is kept): SE and 2.5/97.5 % percentiles
of ``b``, and of the minutes at which the line reaches ``--target`` (``(target - a) / b``; a
replicate with ``b <= 0`` never reaches it and counts as infinite). The bootstrap covers evaluation
noise only: one training run per point, so run-to-run training variance is not in these intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tsp3d import _read_json, hit_se, paired  # noqa: E402
from bench_tsp3d import gap_change as paired_gap_change  # noqa: E402

from prunekit import atomic_write_text, machine_info  # noqa: E402
from prunekit.errors import InputError, run_script  # noqa: E402

PRUNED = ("tgp", "tgp+cba")


def load_points(points: list[tuple[float, Path]], rooms: int | None) -> list[dict]:
    """Read the runs; refuse ones whose first ``rooms`` samples are not the same rooms and texts."""
    out, ref = [], None
    for minutes, path in points:
        run = _read_json(path).get("rooms")
        if not isinstance(run, dict) or "rows" not in run:
            raise InputError(f"{path}: no held-out rooms in this bench JSON")
        rows = run["rows"][:rooms] if rooms else run["rows"]
        keys = [(r["scene"], r["text"]) for r in rows]
        if ref is not None and keys != ref:
            raise InputError(f"{path}: its rooms differ from {points[0][1]}'s (use --rooms to take a common prefix)")
        ref = keys
        iou = {k: np.array([r[k]["iou"] for r in rows]) for k in ("full", *PRUNED)}
        cpu = {k: float(np.mean([r[k]["cpu_seconds"] for r in rows])) for k in ("full", *PRUNED)}
        out.append({"minutes": float(minutes), "json": str(path), "iou": iou, "cpu": cpu})
    return out


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS intercept and slope of ``y = a + b x``."""
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def _pct(v: np.ndarray, q: float) -> float | None:
    """The q-quantile of ``v`` (order statistic; ``None`` when it is infinite)."""
    s = np.sort(v)[min(len(v) - 1, int(q * len(v)))]
    return float(s) if np.isfinite(s) else None


def trend(pts: list[dict], setting: str, target: float, boots: int, rng) -> dict:
    """Slope of the paired gap against minutes, with a bootstrap over rooms (see the module docstring)."""
    x = np.array([p["minutes"] for p in pts])
    gaps = np.stack([(p["iou"][setting] >= 0.25).astype(float) - (p["iou"]["full"] >= 0.25) for p in pts])
    a, b = fit(x, gaps.mean(1))
    n = gaps.shape[1]
    bs = np.array([fit(x, gaps[:, rng.integers(0, n, n)].mean(1)) for _ in range(boots)])
    reach = np.where(bs[:, 1] > 0, (target - bs[:, 0]) / np.where(bs[:, 1] > 0, bs[:, 1], 1.0), np.inf)
    return {"points_minutes": x.tolist(), "intercept": a, "slope_per_minute": b, "slope_se": float(bs[:, 1].std(ddof=1)),
            "slope_p2.5": _pct(bs[:, 1], 0.025), "slope_p97.5": _pct(bs[:, 1], 0.975),
            "minutes_to_target": (target - a) / b if b > 0 else None,
            "minutes_to_target_p2.5": _pct(reach, 0.025), "minutes_to_target_p97.5": _pct(reach, 0.975),
            "boot_fraction_slope_le_0": float(np.mean(bs[:, 1] <= 0)), "target_gap": target, "boots": boots}


def gap_change(a: dict, b: dict) -> dict:
    """Per-room change of the full accuracy and of each paired gap from point ``a`` to point ``b``."""
    change = {"full": paired(a["iou"]["full"], b["iou"]["full"])}
    for k in PRUNED:
        change[f"gap {k} - full"] = paired_gap_change(b["iou"], a["iou"], k)
    return change


def summarise(pts: list[dict]) -> list[dict]:
    rows = []
    for i, p in enumerate(pts):
        iou = p["iou"]
        row = {"minutes": p["minutes"], "json": p["json"], "n": int(len(iou["full"])),
               "acc@0.25": {k: float(np.mean(v >= 0.25)) for k, v in iou.items()},
               "acc@0.25_se": {k: hit_se(v) for k, v in iou.items()},
               "speedup_vs_full": {k: p["cpu"]["full"] / p["cpu"][k] for k in PRUNED},
               "gap": {f"{k} - full": paired(iou["full"], iou[k]) for k in PRUNED},
               "cba_vs_tgp": paired(iou["tgp"], iou["tgp+cba"])}
        row["change_since_first"] = gap_change(pts[0], p)
        row["change_since_previous"] = gap_change(pts[max(0, i - 1)], p)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--point", nargs=2, action="append", metavar=("MINUTES", "JSON"), required=True)
    ap.add_argument("--rooms", type=int, default=None, help="use the first N rooms of every run")
    ap.add_argument("--target", type=float, default=-0.01, help="gap the extrapolation aims at (-0.01: 1 point)")
    ap.add_argument("--boots", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/tsp3d_curve.json"))
    args = ap.parse_args(argv)
    try:
        points = [(float(m), Path(j)) for m, j in args.point]
    except ValueError:
        raise InputError("--point takes MINUTES JSON, MINUTES a number") from None
    if len(points) < 3:
        raise InputError("--point: at least three points for a trend")
    pts = load_points(points, args.rooms)
    rng = np.random.default_rng(args.seed)
    fits = {f"{k} - full, from {pts[i]['minutes']:g} min": trend(pts[i:], k, args.target, args.boots, rng)
            for i in range(len(pts) - 2) for k in PRUNED}
    result = {"machine": machine_info(), "settings": {"points": [[m, str(j)] for m, j in points], "rooms": args.rooms,
              "target": args.target, "boots": args.boots, "seed": args.seed},
              "noise_note": "bootstrap over rooms: evaluation noise only; one training run per point",
              "points": summarise(pts), "trend": fits}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    for r in result["points"]:
        g = {k: f"{100 * v['diff']:+.1f}±{100 * v['se']:.1f}" for k, v in r["gap"].items()}
        print(f"{r['minutes']:6.1f} min n={r['n']} acc", {k: round(v, 3) for k, v in r["acc@0.25"].items()}, "gap", g,
              "speed", {k: round(v, 2) for k, v in r["speedup_vs_full"].items()})
    for name, f in fits.items():
        print(f"{name}: slope {100 * f['slope_per_minute']:+.2f} ± {100 * f['slope_se']:.2f} points/min, "
              f"reach {args.target:+.2f} at {f['minutes_to_target']} min [{f['minutes_to_target_p2.5']}, "
              f"{f['minutes_to_target_p97.5']}], P(slope<=0) {f['boot_fraction_slope_le_0']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main)
