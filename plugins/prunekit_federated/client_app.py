"""Flower ClientApp (Message API) for fedavg / fedtiny / fedmef / hidenseek.

One ``@app.train()`` handler; the server's ConfigRecord says which method and stage:

- ``train`` (all methods): decode the sparse global model, train locally, reply with
  kept values + packed mask (+ top-k inactive gradients at FedTiny/FedMef prune
  rounds; HideNseek: sign bits only, or b-bit scores with ``vote=mean-score``) and a MetricRecord (num-examples, train-loss,
  activation-bytes, model-bytes, peak-rss-mb, local-seconds).
- ``bn-adapt`` / ``bn-eval`` (FedTiny adaptive BN selection): adapt BN of each candidate
  pruned model locally and send it; then score each candidate with the averaged BN.

and one ``@app.evaluate()`` handler, HideNseek's ``bn-calibrate`` stage (Flower's
evaluate phase, after the vote, before the server's evaluation): run the voted global
model forward over the local data and reply its BN running mean/var (no training).

Per-node state lives in ``context.state`` (ClientApps are re-created per message): the
current mask and its version (FedTiny/FedMef), HideNseek's frozen weights and the
node's real-valued sign scores (not kept with ``vote=mean-score``: the server's mean
scores are every node's start), the FedTiny candidates between the two BN stages.
When that cache is missing the client answers ``needs-sync`` and the server re-sends.

Fault injection (tests, demos): ``make_client_app(faults={partition: "kind@round"})``
or ``--node-config "... fault='kind@round'"``; kinds: ``crash`` (raise mid-training),
``hang:SECONDS`` (reply after the server's timeout), ``nan``, ``mask-length``, ``shape``.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import numpy as np
import torch

from prunekit import Mask

from . import transport as tp
from .config import config_for
from .data import client_data
from .masks import low_magnitude, prunable_shapes, swap_counts
from .models import build_model
from .strategy import load_state, transport_shapes
from .training import (abstentions, adapt_bn, bn_state_names, bn_statistics, evaluate, extrusion_penalty, model_bytes, topk_inactive,
                       train_local, train_signs)

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_fault(spec: str | None) -> tuple[str, int, float] | None:
    """``"kind@round"`` / ``"hang:5@2"`` -> (kind, round, seconds)."""
    if not spec:
        return None
    kind, _, rnd = str(spec).partition("@")
    kind, _, secs = kind.partition(":")
    if kind not in ("crash", "hang", "nan", "mask-length", "shape"):
        raise ValueError(f"unknown fault {spec!r}")
    return kind, int(rnd or 1), float(secs or 30.0)


def _corrupt(arrays: ArrayRecord, kind: str) -> ArrayRecord:
    """Return a malformed copy of a reply's ArrayRecord (fault injection)."""
    items = {k: arrays[k] for k in arrays.keys()}
    keys = list(items)
    if kind == "nan":
        k = next(k for k in keys if k.startswith(("v/", "d/")) and items[k].numpy().size)
        a = items[k].numpy().astype(np.float32).copy()
        a.flat[0] = np.nan
        items[k] = Array(a)
    elif kind == "mask-length":
        k = next(k for k in keys if k.startswith(("m/", "s/", "q/")))
        items[k] = Array(items[k].numpy()[:-1].copy())
    elif kind == "shape":
        k = next(k for k in keys if k.startswith("d/") and items[k].numpy().ndim >= 1)
        a = items[k].numpy()
        items[k] = Array(np.concatenate([a, a[:1]], axis=0))
    return ArrayRecord(items)


def _sub(record, prefix: str) -> dict:
    return {k[len(prefix):]: record[k] for k in record.keys() if k.startswith(prefix)}


