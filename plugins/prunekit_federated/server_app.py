"""Flower ServerApp (Message API) for fedavg / fedtiny / fedmef / hidenseek.

``make_server_app(cfg, method, results)`` for the simulation engine; the module-level
``app`` reads ``context.run_config`` (keys of the method's config with dashes, plus
``method`` and optional ``results-path``) for ``flwr run``.

Server flow per method:

- fedavg: dense FedAvg (:class:`~.strategy.DenseFedAvg`).
- fedtiny: adaptive BN selection (K random ERK candidates; clients adapt BN, server
  averages BN per candidate, clients score each candidate, the lowest weighted loss
  wins), then :class:`~.strategy.DynamicSparseFedAvg` with the cosine prune/grow schedule.
- fedmef: a random ERK mask (the paper's "randomly pruned model"), then the same
  dynamic sparse server; extrusion and activation pruning run on clients.
- hidenseek: iterative SynFlow at init on the server, then
  :class:`~.strategy.SignSupermaskFedAvg`.
"""

from __future__ import annotations

import json
import math
import time
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch

from prunekit.fileio import atomic_write_text
from prunekit.report import machine_info

from . import transport as tp
from .config import FedConfig, config_for
from .data import server_test_data
from .masks import prunable_shapes, random_mask
from .models import build_model
from .strategy import DenseFedAvg, DynamicSparseFedAvg, SignSupermaskFedAvg, transport_shapes
from .synflow import synflow_mask
from .training import bn_state_names

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp


def build_strategy(method: str, cfg: FedConfig, test_data=None):
    """Model + initial mask + strategy for ``method`` (no federation traffic yet)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.dataset, method, cfg)
    shapes = prunable_shapes(model)
    if method == "fedavg":
        return DenseFedAvg(model, cfg, test_data)
    if method == "hidenseek":
        size = 28 if cfg.dataset == "mnist" else 8
        mask = synflow_mask(model, cfg.density, (1, size, size), iterations=cfg.synflow_iters)
        return SignSupermaskFedAvg(model, cfg, mask, test_data)
    if method == "fedmef":
        mask = random_mask(shapes, cfg.density, seed=cfg.seed, layout=cfg.density_layout)
        return DynamicSparseFedAvg(model, cfg, test_data, method="fedmef", mask=mask)
    if method == "fedtiny":
        return DynamicSparseFedAvg(model, cfg, test_data, method="fedtiny", mask=None)
    raise ValueError(f"unknown method {method!r}")


def adaptive_bn_selection(strategy: DynamicSparseFedAvg, grid: Grid) -> dict[str, Any]:
    """FedTiny's adaptive BN selection over ``cfg.candidates`` random ERK candidates (round 0)."""
    cfg = strategy.cfg
    shapes = prunable_shapes(strategy.model)
    cands = [random_mask(shapes, cfg.density, seed=cfg.seed * 1000 + j + 1, layout=cfg.density_layout)
             for j in range(cfg.candidates)]
    stats = strategy._round(0)
    base = dict(strategy.state)
    items = {}
    for j, m in enumerate(cands):
        rec = tp.encode_state({k: (v * m[k].view(v.shape).float() if k in m.groups else v) for k, v in base.items()}, m)
        items.update({f"c{j}/{k}": rec[k] for k in rec.keys()})
    conf = {**cfg.to_record(), "method": "fedtiny", "server-round": 0, "candidates": cfg.candidates}

    def send(stage: str, arrays: ArrayRecord, nodes: list[int]) -> list:
        msgs = []
        for node in nodes:
            content = RecordDict({"arrays": arrays, "config": ConfigRecord({**conf, "stage": stage})})
            stats["down_bytes"] += tp.record_bytes(content)
            msgs.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node))
        strategy._sent[0] = nodes
        return strategy._screen(0, list(grid.send_and_receive(msgs, timeout=cfg.timeout)))

    nodes = strategy._sample(grid)
    stats["sent"] = len(nodes)
    bn_names = bn_state_names(strategy.model)
    all_shapes = transport_shapes(strategy.model)
    sums = [{k: torch.zeros(all_shapes[k]) for k in bn_names} for _ in cands]
    total = 0.0
    for node, content in send("bn-adapt", ArrayRecord(items), nodes):
        try:
            n = strategy._weight(content)
            arr = content["arrays"]
            got = []
            for j in range(len(cands)):
                for k in bn_names:
                    key = f"c{j}/d/{k}"
                    if key not in arr:
                        raise tp.MalformedUpdate(f"missing {key}")
                    a = arr[key].numpy()
                    if tuple(a.shape) != all_shapes[k] or not np.isfinite(a).all():
                        raise tp.MalformedUpdate(f"{key}: bad shape {a.shape} or non-finite values")
                    got.append((j, k, torch.from_numpy(a.astype(np.float32).copy())))
        except (tp.MalformedUpdate, KeyError) as e:
            strategy._reject(0, node, str(e))
            continue
        for j, k, t in got:
            sums[j][k] += n * t
        total += n
    if total == 0:
        raise RuntimeError("adaptive BN selection: no client answered")
    avg_bn = [{k: v / total for k, v in s.items()} for s in sums]
    bn_items = {f"c{j}/d/{k}": Array(v.numpy()) for j, s in enumerate(avg_bn) for k, v in s.items()}
    losses = np.zeros(len(cands))
    weight = 0.0
    scored = 0
    for node, content in send("bn-eval", ArrayRecord(bn_items), nodes):
        try:
            n = strategy._weight(content)
            m = content["metrics"]
            vals = [float(m[f"loss-c{j}"]) for j in range(len(cands))]
            if not all(math.isfinite(v) for v in vals):
                raise tp.MalformedUpdate("non-finite candidate loss")
        except (tp.MalformedUpdate, KeyError) as e:
            strategy._reject(0, node, str(e))
            continue
        losses += n * np.asarray(vals)
        weight += n
        scored += 1
    if weight == 0:
        raise RuntimeError("adaptive BN selection: no candidate scores came back")
    stats["accepted"] = scored  # nodes whose candidate losses were used
    losses /= weight
    best = int(np.argmin(losses))
    for k, v in avg_bn[best].items():
        strategy.state[k] = v.clone()
    for k in shapes:
        strategy.state[k] = base[k]
    strategy.set_mask(cands[best])
    info = {"candidate_losses": losses.tolist(), "chosen": best}
    stats.update(info)
    log(INFO, "FedTiny adaptive BN selection: candidate losses %s -> candidate %d", np.round(losses, 4).tolist(), best)
    return info


