"""Capacity check for HideNseek: centralised sign-supermask training, no federation.

The same small CNN, frozen PyTorch-default weights masked by SynFlow at the given
density (100 iterations) and scaled like the federated runs
(:func:`prunekit_federated.training.frozen_weights`, ``--weight-scale``), trained on
the pooled client data of the federated benchmark (the MNIST pool minus the server
hold-out) with the HideNseek client step
(:func:`prunekit_federated.training.train_signs`), evaluated on the server hold-out
after every epoch, once with the BN running statistics collected during training and once
with them re-estimated on the training pool under the current signs
(:func:`prunekit_federated.training.bn_statistics`, what ``--bn-calibration`` does in the
federation). ``--decay cos`` anneals both learning rates per epoch,
lr_e = lr (1 + cos(pi e / E)) / 2. This separates what the sign-only model can reach at
this width from what the federation (majority vote over non-IID clients) loses.

    .venv/bin/python scripts/bench/bench_hidenseek_capacity.py --densities 0.1,1.0 --epochs 4
    .venv/bin/python scripts/bench/bench_hidenseek_capacity.py --densities 0.1 --epochs 15 --decay cos \
        --out bench-out/federated_hidenseek_capacity_long.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(density: float, a) -> dict:
    import torch

    from prunekit_federated.data import load_dataset, holdout_split
    from prunekit_federated.masks import prunable_shapes
    from prunekit_federated.models import SmallCNN
    from prunekit_federated.synflow import synflow_mask
    from prunekit_federated.training import bn_statistics, evaluate, frozen_weights, signed_weights, train_signs

    torch.manual_seed(a.seed)
    model = SmallCNN(28, channels=(16 * a.width, 32 * a.width), hidden=64 * a.width)
    shapes = prunable_shapes(model)
    mask = synflow_mask(model, density, (1, 28, 28), iterations=100)
    named = dict(model.named_parameters())
    flat = frozen_weights({k: named[k] for k in shapes}, mask, a.weight_scale)
    base = {k: flat[k].view(shapes[k]) for k in shapes}
    ds = load_dataset("mnist")
    pool, test = holdout_split(ds.y.numpy(), 0.2, a.seed)
    train, test = ds.subset(pool), ds.subset(test)
    scores = {k: torch.full(s, a.score_init) for k, s in shapes.items()}
    accs, recal = [], []
    t0 = time.perf_counter()
    for ep in range(a.epochs):
        f = 0.5 * (1 + math.cos(math.pi * ep / a.epochs)) if a.decay == "cos" else 1.0
        train_signs(model, base, mask, scores, train, epochs=1, batch_size=32, lr=0.05 * f, score_lr=a.score_lr * f,
                    momentum=0.9, seed=ep)
        with torch.no_grad():
            for k, w in signed_weights(base, mask, scores).items():
                named[k].copy_(w)
            accs.append(evaluate(model, test)[1])
            kept = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
            model.load_state_dict(bn_statistics(model, train), strict=False)
            recal.append(evaluate(model, test)[1])
            model.load_state_dict(kept, strict=False)  # training goes on with its own statistics
            for k in shapes:
                named[k].copy_(base[k])
    return {"density": mask.kept_fraction, "accuracy_per_epoch": accs, "accuracy_bn_recalibrated_per_epoch": recal,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "plugins"))
    from prunekit_federated.config import HideNseekConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--densities", default="0.1,1.0")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--score-lr", type=float, default=HideNseekConfig.score_lr)
    p.add_argument("--weight-scale", default="density", choices=("density", "none"))
    p.add_argument("--score-init", type=float, default=0.02)
    p.add_argument("--decay", default="none", choices=("none", "cos"), help="per-epoch cosine decay of both lrs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "bench-out" / "federated_hidenseek_capacity.json"))
    a = p.parse_args(argv)
    import torch

    from prunekit.fileio import atomic_write_text
    from prunekit.report import machine_info

    torch.set_num_threads(a.threads)
    out = {"benchmark": "hidenseek-capacity", "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "inputs": vars(a), "runs": {}}
    for d in (float(x) for x in a.densities.split(",")):
        out["runs"][f"density@{d:g}"] = run(d, a)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
        print(d, out["runs"][f"density@{d:g}"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