def make_client_app(faults: dict[int, str] | None = None) -> ClientApp:
    """A ClientApp; ``faults`` maps partition ids to an injected fault (see module doc)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        t0 = time.perf_counter()
        conf, method, cfg, pid, rnd, data, model = _setup(msg, context)
        fault = parse_fault((faults or {}).get(pid) or context.node_config.get("fault"))
        active_fault = fault if (fault and fault[1] == rnd and conf["stage"] == "train") else None
        stage = str(conf["stage"])
        if stage == "bn-adapt":
            return _bn_adapt(msg, context, model, data, cfg)
        if stage == "bn-eval":
            return _bn_eval(msg, context, model, data)
        seed = cfg.seed * 1_000_003 + pid * 1009 + rnd
        hooks = {"crash": active_fault is not None and active_fault[0] == "crash"}
        if method == "hidenseek":
            arrays, metrics = _train_hidenseek(msg, context, model, data, cfg, seed, hooks)
        else:
            arrays, metrics = _train_weights(msg, context, model, data, cfg, method, seed, hooks)
        if arrays is None:  # cached state missing: ask the server to re-send it
            return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1, "needs-sync": 1})}), reply_to=msg)
        if active_fault is not None:
            if active_fault[0] == "hang":
                time.sleep(active_fault[2])
            elif active_fault[0] != "crash":
                arrays = _corrupt(arrays, active_fault[0])
        metrics.update({"peak-rss-mb": _peak_rss_mb(), "local-seconds": time.perf_counter() - t0})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def calibrate(msg: Message, context: Context) -> Message:
        conf, method, cfg, pid, rnd, data, model = _setup(msg, context)
        if method != "hidenseek" or str(conf.get("stage")) != "bn-calibrate":
            raise ValueError(f"evaluate messages are only HideNseek's bn-calibrate stage, got {method}/{conf.get('stage')}")
        return _bn_calibrate(msg, context, model, data)

    return app


def _setup(msg: Message, context: Context):
    """What every handler needs: config, method, partition, round, local data, a fresh model."""
    threads = os.environ.get("PRUNEKIT_FED_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    conf = msg.content["config"]
    method = str(conf["method"])
    cfg = config_for(method, dict(conf))
    pid = int(context.node_config["partition-id"])
    nparts = int(context.node_config["num-partitions"])
    rnd = int(conf.get("server-round", 0))
    data = client_data(cfg.dataset, cfg.data_dir, pid, nparts, cfg.dirichlet_alpha, cfg.test_fraction, cfg.seed)
    if cfg.client_samples and len(data) > cfg.client_samples:
        data = data.subset(np.arange(cfg.client_samples))
    torch.manual_seed(cfg.seed * 7919 + pid * 104729 + rnd)
    return conf, method, cfg, pid, rnd, data, build_model(cfg.dataset, method, cfg)


def _with_peak(metrics: dict, res) -> dict:
    """Add the measured peak heap of a training step (absent where it cannot be measured)."""
    if res.step_peak_bytes is not None:
        metrics["step-peak-bytes"] = res.step_peak_bytes
    return metrics


def _crash_hook(hooks: dict):
    """A penalty callable that raises on the 2nd local step (a client dying mid-round)."""
    if not hooks.get("crash"):
        return None
    calls = {"n": 0}

    def penalty(model):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise RuntimeError("injected fault: client dropped out mid-round")
        return torch.zeros(())
    return penalty


def _train_weights(msg, context, model, data, cfg, method, seed, hooks):
    conf = msg.content["config"]
    arrays = msg.content["arrays"]
    shapes = transport_shapes(model)
    prunable = prunable_shapes(model)
    mask = None
    if method != "fedavg":
        version = str(conf["mask-version"])
        if any(k.startswith("m/") for k in arrays.keys()):
            mask = Mask({k: tp.unpack_mask(arrays[f"m/{k}"].numpy(), int(np.prod(s)), f"m/{k}")
                         for k, s in prunable.items()})
            context.state["mask"] = ArrayRecord({f"m/{k}": Array(tp.pack_mask(m)) for k, m in mask.groups.items()})
            context.state["mask-info"] = ConfigRecord({"version": version})
        elif "mask" in context.state and str(context.state["mask-info"]["version"]) == version:
            cached = context.state["mask"]
            mask = Mask({k: tp.unpack_mask(cached[f"m/{k}"].numpy(), int(np.prod(s))) for k, s in prunable.items()})
        else:
            return None, {}
        state, _ = tp.decode_state(arrays, shapes, mask.groups, need_mask=False,
                                   allowed_extra=("m/",))
    else:
        state, _ = tp.decode_state(arrays, shapes, None)
    load_state(model, state)
    if mask is not None and hasattr(model, "set_masks"):
        model.set_masks(mask)

    penalty = _crash_hook(hooks)
    extrude = float(conf.get("extrude-fraction", 0.0))
    n_low = 0
    if method == "fedmef" and extrude > 0 and cfg.extrusion_lambda > 0:
        named = dict(model.named_parameters())
        low = low_magnitude({k: named[k] for k in mask.groups}, mask, swap_counts(mask, extrude))
        n_low = low.total_kept
        bae = extrusion_penalty(low, cfg.extrusion_lambda)
        crash = penalty
        penalty = (lambda m: bae(m) + crash(m)) if crash else bae
    regrow = float(conf.get("regrow-fraction", 0.0))
    collect = {k: ~m for k, m in mask.groups.items()} if (mask is not None and regrow > 0) else None
    res = train_local(model, data, mask, epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                      momentum=cfg.momentum, seed=seed, penalty=penalty, collect_grads=collect)
    out_state = {k: v for k, v in model.state_dict().items() if k in shapes}
    reply = tp.encode_state(out_state, mask)
    if collect:
        caps = swap_counts(mask, regrow)
        topk = {k: topk_inactive(res.grad_sum[k], ~mask[k], caps[k]) for k in mask.groups}
        reply = tp.add_arrays(reply, tp.encode_topk(topk))
    dense_numel = sum(int(np.prod(s)) for k, s in shapes.items() if k not in prunable)
    metrics: dict[str, Any] = {
        "num-examples": res.examples, "train-loss": res.loss, "activation-bytes": res.activation_bytes,
        "model-bytes": model_bytes(prunable, mask, dense_numel), "extruded-weights": n_low,
    }
    return reply, _with_peak(metrics, res)


def _hns_base(arrays, context, prunable) -> tuple[Mask, dict] | None:
    """HideNseek's mask and frozen weights: from the message (first contact, then cached
    in ``context.state``) or from the node's cache; None when neither has them."""
    if any(k.startswith("base/") for k in arrays.keys()):
        base_rec = _sub(arrays, "base/")
        context.state["hns-base"] = ArrayRecord({f"base/{k}": base_rec[k] for k in base_rec})
    elif "hns-base" in context.state:
        base_rec = _sub(context.state["hns-base"], "base/")
    else:
        return None
    mask = Mask({k: tp.unpack_mask(base_rec[f"m/{k}"].numpy(), int(np.prod(s)), f"base/m/{k}")
                 for k, s in prunable.items()})
    base, _ = tp.decode_state(base_rec, prunable, mask.groups, dense_names=())
    return mask, base


