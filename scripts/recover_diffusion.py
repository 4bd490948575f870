"""Recovery fine-tune of a pruned diffusers denoiser against its unpruned original (LD-Pruner's last step).

    python scripts/recover_diffusion.py ORIGINAL_DIR PRUNED_DIR --data train.npz -o OUT_DIR [--steps 300]

ORIGINAL_DIR / PRUNED_DIR: what ``save_pretrained`` or ``prunekit prune -m ld-pruner`` wrote (a
pipeline or a bare denoiser). Loss per step (``prunekit_diffusion.recovery.distill_finetune``):
task_weight * MSE(student eps, true eps) + alpha * MSE(student eps, teacher eps) on noised training images, the
original denoiser being the frozen teacher. ``--data``: an ``.npz`` with ``images`` [N, C, H, W] in the
model's sample space ([-1, 1]) and, for class-conditional denoisers, ``labels`` [N]. OUT_DIR keeps
PRUNED_DIR's layout (reload with ``prunekit_diffusion.load_pruned``) plus ``recovery.json`` (the loss
log); it is written beside its destination and renamed into place, so a failed run leaves nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import InputError, PrunekitError, UsageError
from prunekit_diffusion.recovery import distill_finetune
from prunekit_diffusion.serialization import save_pruned
from prunekit_diffusion.target import TARGET


def load_data(path: Path, model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    try:
        with np.load(path) as z:
            images = torch.as_tensor(np.asarray(z["images"], dtype=np.float32))
            labels = torch.as_tensor(np.asarray(z["labels"], dtype=np.int64)) if "labels" in z else None
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: expected an .npz with 'images' [N, C, H, W] (and 'labels' [N]): {e}") from None
    if images.dim() != 4 or len(images) == 0:
        raise InputError(f"{path}: 'images' has shape {list(images.shape)}; expected [N, C, H, W] with N > 0")
    needs_labels = getattr(model.config, "num_class_embeds", None) or getattr(model.config, "num_embeds_ada_norm", None)
    cond = {}
    if needs_labels:
        if labels is None or labels.shape != (len(images),):
            raise InputError(f"{path}: a class-conditional denoiser needs 'labels' with shape [{len(images)}]")
        cond["class_labels"] = labels
    return images, cond


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("original", type=Path)
    ap.add_argument("pruned", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--alpha", type=float, default=1.0, help="weight of the distillation term")
    ap.add_argument("--task-weight", type=float, default=1.0,
                    help="weight of the noise-prediction term (0 with --alpha 1: pure distillation)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        if a.steps < 1 or a.batch_size < 1 or a.lr <= 0:
            raise UsageError("--steps and --batch-size must be >= 1 and --lr > 0")
        if a.alpha < 0 or a.task_weight < 0 or a.alpha + a.task_weight == 0:
            raise UsageError("--alpha and --task-weight must be >= 0 and not both 0")
        if a.output.exists() and (not a.output.is_dir() or any(a.output.iterdir())):
            raise UsageError(f"{a.output}: exists and is not an empty directory")
        teacher, student = TARGET.load(a.original), TARGET.load(a.pruned)
        data, cond = load_data(a.data, student.model)
        if tuple(data.shape[1:]) != (student.model.config.in_channels, *(2 * [student.model.config.sample_size])):
            raise InputError(f"{a.data}: images of shape {list(data.shape[1:])} do not fit the denoiser's "
                             f"{student.model.config.in_channels} x {student.model.config.sample_size}^2 samples")
        log = distill_finetune(student.model, teacher.model, teacher.scheduler, data, cond, steps=a.steps,
                               batch_size=a.batch_size, lr=a.lr, alpha=a.alpha, seed=a.seed,
                               task_weight=a.task_weight)
        tmp = a.output.parent / f".{a.output.name}.recovering"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_pruned(student.pipeline if student.pipeline is not None else student.model, tmp)
            (tmp / "recovery.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                           "log": log}, indent=1))
            if a.output.exists():
                a.output.rmdir()
            tmp.rename(a.output)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except PrunekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    print(f"recovered {a.pruned} -> {a.output}: task loss {log[0]['task']:.4f} -> {log[-1]['task']:.4f}, "
          f"distill {log[0]['distill']:.4f} -> {log[-1]['distill']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
