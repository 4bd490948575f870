"""Prune while training: the fox capture trained with and without in-training pruning.

Every run uses the same frames (fox ``transforms.json``, images downscaled by ``--downscale``;
every ``--test-every``-th frame held out), the same initial points, seed, camera sequence and
step budget (``--steps``), with :mod:`prunekit_splat.train` (reference renderer on CPU) and its
MCMC strategy (cap ``--cap``). Runs that differ only after step s share steps [0, s): the
unpruned run is stopped at each branch point, copied (parameters, Adam states, strategy and its
RNG) and resumed, which gives exactly the same steps as separate runs (tested in
``tests/plugins/splat/test_train.py``) at a fraction of the CPU time.

``--runs`` (comma-separated) names the pruned runs, ``SCORER[+joint][:cubic]``:

- ``SCORER``: :class:`prunekit_splat.strategy.PruneStrategy` around the same MCMC strategy, one
  prune to ``--keep`` of the current Gaussians at ``--prune-at`` x steps (after that step's
  update and MCMC refine), then training continues on the same schedule (the MCMC cap follows
  the pruned count: relocation goes on, no regrowth);
- ``+joint``: SUNDAE's compensation net (width ``--comp-channels``) trained jointly with the
  Gaussians from the step after the first prune (``TrainConfig.compensation``);
- ``:cubic``: iterative pruning instead, core ``Schedule.cubic`` from ``--iter-start`` x steps
  to the one-shot step every ``--iter-every`` steps, ending at ``--keep`` of the count at the
  first prune step.

Also: ``SCORER+posthoc`` rows for the scorers in ``--posthoc`` (the net fitted after training
on the finished run's renders, Gaussians frozen: the earlier approach, for comparison) and,
with ``--small-baseline``, a run trained from the start with as many Gaussians as the one-shot
pruned runs end with (``init-points = cap = that count``): is pruning better than training small?

Figures per run: held-out PSNR (mean over held-out frames), final Gaussian count, render time
(process CPU ms per held-out image, one thread, mean; and the compensation net's own ms), PLY +
sidecar bytes, process CPU seconds of the run's steps; for SUNDAE prunes the graph statistics of the scored
centres (nearest-neighbour distances, radius r = min(10 d_min, 2 d_max), share of centres with
no neighbour within r, i.e. score 0). JSON: ``bench-out/train_prune.json``.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench/bench_train_prune.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA, ROOT, write_result

import prunekit
from prunekit_splat.compensation import JointCompensation, apply, macs, sidecar_path, train_compensation
from prunekit_splat.graph import quantile_radius, radius_graph
from prunekit_splat.metrics import psnr
from prunekit_splat.render import render
from prunekit_splat.strategy import PruneStrategy
from prunekit_splat.train import (MCMCStrategy, TrainConfig, init_params, make_optimizers, params_to_scene,
                                  save_trained, train)

sys.path.insert(0, str(ROOT / "scripts"))
from train_scene import init_points, load_frames  # noqa: E402


class RecordingPrune(PruneStrategy):
    """:class:`PruneStrategy` that keeps statistics of what it scored (SUNDAE graph, zero scores)."""

    def score(self, params):
        scores = super().score(params)
        rec = {"gaussians": len(params["means"]),
               "zero_scores": float(sum((v == 0).sum() for v in scores.groups.values()) / scores.total)}
        if self.scorer == "sundae":
            rec.update(graph_stats(params["means"].detach(), self._config.max_neighbors, self._config.nn_quantile))
        self.records = [*getattr(self, "records", []), rec]
        return scores

    def prune(self, params, optimizers, state, budget, step=None) -> int:
        removed = super().prune(params, optimizers, state, budget, step=step)
        self.records[-1].update(step=step, after=len(params["means"]))
        return removed


def graph_stats(means: torch.Tensor, k: int, nn_quantile: float = 0.0) -> dict:
    """Nearest-neighbour distances and SUNDAE's radius graph of ``means`` (as ``high_pass_scores`` builds it)."""
    from scipy.spatial import cKDTree

    x64 = means.to(torch.float64).numpy()
    x = (x64 - x64.mean(axis=0)).astype(np.float32)
    d, _ = cKDTree(x).query(x, k=2)
    nn = d[:, 1]
    pos = nn[nn > 0]
    r = quantile_radius(x, nn_quantile) if nn_quantile > 0 else min(10 * float(pos.min()), 2 * float(nn.max()))
    src, _, _ = radius_graph(x, k, r)
    deg = np.bincount(src, minlength=len(x))
    return {"nn_distance_quantiles_0_10_50_90": [float(np.quantile(nn, q)) for q in (0, 0.1, 0.5, 0.9)],
            "coincident_fraction": float((nn == 0).mean()), "d_min": float(pos.min()), "radius": r,
            "isolated_fraction": float((deg == 0).mean()), "mean_degree": float(deg.mean())}


