#!/usr/bin/env python
"""Replicate training runs of TSP3D recipes, pooled per arm, from ``bench_tsp3d.py`` runs on the same rooms (issue 9).

    python scripts/bench/tsp3d_runs.py --arm scratch S41.json S42.json ... --arm control C31.json ... \\
        [--reference bench-out/tsp3d_curve_s3_at_03_015.json] --out bench-out/tsp3d_runs.json

Each JSON is one trained checkpoint evaluated on the same held-out rooms at the same operating point
(``--keep-ratios`` / thresholds). Per run: Acc@0.25 of full / TGP / TGP+CBA, the gaps ``pruned - full`` in
points and the CPU-time speed-ups. Per arm, over its runs: mean, ``sd`` and ``se = sd / sqrt(K)`` of every
figure: the spread between training runs, which the per-room standard errors of one run do not contain.
Between arms (each later arm minus the first): difference of the means with the unpaired standard error
``sqrt(se_a^2 + se_b^2)``. ``--paired`` (the arms list the same seeds in the same order, e.g. one recipe at
two budgets; runs are paired by position, the pairs are written to the JSON): also the paired difference, the
mean of the per-seed differences and its SE over seeds. ``--reference``: one more run (e.g. the best checkpoint
so far) shown beside the arms, each arm's mean minus it with the arm's ``se`` (its own training spread is unknown).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tsp3d import _read_json  # noqa: E402
from common import across_runs, paired_difference  # noqa: E402
from tsp3d_curve import PRUNED, load_points  # noqa: E402

from prunekit import atomic_write_text, machine_info  # noqa: E402
from prunekit.errors import InputError, run_script  # noqa: E402

FIGURES = ("full", *PRUNED, *(f"gap {k}" for k in PRUNED), *(f"speedup {k}" for k in PRUNED))


def operating_point(path: Path) -> tuple:
    """The settings that must match between pooled runs: kept fractions, thresholds, CBA threshold, rooms."""
    s = _read_json(path).get("settings", {})
    return tuple(json.dumps(s.get(k)) for k in ("keep_ratios", "thresholds", "cba_threshold", "rooms", "objects"))


def run_figures(pt: dict) -> dict:
    """Accuracy (fractions), gaps (points) and speed-ups of one evaluated checkpoint."""
    acc = {k: float((v >= 0.25).mean()) for k, v in pt["iou"].items()}
    out = {k: acc[k] for k in ("full", *PRUNED)}
    out.update({f"gap {k}": 100 * (acc[k] - acc["full"]) for k in PRUNED})
    out.update({f"speedup {k}": pt["cpu"]["full"] / pt["cpu"][k] for k in PRUNED})
    return out


def pool(arms: dict[str, list[Path]], reference: Path | None, rooms: int | None, paired: bool = False) -> dict:
    files = [p for ps in arms.values() for p in ps] + ([reference] if reference else [])
    points = {p: pt for p, pt in zip(files, load_points([(0.0, p) for p in files], rooms))}
    ops = {operating_point(p) for p in files}
    if len(ops) > 1:
        raise InputError("the runs were evaluated at different operating points (keep ratios / thresholds / rooms)")
    if paired and len({len(ps) for ps in arms.values()}) > 1:
        raise InputError("--paired: every arm must list the same number of runs (one per seed, same order)")
    out = {"arms": {}, "between_arms": {}, "reference": None}
    for name, paths in arms.items():
        runs = {p.name: run_figures(points[p]) for p in paths}
        out["arms"][name] = {"runs": runs, "pooled": {f: across_runs([r[f] for r in runs.values()]) for f in FIGURES}}
    names = list(arms)
    for other in names[1:]:
        a, b = out["arms"][names[0]]["pooled"], out["arms"][other]["pooled"]
        out["between_arms"][f"{other} - {names[0]}"] = {
            f: {"diff": b[f]["mean"] - a[f]["mean"],
                "se": (a[f]["se"] ** 2 + b[f]["se"] ** 2) ** 0.5 if a[f]["se"] is not None and b[f]["se"] is not None
                else None} for f in FIGURES}
        if paired:
            ra, rb = out["arms"][names[0]]["runs"], out["arms"][other]["runs"]
            between = out["between_arms"][f"{other} - {names[0]}"]
            for f in FIGURES:
                between[f]["paired"] = paired_difference([r[f] for r in rb.values()], [r[f] for r in ra.values()])
            between["pairs"] = list(zip(rb, ra))
    if reference:
        ref = run_figures(points[reference])
        out["reference"] = {"file": reference.name, "figures": ref,
                            "arm_minus_reference": {n: {f: {"diff": arm["pooled"][f]["mean"] - ref[f],
                                                            "se": arm["pooled"][f]["se"]} for f in FIGURES}
                                                    for n, arm in out["arms"].items()}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", nargs="+", action="append", metavar=("NAME", "JSON"), required=True,
                    help="an arm's name and its runs' bench JSONs")
    ap.add_argument("--reference", type=Path, default=None, help="one more bench JSON shown beside the arms")
    ap.add_argument("--rooms", type=int, default=None, help="use the first N rooms of every run")
    ap.add_argument("--paired", action="store_true",
                    help="the arms list the same seeds in the same order: also give per-seed paired differences")
    ap.add_argument("--out", type=Path, default=Path("bench-out/tsp3d_runs.json"))
    args = ap.parse_args(argv)
    arms: dict[str, list[Path]] = {}
    for name, *paths in args.arm:
        if not paths or name in arms:
            raise InputError(f"--arm {name}: give a new arm name and at least one bench JSON")
        arms[name] = [Path(p) for p in paths]
    result = {"machine": machine_info(),
              "settings": {"arms": {n: [str(p) for p in ps] for n, ps in arms.items()},
                           "reference": str(args.reference) if args.reference else None, "rooms": args.rooms,
                           "paired": args.paired},
              "units": "accuracies are Acc@0.25 fractions; gaps are pruned - full of the same run, in points",
              **pool(arms, args.reference, args.rooms, args.paired)}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    fmt = lambda s: f"{s['mean']:+.1f}" + (f" (SD {s['sd']:.1f}, SE {s['se']:.1f})" if s["sd"] is not None else "")  # noqa: E731
    for name, arm in result["arms"].items():
        p = arm["pooled"]
        print(f"{name}: {p['full']['runs']} runs, full {p['full']['mean']:.3f}, gap TGP {fmt(p['gap tgp'])}, "
              f"gap TGP+CBA {fmt(p['gap tgp+cba'])}, speed {p['speedup tgp+cba']['mean']:.2f}x")
        print("   per run gap TGP+CBA:", ", ".join(f"{r['gap tgp+cba']:+.1f}" for r in arm["runs"].values()))
    for name, d in result["between_arms"].items():
        se = d["gap tgp+cba"]["se"]
        print(f"{name}: gap TGP+CBA {d['gap tgp+cba']['diff']:+.1f}" + (f" ± {se:.1f}" if se is not None else ""))
        if "paired" in d["gap tgp"]:
            pt = {k: d[k]["paired"] for k in ("gap tgp", "gap tgp+cba", "full")}
            print("   paired over seeds: " + ", ".join(
                f"{k} {v['diff']:+.3f}" + (f" ± {v['se']:.3f}" if v["se"] is not None else "") for k, v in pt.items()))
    if result["reference"]:
        print(f"reference {result['reference']['file']}: gap TGP+CBA {result['reference']['figures']['gap tgp+cba']:+.1f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main)
