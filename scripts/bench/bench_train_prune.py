"""Prune while training: the fox capture trained with and without in-training pruning.

Every run uses the same frames (fox ``transforms.json``, images downscaled by ``--downscale``;
every ``--test-every``-th frame held out), the same initial points, the same seed and the
same step budget, with :mod:`prunekit_splat.train` (reference renderer on CPU) and its MCMC
strategy (cap ``--cap``):

- ``unpruned``: the MCMC strategy alone;
- ``<scorer>``: :class:`prunekit_splat.strategy.PruneStrategy` around the same MCMC strategy,
  one-shot prune to ``--keep`` at ``--prune-at`` x steps, then training continues (the MCMC
  cap follows the pruned count);
- ``<scorer>+compensation``: that run's scene with SUNDAE's image-space compensation net
  (:mod:`prunekit_splat.compensation`) trained ``--comp-steps`` steps on its renders of the
  training frames against the training images.

Figures per run: held-out PSNR (mean over held-out frames), final Gaussian count, render time
(ms per held-out image, mean; measured in this process so ratios between runs are fair; the
compensation net's own ms per image is added for the compensated run), PLY size, train
seconds. JSON: ``bench-out/train_prune.json``.

    nice -n 10 .venv/bin/python scripts/bench/bench_train_prune.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DATA, ROOT, write_result

import prunekit
from prunekit_splat.compensation import train_compensation, timed_apply
from prunekit_splat.formats import write_scene
from prunekit_splat.metrics import psnr
from prunekit_splat.render import render
from prunekit_splat.strategy import PruneStrategy
from prunekit_splat.train import MCMCStrategy, TrainConfig, init_params, make_optimizers, params_to_scene, train

sys.path.insert(0, str(ROOT / "scripts"))
from train_scene import init_points, load_frames  # noqa: E402


def measure(scene, cams, images, net=None) -> dict:
    """Held-out PSNR, render ms/image and (with ``net``) compensation ms/image."""
    ps, r_ms, c_ms = [], [], []
    with torch.no_grad():
        for c, ref in zip(cams, images):
            t0 = time.perf_counter()
            img = render(scene, c, backend="torch").image
            r_ms.append(1000 * (time.perf_counter() - t0))
            if net is not None:
                img, ms = timed_apply(net, img)
                c_ms.append(ms)
            ps.append(psnr(ref, img))
    out = {"psnr": sum(ps) / len(ps), "psnr_per_frame": ps, "render_ms": sum(r_ms) / len(r_ms)}
    if net is not None:
        out["compensation_ms"] = sum(c_ms) / len(c_ms)
    return out


def ply_bytes(scene) -> int:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.ply"
        write_scene(scene, p)
        return p.stat().st_size


def run(name, strategy, pts, colors, scale, data, args) -> tuple[dict, object]:
    tr_c, tr_i, te_c, te_i = data
    params = init_params(pts, colors, sh_degree=args.sh_degree)
    opts = make_optimizers(params, scale)
    cfg = TrainConfig(steps=args.steps, sh_degree=args.sh_degree, seed=args.seed, log_every=max(1, args.steps // 20))
    t0 = time.perf_counter()
    log = train(params, opts, strategy, tr_c, tr_i, cfg, progress=args.progress)
    seconds = time.perf_counter() - t0
    scene = params_to_scene({k: v.detach() for k, v in params.items()})
    res = {"name": name, "train_seconds": seconds, "gaussians": len(scene), "ply_bytes": ply_bytes(scene),
           "log": {k: log[k] for k in ("steps", "loss", "gaussians")}, **measure(scene, te_c, te_i)}
    print(f"{name}: {len(scene)} Gaussians, held-out PSNR {res['psnr']:.2f} dB, {seconds:.0f} s", flush=True)
    return res, scene


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "fox")
    ap.add_argument("--downscale", type=float, default=16.0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--init-points", type=int, default=4000)
    ap.add_argument("--cap", type=int, default=10000)
    ap.add_argument("--sh-degree", type=int, default=1)
    ap.add_argument("--keep", type=float, default=0.1)
    ap.add_argument("--prune-at", type=float, default=0.5, help="prune step as a fraction of --steps")
    ap.add_argument("--scorers", default="sundae,opacity")
    ap.add_argument("--comp-steps", type=int, default=300)
    ap.add_argument("--comp-channels", type=int, default=16)
    ap.add_argument("--test-every", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out-name", default="train_prune")
    args = ap.parse_args(argv)
    if not (args.data / "transforms.json").is_file():
        print(f"skip: {args.data}/transforms.json not found", file=sys.stderr)
        return 0
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t_all = time.perf_counter()
    cams, images = load_frames(args.data / "transforms.json", args.downscale)
    test = [i for i in range(len(cams)) if i % args.test_every == 0]
    train_ids = [i for i in range(len(cams)) if i % args.test_every != 0]
    data = ([cams[i] for i in train_ids], [images[i] for i in train_ids], [cams[i] for i in test],
            [images[i] for i in test])
    pts, colors, _ = init_points(data[0], data[1], args.init_points, args.seed)
    scale = float(torch.stack([c.position for c in data[0]]).std(0).norm()) * 1.1
    prune_step = int(args.prune_at * args.steps)

    def mcmc():
        return MCMCStrategy(cap_max=args.cap, refine_stop_iter=int(0.8 * args.steps), seed=args.seed)

    runs = {}
    base, _ = run("unpruned", mcmc(), pts, colors, scale, data, args)
    runs["unpruned"] = base
    for scorer in [s for s in args.scorers.split(",") if s]:
        strat = PruneStrategy(base=mcmc(), scorer=scorer, schedule=prunekit.Schedule.one_shot(prune_step, args.keep),
                              cameras=data[0])
        res, scene = run(scorer, strat, pts, colors, scale, data, args)
        runs[scorer] = res
        t0 = time.perf_counter()
        with torch.no_grad():
            renders = [render(scene, c, backend="torch").image for c in data[0]]
        net = train_compensation(renders, data[1], args.comp_steps, base_channels=args.comp_channels,
                                 seed=args.seed, progress=args.progress)
        comp = {**res, "name": f"{scorer}+compensation", "compensation_train_seconds": time.perf_counter() - t0,
                "compensation_bytes": 4 * sum(p.numel() for p in net.parameters()),
                **measure(scene, data[2], data[3], net)}
        comp["log"] = None
        runs[f"{scorer}+compensation"] = comp
        print(f"{scorer}+compensation: held-out PSNR {comp['psnr']:.2f} dB "
              f"(compensation {comp['compensation_ms']:.1f} ms vs render {comp['render_ms']:.1f} ms per image)",
              flush=True)
    for r in runs.values():
        r["psnr_minus_unpruned_db"] = r["psnr"] - base["psnr"]
        r["fewer_gaussians_x"] = base["gaussians"] / max(r["gaussians"], 1)
        r["render_time_vs_unpruned"] = (r["render_ms"] + r.get("compensation_ms", 0.0)) / base["render_ms"]
    target = runs.get("sundae+compensation")
    verdict = None
    if target is not None:
        verdict = {"target": "keep 10% with SUNDAE + compensation: PSNR within 0.5 dB of unpruned at >= 5x fewer",
                   "psnr_gap_db": target["psnr_minus_unpruned_db"], "fewer_x": target["fewer_gaussians_x"],
                   "met": bool(target["psnr_minus_unpruned_db"] >= -0.5 and target["fewer_gaussians_x"] >= 5)}
    payload = {
        "inputs": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "train_frames": len(train_ids), "test_frames": test,
                   "resolution": [data[0][0].width, data[0][0].height], "prune_step": prune_step,
                   "renderer": "prunekit_splat reference (torch, CPU)", "strategy": "prunekit_splat.train.MCMCStrategy"},
        "runs": runs, "target": verdict, "total_seconds": time.perf_counter() - t_all}
    path = write_result(args.out_name, payload)
    print(f"wrote {path}")
    print("| run | Gaussians | held-out PSNR | vs unpruned | render ms | comp ms | PLY KB |")
    print("|---|---|---|---|---|---|---|")
    for r in runs.values():
        print(f"| {r['name']} | {r['gaussians']} | {r['psnr']:.2f} | {r['psnr_minus_unpruned_db']:+.2f} | "
              f"{r['render_ms']:.1f} | {r.get('compensation_ms', 0):.1f} | {r['ply_bytes'] / 1024:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
