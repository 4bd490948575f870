#!/usr/bin/env python
"""Where the TSP3D pruned path loses accuracy, on validation rooms (issue 9; diagnostic, not a benchmark).

On validation rooms (seeds 2,000,000 + i, disjoint from training and from the held-out rooms) one
checkpoint runs unpruned (``full``), TGP and TGP + CBA at a reference operating point (kept fractions,
``--keep-ratios``). Per room it records the hit at IoU 0.25 of each, the expression kind, how many
stride-2 voxels of the target and of the anchor (the object a closest/farthest expression
mentions) reach the head, which object the head's argmax voxel lies on (target / anchor / another
object of the target's class / another object / none), and the unpruned head restricted to the
voxels the pruned head sees (``full_on_survivors``: argmax of the unpruned objectness over those
sites, its box): if that is close to ``full``, the survivors suffice and the loss is in the pruned
path's context, not in what TGP removed. The "pruned-but-not-full" misses are then split by kind,
by anchor survival and by argmax category. An operating-point sweep (TGP + CBA) over kept-fraction
pairs and threshold pairs reports Acc@0.25 and the CPU-time ratio to the unpruned forward measured
on the same rooms (one thread, settings back to back per room).

  OMP_NUM_THREADS=1 python scripts/bench/diag_tsp3d.py --checkpoint .cache/prunekit_voxel/tsp3d_curve_s3.safetensors
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
from prunekit.errors import run_script
from prunekit_voxel.checkpoint import load_checkpoint
from prunekit_voxel.data import instance_sites, room_expression, samples_of
from prunekit_voxel.losses import target_voxels
from prunekit_voxel.metrics import box_iou
from prunekit_voxel.model import centers
from prunekit_voxel.sparse import SparseVoxels
from prunekit_voxel.text import TextEncoder
from prunekit_voxel.tgp import in_boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tsp3d import paired  # noqa: E402

RATIO_GRID = [(0.3, 0.1), (0.25, 0.1), (0.3, 0.15), (0.25, 0.15), (0.2, 0.2), (0.2, 0.3), (0.35, 0.08),
              (0.4, 0.05), (0.45, 0.05), (0.5, 0.03)]
THRESHOLD_GRID = [(0.7, 0.3), (0.9, 0.3), (0.9, 0.5), (0.9, 0.7), (0.95, 0.7), (0.95, 0.9)]


def argmax_object(out: dict, boxes: torch.Tensor, names: list[str], target: int, anchor: int | None, vs: float) -> str:
    """Which object the head's argmax voxel lies on (its centre in a box grown by half a voxel)."""
    x = out["voxels"]
    c = centers(x, vs)[int(out["objectness"].argmax())][None]
    half = vs * x.stride / 2
    hits = [k for k in range(len(boxes)) if bool(in_boxes(c, boxes[k:k + 1], half)[0])]
    if target in hits:
        return "target"
    if anchor is not None and anchor in hits:
        return "anchor"
    if any(names[k] == names[target] for k in hits):
        return "same_class"
    return "other_object" if hits else "none"


def full_on_survivors(full: dict, pruned: dict) -> np.ndarray:
    """The unpruned head's box at its best voxel among the sites the pruned head sees."""
    rows = full["voxels"].lookup(pruned["voxels"].coords)
    rows = rows[rows >= 0]
    return full["boxes"][rows[int(full["objectness"][rows].argmax())]].numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path(".cache/prunekit_voxel/tsp3d_curve_s3.safetensors"))
    ap.add_argument("--val", type=int, default=150, help="validation rooms (seeds 2,000,000 + i)")
    ap.add_argument("--keep-ratios", type=float, nargs=2, default=(0.3, 0.1), help="reference operating point")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench-out/tsp3d_diag_val.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net, vs, info = load_checkpoint(args.checkpoint)
    enc = TextEncoder()
    ref = tuple(args.keep_ratios)
    sweep = [] if args.no_sweep else [("keep_ratios", r) for r in RATIO_GRID if r != ref] + \
        [("thresholds", t) for t in THRESHOLD_GRID]
    rows = []
    for i in range(args.val):
        got = room_expression(2_000_000 + i)
        if got is None:
            continue
        room, e = got
        s = samples_of(room, vs, [e])[0]
        tok, pad = enc.encode([s.text])
        boxes = torch.as_tensor(room.boxes, dtype=torch.float32)
        anchor_sites = None if e.anchor is None else instance_sites(room, int(room.box_instance[e.anchor]), vs)
        row = {"seed": 2_000_000 + i, "kind": e.kind, "text": s.text}
        outs = {}
        for name, kw in (("full", dict(prune=False, cba=False)), ("tgp", dict(prune=True, cba=False)),
                         ("tgp+cba", dict(prune=True, cba=True)), *[(f"{k}={v}", dict(prune=True, cba=True, **{k: v}))
                                                                    for k, v in sweep]):
            if "keep_ratios" not in kw and "thresholds" not in kw and kw["prune"]:
                kw["keep_ratios"] = ref
            vox = SparseVoxels(s.voxels.coords, s.voxels.feats, 1)
            with torch.no_grad():
                c = time.process_time()
                out = net(vox, tok[0], pad[0], voxel_size=vs, cba_threshold=0.15, **kw)
                cpu = time.process_time() - c
            r = {"iou": box_iou(out["box"].numpy(), s.target_box.numpy()), "cpu": cpu}
            if name in ("full", "tgp", "tgp+cba"):
                outs[name] = out
                x = out["voxels"]
                r["target_vox"] = int(target_voxels(x.coords, x.stride, vs, s.target_box, s.target_sites).sum())
                if anchor_sites is not None:
                    r["anchor_vox"] = int(target_voxels(x.coords, x.stride, vs, boxes[e.anchor], anchor_sites).sum())
                r["argmax_on"] = argmax_object(out, boxes, room.box_names, e.target, e.anchor, vs)
            row[name] = r
        for name in ("tgp", "tgp+cba"):
            row[name]["full_on_survivors_iou"] = box_iou(full_on_survivors(outs["full"], outs[name]), s.target_box.numpy())
        rows.append(row)
        if len(rows) % 25 == 0:
            print(len(rows), "rooms", flush=True)
    result = {"machine": machine_info(), "checkpoint": str(args.checkpoint), "train_info": info,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "n": len(rows), "summary": summarise(rows, [n for n in rows[0] if "=" in n]), "rows": rows}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out}")
    return 0