def run_method(grid: Grid, method: str, cfg: FedConfig) -> dict[str, Any]:
    """Everything the ServerApp does; returns the run summary (history, final accuracy...)."""
    t0 = time.perf_counter()
    test = server_test_data(cfg.dataset, cfg.data_dir, cfg.test_fraction, cfg.seed)
    strategy = build_strategy(method, cfg, test)
    summary: dict[str, Any] = {"method": method, "config": cfg.to_record()}
    if method == "fedtiny":
        summary["bn_selection"] = adaptive_bn_selection(strategy, grid)
    strategy.run(grid, cfg.rounds)
    hist = [strategy.history[r] for r in sorted(strategy.history)]
    shapes = transport_shapes(strategy.model)
    summary.update({
        "history": hist,
        "final_accuracy": hist[-1].get("accuracy") if hist else None,
        "density": strategy.mask.kept_fraction if strategy.mask is not None else 1.0,
        "dense_model_bytes": tp.dense_bytes(shapes),
        "prunable_weights": sum(int(np.prod(s)) for s in prunable_shapes(strategy.model).values()),
        "seconds": time.perf_counter() - t0,
    })
    return summary


def make_server_app(cfg: FedConfig | None = None, method: str | None = None,
                    results: dict | None = None, runs: list[tuple[str, FedConfig]] | None = None) -> ServerApp:
    """A ServerApp; ``results`` (a dict) receives the run summary when given.

    ``runs`` = [(method, cfg), ...] runs several methods one after the other on the
    same nodes (one simulation start-up for a whole comparison); ``results`` then maps
    ``"<index>:<method>"`` to each summary.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        rc = dict(context.run_config)
        if runs:
            for i, (m, c) in enumerate(runs):
                summary = run_method(grid, m, c)
                if results is not None:
                    results[f"{i}:{m}"] = summary
            return
        m = method or str(rc.get("method", "fedtiny"))
        c = cfg or config_for(m, rc)
        summary = run_method(grid, m, c)
        if results is not None:
            results.update(summary)
        path = rc.get("results-path")
        if path:
            summary["machine"] = machine_info()
            atomic_write_text(str(path), json.dumps(summary, indent=1, default=float) + "\n")
            log(INFO, "wrote %s", path)

    return app


app = make_server_app()
