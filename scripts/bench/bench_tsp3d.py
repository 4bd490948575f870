#!/usr/bin/env python
"""TSP3D benchmark: grounding accuracy and speed with and without TGP / CBA (issue 9).

Three settings of the same trained checkpoint (``scripts/train_tsp3d.py``):
``full`` (no pruning), ``tgp`` (text-guided pruning only) and ``tgp+cba``. For each sample the
three run back to back in one process (single thread), so the speed ratio is measured under
the same machine load. Reported per setting and evaluation set: Acc@0.25 / Acc@0.5 (axis-aligned
box IoU), mean forward time (encoder + neck + head; text encoding excluded, it is shared) as
process CPU time (the speed-up ratios use it; wall time is also recorded, it is noisy on a
shared machine), CPU time per stage (encoder, TGP/fusion blocks, neck convs, CBA, head; forward
hooks on the submodules) and mean voxel counts per level. Every forward gets a fresh copy of the
input voxels, so no setting reuses another's cached neighbour maps. Evaluation sets: held-out
generated rooms (seeds >= 1,000,000, never drawn in training) and the real ScanNet scan with
generated expressions.

``--sweep-val N`` first picks the TGP thresholds on N *validation* rooms (seeds >= 2,000,000,
disjoint from training and from the held-out rooms): over a grid of (scene, target) thresholds
the lowest-CPU-time pair whose Acc@0.25 (TGP, no CBA) is within ``--max-loss`` of the unpruned
network's on those rooms; the held-out evaluation then uses it (the sweep goes into the JSON).
``--keep-ratios R8 R4`` instead fixes the operating point by kept fraction of the voxels that
reach each TGP block (top-k, as in training); ``--sweep-ratios`` picks it on the validation rooms
(TGP + CBA, the most accurate pair at least ``--min-speedup`` times faster than unpruned).

Resolution: every Acc carries its binomial standard error, and ``paired`` gives the per-sample
paired differences between settings (``tgp - full``, ``tgp+cba - tgp``, ...) with their
standard errors ``std(d) / sqrt(n)``, which is what a "<= 1 point loss" claim needs. ``--compare-with``
(or, for two saved runs and no network, ``--compare-runs THIS THAT``) pairs two runs on the same rooms: per
setting the change of accuracy, and the change of each pruned setting's per-room gap to full.

  nice -n 10 python scripts/bench/bench_tsp3d.py --rooms 30 --scan-limit 24
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from prunekit import atomic_write_text, machine_info
from prunekit.errors import InputError, run_script
from prunekit_voxel.checkpoint import load_checkpoint
from prunekit_voxel.data import expressions_of, room_sample, samples_of, to_room_frame
from prunekit_voxel.metrics import accuracy_at, box_iou
from prunekit_voxel.model import HEAD_CONTEXTS
from prunekit_voxel.rooms import ALL_CLASSES
from prunekit_voxel.scannet import load_scannet
from prunekit_voxel.sparse import SparseVoxels
from prunekit_voxel.text import TextEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired_difference  # noqa: E402

SETTINGS = {"full": dict(prune=False, cba=False), "tgp": dict(prune=True, cba=False), "tgp+cba": dict(prune=True, cba=True)}
SCANNET = Path(__file__).resolve().parents[3] / "shared" / "data" / "scannet"


#: Tsp3dNet submodule (or ModuleList of them) -> stage whose CPU time its forward calls add to
STAGES = {"stem": "encoder", "down": "encoder", "enc": "encoder", "tgp.0": "fusion_s8", "tgp.1": "fusion_s4",
          "up": "neck_convs", "dec": "neck_convs", "cba": "cba", "head_fusion": "head", "head": "head"}


class StageTimer:
    """Process CPU time per stage through forward pre/post hooks on the submodules in :data:`STAGES`."""

    def __init__(self, net) -> None:
        self.t: dict[str, float] = {}
        self._start: dict[str, float] = {}
        mods = dict(net.named_modules())
        for name, mod in mods.items():
            parent = name.rsplit(".", 1)[0] if "." in name else None
            stage = STAGES.get(name) if not isinstance(mod, torch.nn.ModuleList) else None
            if stage is None and parent in STAGES and isinstance(mods[parent], torch.nn.ModuleList):
                stage = STAGES[parent]
            if stage is not None:
                mod.register_forward_pre_hook(self._pre(name))
                mod.register_forward_hook(self._post(stage, name))

    def _pre(self, name):
        def hook(*_):
            self._start[name] = time.process_time()
        return hook

    def _post(self, stage, name):
        def hook(*_):
            self.t[stage] = self.t.get(stage, 0.0) + time.process_time() - self._start.pop(name)
        return hook

    def take(self) -> dict[str, float]:
        out, self.t = self.t, {}
        return out


def hit_se(ious, at: float = 0.25) -> float:
    """Binomial standard error of Acc@``at``: ``sqrt(p (1 - p) / n)``."""
    p = accuracy_at(ious, at)
    return float(np.sqrt(p * (1 - p) / max(1, len(ious))))


def paired(a_ious, b_ious, at: float = 0.25) -> dict:
    """Paired difference of Acc@``at`` (b - a) over the same samples: mean of ``d_i = hit_b,i - hit_a,i``
    and its standard error ``std(d, ddof=1) / sqrt(n)``; also how many samples each setting alone gets."""
    a, b = np.asarray(a_ious) >= at, np.asarray(b_ious) >= at
    return {"at": at, **paired_difference(b.astype(float), a.astype(float)),
            "only_a": int((a & ~b).sum()), "only_b": int((b & ~a).sum())}


def run(net, encoder, samples, voxel_size, thresholds, cba_threshold, timer: StageTimer, keep_ratios=None) -> dict:
    rows = []
    for s in samples:
        tok, pad = encoder.encode([s.text])
        row = {"scene": s.scene, "text": s.text, "kind": s.kind}
        for name, kw in SETTINGS.items():
            vox = SparseVoxels(s.voxels.coords, s.voxels.feats, s.voxels.stride)  # no cached maps
            timer.take()
            with torch.no_grad():
                t, c = time.perf_counter(), time.process_time()
                out = net(vox, tok[0], pad[0], voxel_size=voxel_size, thresholds=thresholds,
                          keep_ratios=keep_ratios, cba_threshold=cba_threshold, **kw)
                dt, dc = time.perf_counter() - t, time.process_time() - c
            row[name] = {"iou": box_iou(out["box"].numpy(), s.target_box.numpy()), "seconds": dt, "cpu_seconds": dc,
                         "stages_cpu": timer.take(), "counts": out["counts"]}
        rows.append(row)
    summary = {}
    for name in SETTINGS:
        ious = [r[name]["iou"] for r in rows]
        counts = {k: float(np.mean([r[name]["counts"][k] for r in rows])) for k in rows[0][name]["counts"]}
        stages = {k: float(np.mean([r[name]["stages_cpu"].get(k, 0.0) for r in rows])) for k in dict.fromkeys(STAGES.values())}
        summary[name] = {"acc@0.25": accuracy_at(ious, 0.25), "acc@0.5": accuracy_at(ious, 0.5),
                         "acc@0.25_se": hit_se(ious, 0.25), "acc@0.5_se": hit_se(ious, 0.5),
                         "mean_iou": float(np.mean(ious)), "mean_seconds": float(np.mean([r[name]["seconds"] for r in rows])),
                         "mean_cpu_seconds": float(np.mean([r[name]["cpu_seconds"] for r in rows])),
                         "mean_stage_cpu_seconds": stages, "mean_counts": counts}
    for name in ("tgp", "tgp+cba"):
        summary[name]["speedup_vs_full"] = summary["full"]["mean_cpu_seconds"] / summary[name]["mean_cpu_seconds"]
        summary[name]["wall_speedup_vs_full"] = summary["full"]["mean_seconds"] / summary[name]["mean_seconds"]
    iou = {name: [r[name]["iou"] for r in rows] for name in SETTINGS}
    diffs = {f"{b} - {a}": {f"acc@{at}": paired(iou[a], iou[b], at) for at in (0.25, 0.5)}
             for a, b in (("full", "tgp"), ("full", "tgp+cba"), ("tgp", "tgp+cba"))}
    return {"n": len(rows), "summary": summary, "paired": diffs, "rows": rows}


def sweep(net, encoder, samples, voxel_size, grid, max_loss: float, key: str = "thresholds",
          min_speedup: float | None = None) -> dict:
    """Validation sweep of (scene, target) TGP budgets: thresholds (TGP only; picks the fastest pair
    within ``max_loss`` of the unpruned Acc@0.25), or with ``key="keep_ratios"`` kept fractions
    (TGP + CBA; picks the most accurate pair, then the faster, among those at least
    ``min_speedup`` times faster than the unpruned network in CPU time)."""
    rows = []
    base = None
    for th in [None, *grid]:
        kw = dict(prune=False, cba=False) if th is None else dict(prune=True, cba=key == "keep_ratios", **{key: th})
        ious, cpu = [], 0.0
        for s in samples:
            tok, pad = encoder.encode([s.text])
            with torch.no_grad():
                c = time.process_time()
                out = net(SparseVoxels(s.voxels.coords, s.voxels.feats, 1), tok[0], pad[0], voxel_size=voxel_size, **kw)
                cpu += time.process_time() - c
            ious.append(box_iou(out["box"].numpy(), s.target_box.numpy()))
        row = {key: th, "acc@0.25": accuracy_at(ious, 0.25), "acc@0.5": accuracy_at(ious, 0.5),
               "mean_cpu_seconds": cpu / len(samples)}
        base = base or row
        row["speedup_vs_full"] = base["mean_cpu_seconds"] / row["mean_cpu_seconds"]
        rows.append(row)
    if key == "keep_ratios":
        ok = [r for r in rows[1:] if r["speedup_vs_full"] >= min_speedup]
        best = max(ok, key=lambda r: (r["acc@0.25"], r["speedup_vs_full"])) if ok else None
    else:
        ok = [r for r in rows[1:] if r["acc@0.25"] >= base["acc@0.25"] - max_loss]
        best = min(ok, key=lambda r: r["mean_cpu_seconds"]) if ok else None
    return {"n": len(samples), "key": key, "max_loss": max_loss, "min_speedup": min_speedup, "rows": rows,
            "chosen": best and best[key]}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable bench JSON ({e})") from None


def gap_change(this_iou: dict, that_iou: dict, name: str, at: float = 0.25) -> dict:
    """Paired change of setting ``name``'s gap to full between two runs on the same samples (``*_iou``:
    setting -> per-sample IoUs): mean of ``(hit_name - hit_full)_this,i - (hit_name - hit_full)_that,i``
    and its standard error ``std(d, ddof=1) / sqrt(n)``."""
    def gap(iou):
        return (np.asarray(iou[name]) >= at).astype(float) - (np.asarray(iou["full"]) >= at)
    return paired_difference(gap(this_iou), gap(that_iou))


def compare(this: dict, that: dict) -> dict:
    """Per evaluation set, paired differences (this - that) of each setting over the same samples, and
    ``gap_change``: the paired change of each pruned setting's gap to full, mean of
    ``(hit_p - hit_full)_this,i - (hit_p - hit_full)_that,i`` and its standard error."""
    out = {}
    for part in ("rooms", "scannet"):
        a, b = this.get(part), that.get(part)
        if not (isinstance(a, dict) and isinstance(b, dict)):
            continue
        if [(r["scene"], r["text"]) for r in a["rows"]] != [(r["scene"], r["text"]) for r in b["rows"]]:
            raise InputError(f"--compare-with: the {part} samples differ from this run's")
        out[part] = {name: {f"acc@{at}": paired([r[name]["iou"] for r in b["rows"]], [r[name]["iou"] for r in a["rows"]], at)
                            for at in (0.25, 0.5)} for name in SETTINGS}
        iou_a, iou_b = ({k: [r[k]["iou"] for r in x["rows"]] for k in SETTINGS} for x in (a, b))
        out[part]["gap_change"] = {name: {f"acc@{at}": gap_change(iou_a, iou_b, name, at) for at in (0.25, 0.5)}
                                   for name in ("tgp", "tgp+cba")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path(".cache/prunekit_voxel/tsp3d.safetensors"))
    ap.add_argument("--rooms", type=int, default=30)
    ap.add_argument("--scan-limit", type=int, default=24, help="ScanNet expressions used (every k-th of all)")
    ap.add_argument("--thresholds", type=float, nargs=2, default=(0.7, 0.3))
    ap.add_argument("--keep-ratios", type=float, nargs=2, default=None,
                    help="operating point by kept fraction of the voxels reaching each TGP block (replaces --thresholds)")
    ap.add_argument("--cba-threshold", type=float, default=0.15)
    ap.add_argument("--cba-candidates", type=int, default=None, help="override the checkpoint's CBA candidate count")
    ap.add_argument("--head-context", choices=HEAD_CONTEXTS, default=None,
                    help="override the checkpoint's head context (Tsp3dNet(head_context=...); no new weights)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sweep-val", type=int, default=0, help="validation rooms for picking the thresholds (0: off)")
    ap.add_argument("--max-loss", type=float, default=0.01, help="Acc@0.25 loss allowed by the sweep")
    ap.add_argument("--sweep-ratios", action="store_true",
                    help="the validation sweep picks --keep-ratios (TGP + CBA, best accuracy at >= --min-speedup)")
    ap.add_argument("--min-speedup", type=float, default=2.0, help="speed floor of the ratio sweep (CPU-time ratio)")
    ap.add_argument("--scan-classes", action="store_true",
                    help="held-out/validation rooms also hold the scan's extra classes (rooms.SCAN_SIZES)")
    ap.add_argument("--objects", type=int, nargs=2, default=(4, 10), help="objects per generated room")
    ap.add_argument("--scan-frame", choices=("room", "raw"), default="room",
                    help="room: translate the scan so its floor plan starts at the origin, like the training rooms "
                         "(data.to_room_frame); raw: ScanNet's own frame, centred on 0")
    ap.add_argument("--compare-with", type=Path, default=None,
                    help="an earlier bench JSON on the same rooms: paired differences of each setting (this - that)")
    ap.add_argument("--compare-runs", type=Path, nargs=2, metavar=("THIS", "THAT"), default=None,
                    help="no network run: paired differences (THIS - THAT) of two earlier bench JSONs on the same rooms")
    ap.add_argument("--out", type=Path, default=Path("bench-out/tsp3d.json"))
    args = ap.parse_args(argv)
    if args.compare_runs is not None:
        this, that = args.compare_runs
        result = {"this": str(this), "that": str(that), **compare(_read_json(this), _read_json(that))}
        atomic_write_text(args.out, json.dumps(result, indent=1))
        _print_compare(result)
        print(f"wrote {args.out}")
        return 0
    if args.keep_ratios and not all(0 < r <= 1 for r in args.keep_ratios):
        ap.error("--keep-ratios takes two fractions in (0, 1]")
    torch.set_num_threads(args.threads)
    net, vs, info = load_checkpoint(args.checkpoint)
    timer = StageTimer(net)
    if args.cba_candidates is not None:
        net.cba.max_candidates = net.cba.fusion.max_keys = args.cba_candidates
    if args.head_context is not None:
        net.head_context = args.head_context
    encoder = TextEncoder()
    val_sweep = None
    gen = dict(n_objects=tuple(args.objects), classes=ALL_CLASSES if args.scan_classes else None)
    if args.sweep_val > 0:
        val = [s for s in (room_sample(2_000_000 + i, vs, **gen) for i in range(args.sweep_val)) if s is not None]
        if args.sweep_ratios:
            grid = [(a, b) for a in (0.2, 0.25, 0.3, 0.35) for b in (0.1, 0.15, 0.2, 0.3)]
            val_sweep = sweep(net, encoder, val, vs, grid, args.max_loss, "keep_ratios", args.min_speedup)
        else:
            grid = [(a, b) for a in (0.7, 0.8, 0.9) for b in (0.3, 0.5, 0.7, 0.8, 0.9)]
            val_sweep = sweep(net, encoder, val, vs, grid, args.max_loss)
        print("validation sweep", json.dumps(val_sweep))
        if val_sweep["chosen"] is not None:
            setattr(args, val_sweep["key"], val_sweep["chosen"])
    ratios = tuple(args.keep_ratios) if args.keep_ratios else None
    rooms = [s for s in (room_sample(1_000_000 + i, vs, **gen) for i in range(args.rooms)) if s is not None]
    result = {"machine": machine_info(), "checkpoint": str(args.checkpoint), "train_info": info, "voxel_size": vs,
              "head_context": net.head_context,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "validation_sweep": val_sweep, "speedup_measure": "process CPU time ratio, one thread, settings back to back per sample",
              "rooms": run(net, encoder, rooms, vs, tuple(args.thresholds), args.cba_threshold, timer, ratios)}
    if args.scan_limit <= 0:
        result["scannet"] = "skipped: --scan-limit 0"
    elif (SCANNET / "scene0000_00_vert_all.npy").exists():
        scan = load_scannet(SCANNET)
        scan = to_room_frame(scan) if args.scan_frame == "room" else scan
        exprs = expressions_of(scan)
        step = max(1, len(exprs) // max(1, args.scan_limit))
        result["scannet"] = run(net, encoder, samples_of(scan, vs, exprs[::step][: args.scan_limit]), vs,
                                tuple(args.thresholds), args.cba_threshold, timer, ratios)
    else:
        result["scannet"] = f"skipped: {SCANNET} not found"
    if args.compare_with is not None:
        result["compare_with"] = {"json": str(args.compare_with), **compare(result, _read_json(args.compare_with))}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    for part in ("rooms", "scannet"):
        if isinstance(result[part], dict):
            for name, s in result[part]["summary"].items():
                print(part, name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()
                                   if k not in ("mean_counts", "mean_stage_cpu_seconds")})
                print("   stages", {k: round(v, 4) for k, v in s["mean_stage_cpu_seconds"].items()}, "counts",
                      {k: round(v) for k, v in s["mean_counts"].items()})
            for name, d in result[part]["paired"].items():
                print("   paired", name, {k: (round(v["diff"], 3), v["se"] and round(v["se"], 3), v["only_a"], v["only_b"])
                                         for k, v in d.items()})
    _print_compare(result.get("compare_with", {}))
    print(f"wrote {args.out}")
    return 0


def _print_compare(cmp: dict) -> None:
    for part, d in cmp.items():
        if isinstance(d, dict):
            rows = [(name, v) for name, v in d.items() if name != "gap_change"]
            rows += [(f"gap change {name}", v) for name, v in d.get("gap_change", {}).items()]
            for name, v in rows:
                print("compare", part, name, {k: (round(x["diff"], 3), x["se"] and round(x["se"], 3)) for k, x in v.items()})


if __name__ == "__main__":
    run_script(main)