def _hns_global(arrays, model, mask, base, *, signed: bool = False,
                signs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Load the global dense tensors into ``model`` with the frozen weights (times the
    global signs if ``signed``: the global model itself); return the global signs
    (the ``s/`` bits, or ``signs`` given: those of the broadcast mean scores)."""
    shapes = transport_shapes(model)
    signs = tp.decode_signs(arrays, mask) if signs is None else signs
    dense_names = tuple(k for k in shapes if k not in base)
    dense, _ = tp.decode_state(arrays, shapes, None, dense_names=dense_names,
                               allowed_extra=("s/", "q/", "qs/", "base/"))
    weights = {k: base[k] * signs[k].view_as(base[k]) for k in base} if signed else base
    load_state(model, {**dense, **weights})
    return signs


def _train_hidenseek(msg, context, model, data, cfg, seed, hooks):
    arrays = msg.content["arrays"]
    shapes = transport_shapes(model)
    prunable = prunable_shapes(model)
    fresh = any(k.startswith("base/") for k in arrays.keys())
    got = _hns_base(arrays, context, prunable)
    if got is None:
        return None, {}
    mask, base = got
    mean_score = cfg.vote == "mean-score"
    if mean_score:  # start from the broadcast (quantised) mean scores; signs are theirs
        mean = tp.decode_scores(arrays, mask, cfg.score_bits)
        scores = {k: mean[k].view(prunable[k]) for k in prunable}
        _hns_global(arrays, model, mask, base,
                    signs={k: torch.where(v >= 0, 1.0, -1.0) * mask[k].float() for k, v in mean.items()})
    elif not fresh and "hns-scores" in context.state:
        scores = {k: torch.from_numpy(v.numpy().copy()) for k, v in context.state["hns-scores"].items()}
    else:
        scores = {k: torch.full(s, cfg.score_init) for k, s in prunable.items()}
    if not mean_score:
        signs = _hns_global(arrays, model, mask, base)
        # the global signs set each score's sign; the node keeps its own magnitudes (its
        # confidence so far: restarting them at score_init, always or where the node lost the
        # vote, converged slower in our MNIST runs; the paper does not say)
        for k in prunable:
            scores[k] = signs[k].view(prunable[k]) * scores[k].abs().clamp_min(1e-8)
    if hooks.get("crash"):
        raise RuntimeError("injected fault: client dropped out mid-round")
    start = {k: v.clone() for k, v in scores.items()}
    res = train_signs(model, base, mask, scores, data, epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                      lr=cfg.lr, score_lr=cfg.score_lr, momentum=cfg.momentum, seed=seed)
    sd = model.state_dict()
    dense_names = tuple(k for k in shapes if k not in prunable)
    reply = tp.encode_state({k: sd[k] for k in dense_names}, None)
    if mean_score:
        reply = tp.add_arrays(reply, tp.encode_scores(scores, mask, cfg.score_bits)[0])
    else:
        context.state["hns-scores"] = ArrayRecord({k: Array(v.numpy()) for k, v in scores.items()})
        reply = tp.add_arrays(reply, tp.encode_signs({k: torch.sign(scores[k]) for k in prunable}, mask))
    if cfg.vote == "abstain":
        reply = tp.add_arrays(reply, tp.encode_kept_bits(abstentions(start, scores), mask, "a/"))
    dense_numel = sum(int(np.prod(shapes[k])) for k in dense_names)
    return reply, _with_peak({"num-examples": res.examples, "train-loss": res.loss,
                              "activation-bytes": res.activation_bytes,
                              "model-bytes": model_bytes(prunable, mask, dense_numel)}, res)


def _bn_calibrate(msg, context, model, data):
    """HideNseek BN re-estimation: the global model (voted signs, averaged biases and BN
    affine) run forward over the node's data; reply its BN running mean/var (no training)."""
    got = _hns_base(msg.content["arrays"], context, prunable_shapes(model))
    if got is None:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1, "needs-sync": 1})}), reply_to=msg)
    _hns_global(msg.content["arrays"], model, *got, signed=True)
    stats = bn_statistics(model, data)
    return Message(RecordDict({"arrays": ArrayRecord({f"d/{k}": Array(v.numpy()) for k, v in stats.items()}),
                               "metrics": MetricRecord({"num-examples": len(data)})}), reply_to=msg)