def net_effect(scene, net, cams, images) -> dict:
    """What the net does on these views: PSNR without/with it and its mean |gain - 1|."""
    raw, comp, dev = [], [], []
    with torch.no_grad():
        for c, ref in zip(cams, images):
            img = render(scene, c, backend="torch").image
            raw.append(psnr(ref, img))
            comp.append(psnr(ref, apply(net, img)))
            dev.append(float((net.gain(img.permute(2, 0, 1)[None]) - 1).abs().mean()))
    return {"psnr_without_net": sum(raw) / len(raw), "psnr_with_net": sum(comp) / len(comp),
            "mean_abs_gain_minus_1": sum(dev) / len(dev)}


def measure(params, cams, images, net=None, train_views=None) -> dict:
    """Held-out PSNR, render ms/image and (with ``net``) compensation ms/image; PLY and sidecar bytes;
    with ``net`` also its effect on the held-out views and on ``train_views`` (cameras, images)."""
    ps, r_ms, c_ms = [], [], []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.ply"
        scene = save_trained(params, path, net)
        sizes = {"ply_bytes": path.stat().st_size,
                 "compensation_bytes": sidecar_path(path).stat().st_size if net is not None else 0}
    with torch.no_grad():
        for c, ref in zip(cams, images):  # process CPU time (one thread): robust to the machine's load
            t0 = time.process_time()
            img = render(scene, c, backend="torch").image
            r_ms.append(1000 * (time.process_time() - t0))
            if net is not None:
                t0 = time.process_time()
                img = apply(net, img)
                c_ms.append(1000 * (time.process_time() - t0))
            ps.append(psnr(ref, img))
    out = {"gaussians": len(scene), "psnr": sum(ps) / len(ps), "psnr_per_frame": ps,
           "render_ms": sum(r_ms) / len(r_ms), **sizes}
    if net is not None:
        out["compensation_ms"] = sum(c_ms) / len(c_ms)
        out["compensation_params"] = sum(p.numel() for p in net.parameters())
        h, w = images[0].shape[:2]
        out["compensation_mmac_per_megapixel"] = macs(net, h, w) / (h * w)
        out["net_on_held_out"] = net_effect(scene, net, cams, images)
        if train_views is not None:
            out["net_on_train_views"] = net_effect(scene, net, *train_views)
    return out