def _hit(r, name, key="iou"):
    return r[name][key] >= 0.25


def summarise(rows: list[dict], sweep_names: list[str]) -> dict:
    out: dict = {"acc@0.25": {}, "by_kind": {}, "pruned_not_full": {}}
    full_cpu = float(np.mean([r["full"]["cpu"] for r in rows]))
    for name in ("full", "tgp", "tgp+cba", *sweep_names):
        ious = [r[name]["iou"] for r in rows]
        out["acc@0.25"][name] = {"acc": float(np.mean(np.array(ious) >= 0.25)),
                                 "speedup_vs_full": full_cpu / float(np.mean([r[name]["cpu"] for r in rows]))}
        if name != "full":
            out["acc@0.25"][name]["vs_full"] = paired([r["full"]["iou"] for r in rows], ious)
            if name not in ("tgp", "tgp+cba"):
                out["acc@0.25"][name]["vs_ref_tgp+cba"] = paired([r["tgp+cba"]["iou"] for r in rows], ious)
    for name in ("tgp", "tgp+cba"):
        out["acc@0.25"][f"{name}:full_on_survivors"] = {
            "acc": float(np.mean([_hit(r, name, "full_on_survivors_iou") for r in rows])),
            "vs_full": paired([r["full"]["iou"] for r in rows], [r[name]["full_on_survivors_iou"] for r in rows])}
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        out["by_kind"][kind] = {"n": len(rs), **{n: int(sum(_hit(r, n) for r in rs)) for n in ("full", "tgp", "tgp+cba")},
                                "tgp+cba:full_on_survivors": int(sum(_hit(r, "tgp+cba", "full_on_survivors_iou") for r in rs))}
    for name in ("tgp", "tgp+cba"):
        lost = [r for r in rows if _hit(r, "full") and not _hit(r, name)]
        gained = [r for r in rows if _hit(r, name) and not _hit(r, "full")]
        d = {"lost": len(lost), "gained": len(gained),
             "lost_by_kind": _count(r["kind"] for r in lost),
             "lost_argmax_on": _count(r[name]["argmax_on"] for r in lost),
             "lost_target_absent": sum(r[name]["target_vox"] == 0 for r in lost),
             "lost_full_on_survivors_right": sum(_hit(r, name, "full_on_survivors_iou") for r in lost)}
        rel = [r for r in lost if "anchor_vox" in r[name]]
        d["lost_relational_anchor_absent"] = sum(r[name]["anchor_vox"] == 0 for r in rel)
        d["lost_relational"] = len(rel)
        allrel = [r for r in rows if "anchor_vox" in r[name]]
        d["all_relational_anchor_absent"] = sum(r[name]["anchor_vox"] == 0 for r in allrel)
        d["all_relational"] = len(allrel)
        d["mean_target_vox_ratio_to_full"] = float(np.mean([r[name]["target_vox"] / max(1, r["full"]["target_vox"])
                                                            for r in rows]))
        out["pruned_not_full"][name] = d
    return out


def _count(it) -> dict:
    c: dict = {}
    for k in it:
        c[k] = c.get(k, 0) + 1
    return dict(sorted(c.items()))


if __name__ == "__main__":
    run_script(main)
