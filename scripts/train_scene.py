"""Train a 3DGS benchmark scene from a ``transforms.json`` capture (e.g. the fox) on CPU.

Uses :mod:`prunekit_splat.train` (reference renderer on CPU, gsplat's rasteriser on CUDA) with
its MCMC-style strategy. Frames whose image is missing are skipped with a warning (the fox
lists 67 frames, 50 images exist); every ``--test-every``-th remaining frame is held out for
PSNR. Initialisation: no SfM points, so ``--init-points`` random points, half in a ball of
0.4 x the median camera distance around the point nearest to all optical axes (the object),
half in a ball of 1.5 x that distance (background); each coloured with its mean colour over
the training images it projects into. Images are downscaled by ``--downscale``; lens
distortion is ignored.

Writes ``<out>/<name>.ply`` (INRIA PLY), ``<name>_cameras.json`` (all frames, INRIA form, at the
training resolution) and ``<name>_train.json`` (settings, held-out PSNR per frame, times);
skips the work when the PLY exists unless ``--force``. Default output: ``.cache/scenes/``.

    nice -n 10 .venv/bin/python scripts/train_scene.py ../shared/data/fox --name fox
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_frames(transforms: Path, downscale: float):
    """Cameras (scaled) and float images [H, W, 3] of every frame with an image."""
    from PIL import Image

    from prunekit_splat.cameras import load_cameras

    cams, images = [], []
    for cam in load_cameras(transforms):
        c = cam.scaled(1.0 / downscale)
        with Image.open(cam.image_path) as im:
            im = im.convert("RGB").resize((c.width, c.height), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0))
        cams.append(c)
    return cams, images


def focus_point(cams) -> torch.Tensor:
    """Least-squares point closest to all optical axes."""
    A = torch.zeros(3, 3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for c in cams:
        d = c.viewmat[2, :3].to(torch.float64)
        M = torch.eye(3, dtype=torch.float64) - torch.outer(d, d)
        A += M
        b += M @ c.position.to(torch.float64)
    return torch.linalg.solve(A, b).float()


def init_points(cams, images, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    centre = focus_point(cams)
    dist = float(torch.stack([(c.position - centre).norm() for c in cams]).median())

    def ball(m: int, radius: float) -> torch.Tensor:
        d = torch.randn(m, 3, generator=g)
        d = d / d.norm(dim=1, keepdim=True)
        return centre + d * radius * torch.rand(m, 1, generator=g) ** (1 / 3)

    pts = torch.cat([ball(n // 2, 0.4 * dist), ball(n - n // 2, 1.5 * dist)])
    acc, cnt = torch.zeros(n, 3), torch.zeros(n, 1)
    for c, img in zip(cams, images):
        pc = pts @ c.viewmat[:3, :3].T + c.viewmat[:3, 3]
        uv = pc @ c.K.T
        u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
        ok = (pc[:, 2] > 0.01) & (u >= 0) & (u < c.width) & (v >= 0) & (v < c.height)
        acc[ok] += img[v[ok].long(), u[ok].long()]
        cnt[ok] += 1
    colors = torch.where(cnt > 0, acc / cnt.clamp_min(1), torch.full_like(acc, 0.5))
    return pts, colors, dist


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder with transforms.json (or the file)")
    ap.add_argument("--name", default=None, help="output name (default: the folder name)")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "scenes")
    ap.add_argument("--downscale", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--init-points", type=int, default=10000)
    ap.add_argument("--cap-max", type=int, default=30000)
    ap.add_argument("--sh-degree", type=int, default=1)
    ap.add_argument("--test-every", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=None, help="stop training after this wall time")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)

    from prunekit import InputError
    from prunekit_splat.cameras import write_cameras_json
    from prunekit_splat.formats import write_scene
    from prunekit_splat.train import (MCMCStrategy, TrainConfig, evaluate, init_params, make_optimizers,
                                      params_to_scene, train)

    transforms = args.data / "transforms.json" if args.data.is_dir() else args.data
    name = args.name or transforms.parent.name
    ply = args.out / f"{name}.ply"
    if ply.exists() and not args.force:
        print(f"{ply} exists (use --force to retrain)")
        return 0
    if args.steps < 1 or args.init_points < 4 or args.downscale <= 0 or args.test_every < 2:
        print("error: --steps >= 1, --init-points >= 4, --downscale > 0, --test-every >= 2 required", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    try:
        cams, images = load_frames(transforms, args.downscale)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    test_idx = [i for i in range(len(cams)) if i % args.test_every == 0]
    train_idx = [i for i in range(len(cams)) if i % args.test_every != 0]
    tr_c, tr_i = [cams[i] for i in train_idx], [images[i] for i in train_idx]
    te_c, te_i = [cams[i] for i in test_idx], [images[i] for i in test_idx]
    pts, colors, dist = init_points(tr_c, tr_i, args.init_points, args.seed)
    params = init_params(pts, colors, sh_degree=args.sh_degree)
    scene_scale = float(torch.stack([c.position for c in tr_c]).std(0).norm()) * 1.1
    optimizers = make_optimizers(params, scene_scale)
    strategy = MCMCStrategy(cap_max=args.cap_max, refine_start_iter=min(200, args.steps // 10),
                            refine_every=max(10, min(50, args.steps // 40)), refine_stop_iter=int(0.8 * args.steps),
                            seed=args.seed)
    cfg = TrainConfig(steps=args.steps, sh_degree=args.sh_degree, seed=args.seed,
                      time_budget_s=None if args.minutes is None else 60 * args.minutes)
    print(f"{name}: {len(tr_c)} training / {len(te_c)} held-out frames at {tr_c[0].width}x{tr_c[0].height}, "
          f"{len(pts)} initial points, cap {args.cap_max}", flush=True)
    log = train(params, optimizers, strategy, tr_c, tr_i, cfg, progress=True, test=(te_c, te_i))
    scene = params_to_scene({k: v.detach() for k, v in params.items()})
    train_psnr = evaluate(params, tr_c[:8], tr_i[:8])
    args.out.mkdir(parents=True, exist_ok=True)
    write_scene(scene, ply)
    write_cameras_json(cams, args.out / f"{name}_cameras.json")
    summary = {"data": str(transforms), "frames": len(cams), "train_frames": len(tr_c), "test_frames": test_idx,
               "resolution": [tr_c[0].width, tr_c[0].height], "steps": args.steps, "steps_done": log["steps_done"], "gaussians": len(scene),
               "init_points": args.init_points, "cap_max": args.cap_max, "sh_degree": args.sh_degree,
               "test_psnr_mean": sum(log["test_psnr"]) / len(log["test_psnr"]), "test_psnr": log["test_psnr"],
               "train_psnr_first8_mean": sum(train_psnr) / len(train_psnr), "train_seconds": log["seconds"],
               "total_seconds": time.time() - t0, "log": {k: log[k] for k in ("steps", "loss", "gaussians")},
               "strategy": log["strategy_state"], "torch_threads": torch.get_num_threads()}
    from prunekit.fileio import atomic_write_text

    atomic_write_text(args.out / f"{name}_train.json", json.dumps(summary, indent=1))
    print(f"wrote {ply}: {len(scene)} Gaussians, held-out PSNR {summary['test_psnr_mean']:.2f} dB "
          f"(train {summary['train_psnr_first8_mean']:.2f} dB) in {summary['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
