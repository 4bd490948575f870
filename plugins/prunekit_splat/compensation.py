"""SUNDAE's neural compensation: an image-space gain network applied to pruned-scene renders.

Yang et al., "SUNDAE: Spectrally Pruned Gaussian Fields with Neural Compensation", arXiv
2405.00676. As released, the compensation is a small UNet on the rendered RGB image:

- ``levels`` resolution levels (paper: 4), channels ``base_channels * 2**l`` (paper: 64..512),
  two 3x3 conv + ReLU per level, 2x2 average pooling down, bilinear upsampling with skip
  concatenation on the way up, a 1x1 conv head with 3 outputs;
- output = head(I) * I (a per-pixel, per-channel multiplicative gain on the render I);
- loss (1 - lambda) L1 + lambda (1 - SSIM), lambda = 0.25; Adam, learning rate 1e-3.

Deviations, stated here and in the package README:

- Two ways to train it. :class:`JointCompensation` (a field of ``train.TrainConfig``) is the
  paper's: from a start step (default: the strategy's first prune step) the training loss is
  taken on ``net(render)`` and one backward pass updates the Gaussians and the net together.
  ``prunekit prune --compensate`` / :func:`train_compensation` fit it *after* pruning on fixed
  renders of the pruned scene (Gaussians frozen), for scenes pruned outside a training loop.
- The 1x1 head is initialised to weight 0, bias 1, so the untrained network is the identity
  (gain 1); the paper does not state its initialisation.
- ``base_channels`` defaults to 16 (not 64) so training and inference stay cheap on CPU;
  ``base_channels=64`` gives the paper's widths.

Files: the weights go beside the scene as ``NAME.compensation.safetensors`` (:func:`sidecar_path`)
with the architecture and a fingerprint of the scene (Gaussian count and SHA-256 of the float32
centres) in the metadata; :func:`load_compensation` refuses a file whose fingerprint does not
match the scene it is loaded for.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit import InputError
from prunekit.fileio import atomic_write_bytes

from .metrics import ssim

FORMAT = "prunekit-sundae-compensation"
SSIM_LAMBDA = 0.25


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class CompensationNet(nn.Module):
    """UNet gain network: ``forward(I) = head(UNet(I)) * I`` for images [H,W,3] or [B,H,W,3]."""

    def __init__(self, levels: int = 4, base_channels: int = 16):
        super().__init__()
        if levels < 1 or base_channels < 1:
            raise ValueError(f"levels and base_channels must be >= 1, got {levels}, {base_channels}")
        self.levels, self.base_channels = int(levels), int(base_channels)
        ch = [base_channels * 2**i for i in range(levels)]
        self.down = nn.ModuleList(_block(3 if i == 0 else ch[i - 1], ch[i]) for i in range(levels))
        self.up = nn.ModuleList(_block(ch[i + 1] + ch[i], ch[i]) for i in range(levels - 1))
        self.head = nn.Conv2d(ch[0], 3, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.ones_(self.head.bias)

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel gain [B,3,H,W] for NCHW input ``x``."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.avg_pool2d(x, 2) if i else x)
            skips.append(x)
        for i in reversed(range(self.levels - 1)):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], 1))
        return self.head(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batched = image.dim() == 4
        x = (image if batched else image[None]).permute(0, 3, 1, 2)
        out = (self.gain(x) * x).permute(0, 2, 3, 1)
        return out if batched else out[0]


def compensation_loss(pred: torch.Tensor, target: torch.Tensor, ssim_lambda: float = SSIM_LAMBDA) -> torch.Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) (SUNDAE, lambda = 0.25)."""
    return (1 - ssim_lambda) * (pred - target).abs().mean() + ssim_lambda * (1 - ssim(pred, target))


@dataclass
class JointCompensation:
    """SUNDAE's joint training of the compensation net with the Gaussians (a ``TrainConfig`` field).

    From ``start_step`` on, each training step renders I, computes the trainer's loss
    (1 - lambda) L1 + lambda (1 - SSIM) on ``net(I)`` = head(UNet(I)) * I against the photo, and
    one backward pass steps the Gaussians' optimisers and the net's Adam (``lr``, paper 1e-3).
    ``start_step=None``: the step after the first prune step of the strategy's ``schedule``
    (a strategy prunes after that step's update; SUNDAE adds the net once the field is
    pruned), or step 0 when the strategy has no schedule.
    """

    start_step: int | None = None
    levels: int = 4
    base_channels: int = 16
    lr: float = 1e-3
    seed: int = 0

    def start(self, strategy=None) -> int:
        if self.start_step is not None:
            return int(self.start_step)
        steps = getattr(getattr(strategy, "schedule", None), "steps", None)
        return int(steps[0]) + 1 if steps else 0

    def build(self) -> tuple[CompensationNet, torch.optim.Adam]:
        """A fresh identity-gain net (seeded, global RNG untouched) and its Adam."""
        net = seeded_net(self.levels, self.base_channels, self.seed)
        return net, torch.optim.Adam(net.parameters(), lr=self.lr)


