"""Recover quality after pruning by fitting the kept Gaussians with Adam.

- :func:`distill` — self-distillation: the unpruned scene is the teacher; targets are its own
  renders from the given views (no training images needed).
- :func:`finetune_on_images` — ordinary fine-tuning against real images (``transforms.json``).

Loss (3DGS, Kerbl et al. 2023): (1 - lambda) * L1 + lambda * (1 - SSIM), lambda = 0.2.
Learning rates follow gsplat's defaults: means 1.6e-4 x scene extent, log-scales 5e-3,
quaternions 1e-3, opacity logits 5e-2, SH DC 2.5e-3, higher SH 2.5e-3 / 20; the means' rate
decays exponentially to 1 % over the run.
"""

from __future__ import annotations

import math

import torch

from .cameras import Camera
from .metrics import ssim
from .scene import GaussianScene

SSIM_LAMBDA = 0.2


def _fit(scene: GaussianScene, cameras: list[Camera], targets: list[torch.Tensor], steps: int, seed: int,
         progress: bool, background: torch.Tensor | None = None) -> GaussianScene:
    from .render import render

    if steps <= 0 or len(scene) == 0:
        return scene
    lo, hi = scene.bounds(0.01)
    extent = float((hi - lo).norm()) / 2 or 1.0
    params = {k: torch.nn.Parameter(v.detach().clone()) for k, v in scene.tensors().items()}
    lrs = {"means": 1.6e-4 * extent, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3,
           "shN": 2.5e-3 / 20}
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lrs[k], "name": k} for k in params
                            if params[k].numel()], eps=1e-15)
    gamma = 0.01 ** (1.0 / steps)
    gen = torch.Generator().manual_seed(seed)
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="distill", unit="step", leave=False)
    for _ in it:
        i = int(torch.randint(len(cameras), (1,), generator=gen))
        current = GaussianScene(**params, extra=scene.extra, meta=scene.meta)
        img = render(current, cameras[i], background=background).image
        tgt = targets[i]
        loss = (1 - SSIM_LAMBDA) * (img - tgt).abs().mean() + SSIM_LAMBDA * (1 - ssim(img, tgt))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            if g["name"] == "means":
                g["lr"] *= gamma
        if progress:
            it.set_postfix(loss=f"{float(loss):.4f}")
    return GaussianScene(**{k: v.detach() for k, v in params.items()}, extra=scene.extra, meta=scene.meta)


def distill(student: GaussianScene, teacher: GaussianScene, cameras: list[Camera], steps: int, seed: int = 0,
            progress: bool = False) -> GaussianScene:
    """Fit ``student`` to ``teacher``'s renders from ``cameras`` for ``steps`` Adam steps."""
    from .render import render

    with torch.no_grad():
        targets = [render(teacher, c).image for c in cameras]
    return _fit(student, cameras, targets, steps, seed, progress)


def finetune_on_images(scene: GaussianScene, transforms_path: str, steps: int, resolution: int = 256, seed: int = 0,
                       progress: bool = False) -> GaussianScene:
    """Fine-tune ``scene`` on the real images listed in an instant-ngp/nerfstudio ``transforms.json``."""
    import numpy as np
    from PIL import Image

    from prunekit import InputError

    from .cameras import load_cameras

    cams, targets = [], []
    for cam in load_cameras(transforms_path):
        if not cam.image_path:
            continue
        f = resolution / max(cam.width, cam.height)
        c = cam.scaled(f)
        try:
            with Image.open(cam.image_path) as im:
                im = im.convert("RGB").resize((c.width, c.height), Image.BILINEAR)
                targets.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0))
        except OSError as e:
            raise InputError(f"{cam.image_path}: cannot read image ({e})") from None
        cams.append(c)
    if not cams:
        raise InputError(f"{transforms_path}: no frames with readable images")
    return _fit(scene, cams, targets, steps, seed, progress)


def psnr_to(scene: GaussianScene, teacher: GaussianScene, cameras: list[Camera]) -> float:
    """Mean PSNR of ``scene`` against ``teacher`` over ``cameras`` (for benchmarks)."""
    from .metrics import psnr
    from .render import render

    with torch.no_grad():
        vals = [psnr(render(teacher, c).image, render(scene, c).image) for c in cameras]
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("inf")
