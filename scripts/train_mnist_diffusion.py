#!/usr/bin/env python
"""Train small class-conditional diffusers denoisers and a digit classifier on the real MNIST test set.

Used by the LD-Pruner benchmark (scripts/bench/bench_ldpruner.py) as a real trained model
(no hub downloads are possible here). Data: ``../shared/data/mnist`` (10,000 real digits);
images 0..7999 train everything, 8000..9999 are held out as the real reference for the
Fréchet distance and the classifier's accuracy.

Outputs (cached; pass --force to retrain), under ``out/mnist/`` (git-ignored):
  classifier.safetensors, classifier.json     digit classifier (quality meter) + held-out accuracy
  unet/   ClassConditionalPipeline (UNet2DModel + DDIMScheduler), train_log.json
  dit/    ClassConditionalPipeline (DiTTransformer2DModel + DDIMScheduler), train_log.json

    .venv/bin/python scripts/train_mnist_diffusion.py --what all --steps 1500
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist"
N_TRAIN = 8000

UNET_CONFIG = dict(
    sample_size=32, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    num_class_embeds=10, norm_num_groups=8, attention_head_dim=16,
)
DIT_CONFIG = dict(
    sample_size=32, num_layers=8, patch_size=4, attention_head_dim=32, num_attention_heads=4,
    in_channels=1, out_channels=1, norm_type="ada_norm_zero", num_embeds_ada_norm=10,
)


def build_denoiser(kind: str):
    from diffusers import DiTTransformer2DModel, UNet2DModel

    return UNet2DModel(**UNET_CONFIG) if kind == "unet" else DiTTransformer2DModel(**DIT_CONFIG)


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def train_classifier(x, y, out: Path, steps: int, seed: int) -> dict:
    from safetensors.torch import save_file

    from prunekit_diffusion.quality import DigitClassifier

    torch.manual_seed(seed)
    clf = DigitClassifier()
    opt = torch.optim.AdamW(clf.parameters(), 2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, N_TRAIN, (128,), generator=g)
        xb = x[idx]
        # small random shifts so generated (slightly off-centre) digits are classified robustly
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(clf(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        acc = float((clf(x[N_TRAIN:]).argmax(1) == y[N_TRAIN:]).float().mean())
    save_file(clf.state_dict(), str(out / "classifier.safetensors"))
    info = {"heldout_accuracy": acc, "steps": steps, "train_seconds": time.perf_counter() - t0, "n_train": N_TRAIN}
    (out / "classifier.json").write_text(json.dumps(info, indent=2))
    return info


def train_denoiser(kind: str, x, y, out: Path, steps: int, batch: int, lr: float, seed: int,
                   resume: bool = False) -> dict:
    from diffusers import DDIMScheduler

    from prunekit_diffusion.pipeline import ClassConditionalPipeline

    torch.manual_seed(seed)
    previous = None
    if resume:  # continue from the cached (EMA) weights
        previous = json.loads((out / kind / "train_log.json").read_text())
        model = ClassConditionalPipeline.from_pretrained(out / kind).denoiser
        seed += previous.get("total_steps", previous["steps"])
    else:
        model = build_denoiser(kind)
    ema = copy.deepcopy(model).eval()
    sched = noise_scheduler()
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.0)
    warm = min(100, steps // 10)
    lr_at = lambda s: lr * min(1.0, (s + 1) / max(1, warm)) * (0.5 * (1 + math.cos(math.pi * s / steps)) * 0.9 + 0.1)
    g = torch.Generator().manual_seed(seed)
    log, t0 = [], time.perf_counter()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, N_TRAIN, (batch,), generator=g)
        x0, labels = x[idx], y[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        xt = sched.add_noise(x0, noise, t)
        if kind == "unet":
            pred = model(xt, t, class_labels=labels).sample
        else:
            pred = model(xt, timestep=t, class_labels=labels).sample
        loss = F.mse_loss(pred, noise)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.998 if resume else 0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        if step % 50 == 0 or step == steps - 1:
            log.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - t0})
            print(f"{kind} step {step} loss {loss.item():.4f} {time.perf_counter() - t0:.0f}s", flush=True)
    pipe = ClassConditionalPipeline(denoiser=ema, scheduler=DDIMScheduler.from_config(sched.config))
    pipe.save_pretrained(out / kind)
    info = {"kind": kind, "steps": steps, "batch": batch, "lr": lr, "train_seconds": time.perf_counter() - t0,
            "params": sum(p.numel() for p in model.parameters()), "n_train": N_TRAIN, "log": log}
    if previous is not None:
        info["total_steps"] = previous.get("total_steps", previous["steps"]) + steps
        info["total_train_seconds"] = previous.get("total_train_seconds", previous["train_seconds"]) + info["train_seconds"]
        info["previous_runs"] = previous.get("previous_runs", []) + [{k: v for k, v in previous.items() if k not in ("log", "previous_runs")}]
    (out / kind / "train_log.json").write_text(json.dumps(info, indent=2))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=["classifier", "unet", "dit", "all"], default="all")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "mnist")
    ap.add_argument("--steps", type=int, default=1500, help="denoiser training steps")
    ap.add_argument("--clf-steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="retrain even when cached outputs exist")
    ap.add_argument("--resume", action="store_true", help="train a cached denoiser for --steps more steps")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not DATA.exists():
        raise SystemExit(f"MNIST not found at {DATA}")
    from prunekit_diffusion.quality import load_mnist

    x, y = load_mnist(DATA)
    a.out.mkdir(parents=True, exist_ok=True)
    todo = ["classifier", "unet", "dit"] if a.what == "all" else [a.what]
    for what in todo:
        done = (a.out / "classifier.safetensors").exists() if what == "classifier" else (a.out / what / "model_index.json").exists()
        if done and not a.force and not (a.resume and what != "classifier"):
            print(f"{what}: cached in {a.out}")
            continue
        if what == "classifier":
            print(json.dumps(train_classifier(x, y, a.out, a.clf_steps, a.seed)))
        else:
            info = train_denoiser(what, x, y, a.out, a.steps, a.batch, a.lr if what == "unet" else a.lr / 2, a.seed,
                                  resume=a.resume and done)
            print(json.dumps({k: v for k, v in info.items() if k != "log"}))


if __name__ == "__main__":
    main()