def seeded_net(levels: int, base_channels: int, seed: int) -> CompensationNet:
    """A :class:`CompensationNet` initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CompensationNet(levels, base_channels)


def train_compensation(renders: list[torch.Tensor], targets: list[torch.Tensor], steps: int, *, levels: int = 4,
                       base_channels: int = 16, lr: float = 1e-3, batch: int = 4, crop: int | None = 96,
                       seed: int = 0, progress: bool = False, net: CompensationNet | None = None) -> CompensationNet:
    """Fit a :class:`CompensationNet` so that ``net(renders[i]) ~ targets[i]`` ([H,W,3] in [0,1]).

    Each step draws ``batch`` random views, takes a random ``crop`` x ``crop`` window of each
    (the whole image when ``crop`` is None or the image is smaller; a speed measure: the
    network is convolutional, so it is then applied to whole images) and takes one Adam step
    on :func:`compensation_loss`. ``net`` continues training an existing network.
    """
    if len(renders) != len(targets) or not renders:
        raise ValueError(f"need matching, non-empty renders and targets, got {len(renders)} and {len(targets)}")
    if net is None:
        net = seeded_net(levels, base_channels, seed)
    net.train()
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="compensation", unit="step", leave=False)
    with _threads():
        _fit(net, renders, targets, steps, lr, batch, crop, seed, it)
    return net.eval()


def _threads():
    """Intra-op threads of the reference renderer (one by default: see ``render.TORCH_THREADS``)."""
    from . import render
    from ._raster import torch_threads

    return torch_threads(render.TORCH_THREADS)


def _fit(net, renders, targets, steps, lr, batch, crop, seed, it) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in it:
        xs, ys = [], []
        for i in torch.randint(len(renders), (batch,), generator=gen).tolist():
            h, w = renders[i].shape[:2]
            ch, cw = (h, w) if crop is None else (min(crop, h), min(crop, w))
            r0 = int(torch.randint(h - ch + 1, (1,), generator=gen))
            c0 = int(torch.randint(w - cw + 1, (1,), generator=gen))
            xs.append(renders[i].detach()[r0:r0 + ch, c0:c0 + cw])
            ys.append(targets[i].detach()[r0:r0 + ch, c0:c0 + cw])
        if len({tuple(x.shape) for x in xs}) > 1:  # views of different sizes: this step uses the first
            xs, ys = xs[:1], ys[:1]
        x, y = torch.stack(xs), torch.stack(ys)
        loss = compensation_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{loss.detach().item():.4f}")


def fit_to_teacher(pruned, teacher, cameras, steps: int, progress: bool = False, **kwargs) -> CompensationNet:
    """Train on renders of ``pruned`` against renders of ``teacher`` (GaussianScenes) from ``cameras``."""
    from .render import render

    with torch.no_grad():
        renders = [render(pruned, c).image for c in cameras]
        targets = [render(teacher, c).image for c in cameras]
    return train_compensation(renders, targets, steps, progress=progress, **kwargs)


@torch.no_grad()
def apply(net: CompensationNet | None, image: torch.Tensor) -> torch.Tensor:
    """``net(image)`` clamped to [0, 1]; the image unchanged when ``net`` is None."""
    if net is None:
        return image
    with _threads():
        return net(image.to(next(net.parameters()).dtype)).clamp(0, 1).to(image.dtype)


def timed_apply(net: CompensationNet, image: torch.Tensor) -> tuple[torch.Tensor, float]:
    """:func:`apply` and its wall time in milliseconds."""
    t0 = time.perf_counter()
    out = apply(net, image)
    return out, 1000 * (time.perf_counter() - t0)


# ---------------------------------------------------------------------------- files
def sidecar_path(scene_path: str | os.PathLike) -> Path:
    """``out.ply`` -> ``out.compensation.safetensors`` (same folder)."""
    p = Path(scene_path)
    return p.with_name(f"{p.stem}.compensation.safetensors")


def fingerprint(scene) -> dict[str, str]:
    means = scene.means.detach().to("cpu", torch.float32).contiguous().numpy()
    return {"gaussians": str(len(scene)), "means_sha256": hashlib.sha256(means.tobytes()).hexdigest()}


def save_compensation(net: CompensationNet, path: str | os.PathLike, scene=None) -> None:
    """Write ``net`` (safetensors, atomically) with its architecture and ``scene``'s fingerprint."""
    from safetensors.torch import save

    meta = {"format": FORMAT, "version": "1", "levels": str(net.levels), "base_channels": str(net.base_channels)}
    if scene is not None:
        meta.update(fingerprint(scene))
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def net_from_state_dict(tensors: dict[str, torch.Tensor]) -> CompensationNet:
    """Rebuild a net from its ``state_dict`` alone (architecture read off the weight shapes);
    used for the net inside a nerfstudio checkpoint (``_model.compensation.*``)."""
    levels = len({k.split(".")[1] for k in tensors if k.startswith("down.")})
    first = tensors.get("down.0.0.weight")
    if not levels or first is None or first.dim() != 4:
        raise ValueError("not a compensation net state dict (no down.0.0.weight)")
    net = CompensationNet(levels, int(first.shape[0]))
    net.load_state_dict(tensors)
    return net.eval()