def leg(state, strategy, start, stop, data, args, comp=None) -> dict:
    """Train ``state`` = (params, optimizers) with ``strategy`` over steps [start, stop); returns the log."""
    params, opts = state
    cfg = TrainConfig(steps=args.steps, sh_degree=args.sh_degree, seed=args.seed, log_every=max(1, args.steps // 20),
                      start_step=start, stop_step=stop, compensation=comp)
    c0 = time.process_time()
    log = train(params, opts, strategy, data[0], data[1], cfg, progress=args.progress)
    log["cpu_seconds"] = time.process_time() - c0
    return log


def parse_run(spec: str) -> tuple[str, dict, bool, bool]:
    """``SCORER[/option=value...][+joint][:cubic]`` -> (scorer, options, joint, cubic)."""
    name, _, sched = spec.partition(":")
    name, _, extra = name.partition("+")
    scorer, *opts = name.split("/")
    if extra not in ("", "joint") or sched not in ("", "cubic") or not all("=" in o for o in opts):
        raise SystemExit(f"error: run {spec!r}: expected SCORER[/option=value...][+joint][:cubic]")
    return scorer, {k: float(v) for k, v in (o.split("=", 1) for o in opts)}, extra == "joint", sched == "cubic"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "fox")
    ap.add_argument("--downscale", type=float, default=16.0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--init-points", type=int, default=4000)
    ap.add_argument("--cap", type=int, default=10000)
    ap.add_argument("--sh-degree", type=int, default=1)
    ap.add_argument("--keep", type=float, default=0.1)
    ap.add_argument("--prune-at", type=float, default=0.5, help="one-shot prune step as a fraction of --steps")
    ap.add_argument("--iter-start", type=float, default=0.3, help="first step of :cubic runs (fraction of --steps)")
    ap.add_argument("--iter-every", type=int, default=50)
    ap.add_argument("--runs", default="sundae,sundae+joint,opacity,opacity+joint,radsplat,sundae+joint:cubic")
    ap.add_argument("--posthoc", default="sundae", help="scorers whose finished run also gets a post-hoc net")
    ap.add_argument("--small-baseline", action="store_true")
    ap.add_argument("--comp-steps", type=int, default=300, help="post-hoc compensation steps")
    ap.add_argument("--comp-channels", type=int, default=16)
    ap.add_argument("--test-every", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out-name", default="train_prune")
    args = ap.parse_args(argv)
    if not (args.data / "transforms.json").is_file():
        print(f"skip: {args.data}/transforms.json not found", file=sys.stderr)
        return 0
    specs = [parse_run(s) for s in args.runs.split(",") if s]
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t_all, c_all = time.perf_counter(), time.process_time()
    cams, images = load_frames(args.data / "transforms.json", args.downscale)
    test = [i for i in range(len(cams)) if i % args.test_every == 0]
    train_ids = [i for i in range(len(cams)) if i % args.test_every != 0]
    data = ([cams[i] for i in train_ids], [images[i] for i in train_ids], [cams[i] for i in test],
            [images[i] for i in test])
    pts, colors, _ = init_points(data[0], data[1], args.init_points, args.seed)
    scale = float(torch.stack([c.position for c in data[0]]).std(0).norm()) * 1.1
    prune_step = int(args.prune_at * args.steps)
    iter_start = int(args.iter_start * args.steps)

    def schedule(cubic: bool) -> prunekit.Schedule:
        if cubic:
            return prunekit.Schedule.cubic(iter_start, prune_step, args.iter_every, args.keep)
        return prunekit.Schedule.one_shot(prune_step, args.keep)

    def fresh(points, cols, cap):
        torch.manual_seed(args.seed)  # init_params draws quaternions from the global RNG
        params = init_params(points, cols, sh_degree=args.sh_degree)
        mcmc = MCMCStrategy(cap_max=cap, refine_stop_iter=int(0.8 * args.steps), seed=args.seed)
        return (params, make_optimizers(params, scale)), mcmc

    # the unpruned chain, copied at every branch point
    branches = sorted({schedule(c).steps[0] for *_, c in specs})
    (state, mcmc), snaps, chain_logs, chain_cpu, at = fresh(pts, colors, args.cap), {}, [], 0.0, 0
    for b in [*branches, args.steps]:
        log = leg(state, mcmc, at, b, data, args)
        chain_logs.append(log)
        chain_cpu += log["cpu_seconds"]
        if b < args.steps:
            snaps[b] = (copy.deepcopy((state, mcmc)), chain_cpu)
        at = b
        print(f"unpruned chain: step {b}, {len(state[0]['means'])} Gaussians, {chain_cpu:.0f} cpu-s", flush=True)
    runs = {"unpruned": {"name": "unpruned", "cpu_seconds": chain_cpu,
                         "log": {k: sum((lg[k] for lg in chain_logs), []) for k in ("steps", "loss", "gaussians")},
                         **measure(state[0], data[2], data[3])}}
    finished = {}
    for (scorer, options, joint, cubic), name in zip(specs, [s for s in args.runs.split(",") if s]):
        sched = schedule(cubic)
        (state, base), prefix_cpu = copy.deepcopy(snaps[sched.steps[0]])
        strat = RecordingPrune(base=base, scorer=scorer, scorer_options=options, schedule=sched, cameras=data[0])
        comp = JointCompensation(base_channels=args.comp_channels, seed=args.seed) if joint else None
        log = leg(state, strat, sched.steps[0], args.steps, data, args, comp)
        net = log.get("compensation")
        res = {"name": name, "scorer": scorer, "scorer_options": options, "schedule": {"steps": list(sched.steps), "keeps": list(sched.keeps)},
               "joint_compensation": joint, "cpu_seconds": prefix_cpu + log["cpu_seconds"],
               "prunes": getattr(strat, "records", []),
               "log": {k: log[k] for k in ("steps", "loss", "gaussians")},
               **measure(state[0], data[2], data[3], net, (data[0][:8], data[1][:8]))}
        if joint:
            res["compensation_start"] = log["compensation_start"]
        runs[name] = res
        finished[name] = state[0]
        print(f"{name}: {res['gaussians']} Gaussians, held-out PSNR {res['psnr']:.2f} dB, "
              f"{res['cpu_seconds']:.0f} cpu-s", flush=True)
    for scorer in [s for s in args.posthoc.split(",") if s and s in runs]:
        params = finished[scorer]
        c0 = time.process_time()
        with torch.no_grad():
            scene = params_to_scene({k: v.detach() for k, v in params.items()})
            renders = [render(scene, c, backend="torch").image for c in data[0]]
        net = train_compensation(renders, data[1], args.comp_steps, base_channels=args.comp_channels, seed=args.seed)
        name = f"{scorer}+posthoc"
        runs[name] = {"name": name, "scorer": scorer, "compensation_train_cpu_seconds": time.process_time() - c0,
                      "cpu_seconds": runs[scorer]["cpu_seconds"] + time.process_time() - c0,
                      **measure(params, data[2], data[3], net, (data[0][:8], data[1][:8]))}
        print(f"{name}: held-out PSNR {runs[name]['psnr']:.2f} dB", flush=True)
    if args.small_baseline:
        count = next((r["gaussians"] for r in runs.values() if r.get("schedule", {}).get("steps") == [prune_step]), None)
        if count:
            sub = torch.randperm(len(pts), generator=torch.Generator().manual_seed(args.seed))[:count]
            (state, mcmc) = fresh(pts[sub], colors[sub], count)
            log = leg(state, mcmc, 0, args.steps, data, args)
            runs["small"] = {"name": f"small (trained with {count} from the start)", "cpu_seconds": log["cpu_seconds"],
                             "log": {k: log[k] for k in ("steps", "loss", "gaussians")},
                             **measure(state[0], data[2], data[3])}
            print(f"small: {runs['small']['gaussians']} Gaussians, held-out PSNR {runs['small']['psnr']:.2f} dB")
    base = runs["unpruned"]
    for r in runs.values():
        r["psnr_minus_unpruned_db"] = r["psnr"] - base["psnr"]
        r["fewer_gaussians_x"] = base["gaussians"] / max(r["gaussians"], 1)
        r["render_time_vs_unpruned"] = (r["render_ms"] + r.get("compensation_ms", 0.0)) / base["render_ms"]
        r["bytes_vs_unpruned"] = (r["ply_bytes"] + r["compensation_bytes"]) / base["ply_bytes"]
    target = runs.get("sundae+joint")
    verdict = None
    if target is not None:
        verdict = {"target": "keep 10% with SUNDAE + compensation: PSNR within 0.5 dB of unpruned at >= 5x fewer",
                   "run": "sundae+joint", "psnr_gap_db": target["psnr_minus_unpruned_db"],
                   "fewer_x": target["fewer_gaussians_x"],
                   "met": bool(target["psnr_minus_unpruned_db"] >= -0.5 and target["fewer_gaussians_x"] >= 5)}
    payload = {
        "inputs": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "train_frames": len(train_ids), "test_frames": test,
                   "resolution": [data[0][0].width, data[0][0].height], "prune_step": prune_step,
                   "renderer": "prunekit_splat reference (torch, CPU, 1 thread)",
                   "strategy": "prunekit_splat.train.MCMCStrategy",
                   "timing": "cpu_seconds = process CPU time of the run's steps (shared prefix included); "
                             "render/compensation ms = process CPU ms per held-out image (one thread)"},
        "runs": runs, "target": verdict, "total_seconds": time.perf_counter() - t_all,
        "total_cpu_seconds": time.process_time() - c_all}
    path = write_result(args.out_name, payload)
    print(f"wrote {path}")
    print("| run | Gaussians | held-out PSNR | vs unpruned | render ms | comp ms | PLY + net KB | CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs.values():
        print(f"| {r['name']} | {r['gaussians']} | {r['psnr']:.2f} | {r['psnr_minus_unpruned_db']:+.2f} | "
              f"{r['render_ms']:.1f} | {r.get('compensation_ms', 0):.1f} | "
              f"{(r['ply_bytes'] + r['compensation_bytes']) / 1024:.0f} | {r['cpu_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