def _bn_adapt(msg, context, model, data, cfg):
    """FedTiny stage 1: BN-only local adaptation of every candidate; reply BN tensors per candidate."""
    arrays = msg.content["arrays"]
    shapes = transport_shapes(model)
    prunable = prunable_shapes(model)
    k_cand = int(msg.content["config"]["candidates"])
    bn_names = bn_state_names(model)
    out, losses = {}, []
    for j in range(k_cand):
        rec = _sub(arrays, f"c{j}/")
        mask = Mask({k: tp.unpack_mask(rec[f"m/{k}"].numpy(), int(np.prod(s)), f"c{j}/m/{k}")
                     for k, s in prunable.items()})
        state, _ = tp.decode_state(rec, shapes, mask.groups)
        load_state(model, state)
        losses.append(adapt_bn(model, data, steps=cfg.bn_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                               seed=cfg.seed + j))
        sd = model.state_dict()
        out.update({f"c{j}/d/{k}": Array(sd[k].detach().float().numpy()) for k in bn_names})
    context.state["fedtiny-candidates"] = ArrayRecord({k: arrays[k] for k in arrays.keys()})
    return Message(RecordDict({"arrays": ArrayRecord(out),
                               "metrics": MetricRecord({"num-examples": len(data), "adapt-loss": float(np.mean(losses))})}),
                   reply_to=msg)


def _bn_eval(msg, context, model, data):
    """FedTiny stage 2: local loss of every candidate with its averaged BN."""
    if "fedtiny-candidates" not in context.state:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1, "needs-sync": 1})}), reply_to=msg)
    cands = context.state["fedtiny-candidates"]
    bn = msg.content["arrays"]
    shapes = transport_shapes(model)
    prunable = prunable_shapes(model)
    k_cand = int(msg.content["config"]["candidates"])
    metrics: dict[str, Any] = {"num-examples": len(data)}
    for j in range(k_cand):
        rec = _sub(cands, f"c{j}/")
        mask = Mask({k: tp.unpack_mask(rec[f"m/{k}"].numpy(), int(np.prod(s))) for k, s in prunable.items()})
        state, _ = tp.decode_state(rec, shapes, mask.groups)
        bn_rec = _sub(bn, f"c{j}/d/")
        for k in bn_rec:
            if k not in shapes:
                raise tp.MalformedUpdate(f"c{j}/d/{k}: not a model tensor")
            a = bn_rec[k].numpy()
            if tuple(a.shape) != shapes[k]:
                raise tp.MalformedUpdate(f"c{j}/d/{k}: shape {a.shape}, expected {shapes[k]}")
            state[k] = torch.from_numpy(a.astype(np.float32).copy())
        load_state(model, state)
        metrics[f"loss-c{j}"] = evaluate(model, data)[0]
    del context.state["fedtiny-candidates"]
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


app = make_client_app()