def load_compensation(path: str | os.PathLike, scene=None) -> CompensationNet:
    """Read a compensation file; with ``scene``, refuse one made for different Gaussians."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        net = CompensationNet(int(meta["levels"]), int(meta["base_channels"]))
        net.load_state_dict(tensors)
    except (KeyError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: compensation weights do not match their stated architecture ({e})") from None
    if scene is not None and "means_sha256" in meta:
        fp = fingerprint(scene)
        if fp != {k: meta.get(k) for k in fp}:
            raise InputError(f"{path}: made for another scene ({meta.get('gaussians')} Gaussians, this one has "
                             f"{len(scene)} or different centres); delete it or re-run prune --compensate")
    return net.eval()


# ---------------------------------------------------------------------------- splat target hooks
def attach_sidecar(scene, scene_path):
    """Load ``NAME.compensation.safetensors`` beside ``scene_path`` (if any) into ``scene.meta``."""
    side = sidecar_path(scene_path)
    if side.is_file():
        scene.meta = dict(scene.meta, compensation=load_compensation(side, scene))
    return scene


def write_sidecar(scene) -> None:
    """After the scene file is written: save ``meta["compensation"]`` to ``meta["compensation_file"]``."""
    net, dest = scene.meta.get("compensation"), scene.meta.get("compensation_file")
    if net is not None and dest:
        save_compensation(net, dest, scene)


def compensate_after_prune(pruned, original, cameras, opts, report):
    """``prunekit prune --compensate STEPS``: fit the net to ``original``'s renders from ``cameras``."""
    pruned.meta = {k: v for k, v in pruned.meta.items() if k not in ("compensation", "compensation_file")}
    side = sidecar_path(report.output) if report.output else None
    if not opts.compensate:
        if side is not None and side.exists():
            report.notes.append(f"warning: {side} belongs to an earlier output; eval will refuse it (delete it)")
        return pruned
    t0 = time.perf_counter()
    net = fit_to_teacher(pruned, original, cameras, opts.compensate, base_channels=opts.compensation_channels,
                         seed=opts.seed, progress=opts.progress)
    report.timings["compensation"] = time.perf_counter() - t0
    pruned.meta["compensation"] = net
    if side is not None:
        pruned.meta["compensation_file"] = str(side)
    report.notes.append(f"SUNDAE compensation: {opts.compensate} steps against the original's renders "
                        f"({len(cameras)} views){f', saved to {side}' if side else ''}")
    return pruned


def macs(net: CompensationNet, height: int, width: int) -> int:
    """Multiply-accumulates of one ``net`` pass on a ``height`` x ``width`` image (its convolutions;
    pooling, upsampling and the gain product are not counted). Grows with pixels, not Gaussians."""
    total = []

    def hook(mod, inputs, out):
        total.append(out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1])

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(height, width, 3))
    finally:
        for h in handles:
            h.remove()
    return int(sum(total))


def cost_ms(scene, cameras, views: int = 4) -> dict[str, float]:
    """Mean wall time (ms per image) of rendering ``scene`` and of its compensation net, over ``views`` views."""
    from .render import render

    net = scene.meta.get("compensation")
    r_ms, c_ms = [], []
    for cam in list(cameras)[:views]:
        t0 = time.perf_counter()
        with torch.no_grad():
            img = render(scene, cam).image
        r_ms.append(1000 * (time.perf_counter() - t0))
        c_ms.append(timed_apply(net, img)[1])
    return {"render_ms": sum(r_ms) / len(r_ms), "compensation_ms": sum(c_ms) / len(c_ms)}
