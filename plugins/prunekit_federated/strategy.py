"""Server-side strategies (Flower Message API): sparse transport, validation, mask-aware
aggregation, per-round byte accounting, and the methods' server steps.

All three subclass :class:`flwr.serverapp.strategy.FedAvg` and override
``configure_train`` (per-node sparse messages) and ``aggregate_train``:

- :class:`DenseFedAvg` — the dense baseline: float32 tensors both ways, weighted mean.
- :class:`DynamicSparseFedAvg` — FedTiny / FedMef server: kept values + packed masks;
  mask-aware mean per weight, w = sum_i n_i w_i / max(sum_i n_i m_i, eps); at the prune
  rounds of the cosine schedule, magnitude-prune / top-k-gradient-grow
  (:func:`prunekit_federated.masks.prune_and_grow`). The mask is cached on nodes
  (``context.state``) and re-sent only when it changed or the node lacks it.
- :class:`SignSupermaskFedAvg` — HideNseek server: frozen SynFlow-pruned weights
  (scaled by 1/sqrt(layer density), :func:`~.training.frozen_weights`) sent once per
  node; afterwards 1 bit per kept weight each way. Aggregation choice: a
  sample-weighted **majority vote** of the clients' signs, sigma = sign(sum_i n_i
  sigma_i), a tie keeps the previous global sign (the paper does not fix this; see
  METHODS.md 9.3). With ``cfg.vote == "abstain"`` (ours) nodes also send one abstain
  bit per kept weight (:func:`~.training.abstentions`) and the vote is taken over the
  nodes that did not abstain, sigma = sign(sum_i n_i (1 - a_i) sigma_i), ties keep.
  Vote momentum (ours, ``cfg.vote_momentum`` beta, ``cfg.vote_margin`` mu; off by
  default): the server keeps a running tally T = beta T + (1 - beta) v of the
  normalised vote v = sum_i n_i sigma_i / sum_i n_i and flips a sign only where
  sigma T < -mu, so a flip needs a majority that persists or is large (still 1 bit up).
  **Mean score** (ours, ``cfg.vote == "mean-score"``, opt-in; METHODS 9.3 leaves the
  aggregation to us, the paper's uplink is 1 bit): nodes send their real-valued scores
  of the kept weights quantised to b = ``cfg.score_bits`` bits (per-tensor step,
  deterministic mid-rise rounding, :func:`~.transport.quantise_scores`); the server
  takes the sample-weighted mean S = sum_i n_i s_i / sum_i n_i, quantises it the same
  way and broadcasts it as every node's starting scores for the next round; the global
  signs are sign(S) (S = 0 keeps the previous sign), the effective weight stays
  m * sign(s) * w0. b bits per kept weight + one float32 step per tensor each way.
  Biases and BN tensors are averaged densely. With
  ``cfg.bn_calibration`` (ours) Flower's evaluate phase then asks the round's nodes for
  BN running statistics of the voted model and pools them (mean and second moment).

Every reply is validated (:func:`prunekit_federated.transport.decode_state`); a failed
node (error reply, e.g. a client that crashed mid-round), a node that did not answer
before the round's timeout, and a malformed update (wrong shape, wrong mask length,
NaN, ...) are logged with the node id and left out; the round completes with the rest.
``self.history`` holds per-round figures (bytes up/down, accuracy, rejections...).

The global model lives in the strategy (``self.state``/``self.mask``); the
``arrays`` Flower passes between rounds is its dense copy (``Result.arrays``).
"""

from __future__ import annotations

import random
import time
import uuid
from logging import INFO, WARNING
from typing import Any, Iterable

import torch

from prunekit import Mask

from . import transport as tp
from .masks import apply_mask, prunable_shapes, prune_and_grow, regrow_schedule, swap_counts
from .training import bn_stat_names, evaluate, frozen_weights, pool_bn_statistics

try:  # flwr is an optional extra; this module is only imported when it is installed
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.common.logger import log
    from flwr.serverapp.strategy import FedAvg
except ModuleNotFoundError as e:  # pragma: no cover
    from prunekit.errors import PluginError

    raise PluginError("federated pruning needs Flower; install prunekit[federated]") from e

SKIP_BUFFERS = ("num_batches_tracked",)


def transport_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every state tensor that travels (BN step counters stay local)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(SKIP_BUFFERS)}


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(SKIP_BUFFERS)]
    if missing or unexpected:
        raise tp.MalformedUpdate(f"state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


class DenseFedAvg(FedAvg):
    """Dense FedAvg in the same harness (same sampling, logging, validation, accounting)."""

    method = "fedavg"

    def __init__(self, model: torch.nn.Module, cfg, test_data=None, **kw):
        n = cfg.clients
        super().__init__(fraction_train=cfg.fraction_train, fraction_evaluate=0.0,
                         min_train_nodes=min(cfg.min_clients, n), min_evaluate_nodes=0,
                         min_available_nodes=min(cfg.min_clients, n), **kw)
        self.cfg = cfg
        self.model = model
        self.shapes = transport_shapes(model)
        self.prunable = prunable_shapes(model)
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items() if k in self.shapes}
        self.mask: Mask | None = None
        self.test_data = test_data
        self.history: dict[int, dict[str, Any]] = {}
        self._sent: dict[int, list[int]] = {}
        self._rng = random.Random(cfg.seed)

    # --- per-round bookkeeping -------------------------------------------------------------
    def _round(self, r: int) -> dict[str, Any]:
        return self.history.setdefault(r, {"round": r, "down_bytes": 0, "up_bytes": 0, "sent": 0, "replied": 0,
                                           "accepted": 0, "failed": [], "rejected": [], "timed_out": []})

    def _sample(self, grid) -> list[int]:
        n_all = list(grid.get_node_ids())
        wait = 0
        while len(n_all) < self.min_available_nodes and wait < self.cfg.timeout:
            log(INFO, "waiting for nodes: %d connected, %d needed", len(n_all), self.min_available_nodes)
            time.sleep(1)
            wait += 1
            n_all = list(grid.get_node_ids())
        size = max(int(len(n_all) * self.fraction_train), min(self.min_train_nodes, len(n_all)))
        return sorted(self._rng.sample(sorted(n_all), size))

    def train_config(self, server_round: int) -> dict[str, Any]:
        rec = dict(self.cfg.to_record())
        rec.update({"method": self.method, "stage": "train", "server-round": server_round})
        return rec

    def downlink(self, node_id: int, server_round: int) -> tuple[ArrayRecord, dict[str, Any]]:
        return tp.encode_state(self.state, None), {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        nodes = self._sample(grid)
        self.before_round(server_round)
        stats = self._round(server_round)
        msgs = []
        for node in nodes:
            rec, extra = self.downlink(node, server_round)
            cfg = ConfigRecord({**dict(config), **self.train_config(server_round), **extra})
            content = RecordDict({"arrays": rec, "config": cfg})
            stats["down_bytes"] += tp.record_bytes(content)
            msgs.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node))
        stats["sent"] = len(msgs)
        self._sent[server_round] = nodes
        log(INFO, "configure_train: round %d, %d nodes, %d bytes down", server_round, len(nodes), stats["down_bytes"])
        return msgs

    def before_round(self, server_round: int) -> None:
        """Hook run before messages of a round are built."""

    # --- replies -----------------------------------------------------------------------------
    def _screen(self, server_round: int, replies: Iterable[Message]) -> list[tuple[int, RecordDict]]:
        stats = self._round(server_round)
        ok = []
        seen = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            seen.add(node)
            stats["replied"] += 1
            if msg.has_error():
                reason = msg.error.reason.strip().splitlines()[-1][:300] if msg.error.reason else "error"
                stats["failed"].append({"node": node, "reason": reason})
                log(WARNING, "round %d: node %d failed (dropped out): %s", server_round, node, reason)
                continue
            stats["up_bytes"] += tp.record_bytes(msg.content)
            ok.append((node, msg.content))
        for node in self._sent.get(server_round, []):
            if node not in seen:
                stats["timed_out"].append(node)
                log(WARNING, "round %d: node %d sent no reply before the timeout (dropped out)", server_round, node)
        return ok

    def _reject(self, server_round: int, node: int, reason: str) -> None:
        self._round(server_round)["rejected"].append({"node": node, "reason": reason})
        log(WARNING, "round %d: rejected update from node %d: %s", server_round, node, reason)

    @staticmethod
    def _weight(content: RecordDict) -> float:
        m = content.get("metrics")
        if not isinstance(m, MetricRecord) or "num-examples" not in m:
            raise tp.MalformedUpdate("metrics: missing num-examples")
        n = m["num-examples"]
        if isinstance(n, list) or not (float(n) > 0) or float(n) != float(n) or float(n) == float("inf"):
            raise tp.MalformedUpdate(f"metrics: num-examples must be a positive number, got {n!r}")
        return float(n)

    def decode(self, server_round: int, content: RecordDict) -> dict[str, Any]:
        arrays = content.get("arrays")
        if not isinstance(arrays, ArrayRecord):
            raise tp.MalformedUpdate("no ArrayRecord 'arrays' in the reply")
        state, mask = tp.decode_state(arrays, self.shapes, None)
        return {"state": state, "mask": mask}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good = []
        for node, content in self._screen(server_round, list(replies)):
            try:
                m = content.get("metrics")
                if isinstance(m, MetricRecord) and float(m.get("needs-sync", 0)) > 0:
                    self.on_needs_sync(node)
                    log(INFO, "round %d: node %d lacked cached state; it is re-sent next round", server_round, node)
                    continue
                n = self._weight(content)
                upd = self.decode(server_round, content)
            except tp.MalformedUpdate as e:
                self._reject(server_round, node, str(e))
                continue
            upd.update(node=node, n=n, metrics=dict(content["metrics"]))
            good.append(upd)
            self.on_accepted(node, upd)
        stats = self._round(server_round)
        stats["accepted"] = len(good)
        if not good:
            log(WARNING, "round %d: no usable update; the global model is unchanged", server_round)
            return None, None
        self.combine(server_round, good)
        metrics = self._mean_metrics(good)
        stats.update({f"client_{k}": v for k, v in metrics.items()})
        stats["density"] = self.mask.kept_fraction if self.mask is not None else 1.0
        return ArrayRecord(self.global_state_dict()), MetricRecord(metrics)

    def on_accepted(self, node: int, upd: dict) -> None:
        pass

    def on_needs_sync(self, node: int) -> None:
        pass

    @staticmethod
    def _mean_metrics(good: list[dict]) -> dict[str, float]:
        keys = set.intersection(*(set(u["metrics"]) for u in good)) - {"num-examples"}
        total = sum(u["n"] for u in good)
        out = {}
        for k in sorted(keys):
            vals = [u["metrics"][k] for u in good]
            if all(isinstance(v, (int, float)) for v in vals):
                out[k] = float(sum(u["n"] * float(u["metrics"][k]) for u in good) / total)
        out["num-examples"] = float(total)
        out["peak-activation-bytes"] = float(max(float(u["metrics"].get("activation-bytes", 0)) for u in good))
        if all("step-peak-bytes" in u["metrics"] for u in good):
            out["peak-step-bytes"] = float(max(float(u["metrics"]["step-peak-bytes"]) for u in good))
        return out

    def combine(self, server_round: int, good: list[dict]) -> None:
        total = sum(u["n"] for u in good)
        for k in self.shapes:
            self.state[k] = sum(u["n"] * u["state"][k] for u in good) / total

    # --- global model ------------------------------------------------------------------------
    def global_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.state.items()}

    def global_model(self) -> torch.nn.Module:
        load_state(self.model, self.global_state_dict())
        if hasattr(self.model, "set_masks"):
            self.model.set_masks(self.mask)
        return self.model

    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.test_data is None:
            return None
        loss, acc = evaluate(self.global_model(), self.test_data)
        st = self._round(server_round)
        st.update(test_loss=loss, accuracy=acc)
        st.setdefault("density", self.mask.kept_fraction if self.mask is not None else 1.0)
        return MetricRecord({"accuracy": acc, "loss": loss})

    def run(self, grid, num_rounds: int):
        return self.start(grid=grid, initial_arrays=ArrayRecord(self.global_state_dict()), num_rounds=num_rounds,
                          timeout=self.cfg.timeout, evaluate_fn=self.evaluate_fn)


class DynamicSparseFedAvg(DenseFedAvg):
    """FedTiny / FedMef server: sparse transport, mask-aware mean, prune/grow schedule."""

    def __init__(self, model, cfg, test_data=None, method: str = "fedtiny", mask: Mask | None = None, **kw):
        super().__init__(model, cfg, test_data, **kw)
        self.method = method
        self.schedule = regrow_schedule(cfg.prune_every, cfg.t_end, cfg.regrow_alpha)
        self.mask_version = 0
        self._token = uuid.uuid4().hex[:12]  # mask versions are unique to this strategy
        self.node_version: dict[int, int] = {}
        if mask is not None:
            self.set_mask(mask)

    def set_mask(self, mask: Mask) -> None:
        self.mask = mask
        self.mask_version += 1
        for k, m in mask.groups.items():
            self.state[k] = self.state[k] * m.view(self.shapes[k]).to(torch.float32)

    def regrow_fraction(self, server_round: int) -> float:
        if self.schedule.is_prune_step(server_round):
            return 1.0 - self.schedule.keep_at(server_round)
        return 0.0

    def extrude_fraction(self, server_round: int) -> float:
        """FedMef: f(s) of the next prune round s when round t is inside the extrusion window."""
        if self.method != "fedmef":
            return 0.0
        window = getattr(self.cfg, "extrusion_rounds", 0) or self.cfg.prune_every
        nxt = [s for s in self.schedule.steps if s >= server_round]
        if not nxt or nxt[0] - server_round >= window:
            return 0.0
        return 1.0 - self.schedule.keep_at(nxt[0])

    def downlink(self, node_id: int, server_round: int):
        send_mask = self.node_version.get(node_id) != self.mask_version
        rec = tp.encode_state(self.state, self.mask, with_mask=send_mask)
        return rec, {"mask-version": f"{self._token}:{self.mask_version}", "regrow-fraction": self.regrow_fraction(server_round),
                     "extrude-fraction": self.extrude_fraction(server_round)}

    def on_accepted(self, node: int, upd: dict) -> None:
        self.node_version[node] = self.mask_version

    def on_needs_sync(self, node: int) -> None:
        self.node_version.pop(node, None)

    def decode(self, server_round: int, content: RecordDict) -> dict[str, Any]:
        arrays = content.get("arrays")
        if not isinstance(arrays, ArrayRecord):
            raise tp.MalformedUpdate("no ArrayRecord 'arrays' in the reply")
        frac = self.regrow_fraction(server_round)
        state, mask = tp.decode_state(arrays, self.shapes, self.mask.groups, allowed_extra=("gi/", "gv/") if frac else ())
        upd = {"state": state, "mask": mask}
        if frac:
            upd["grads"] = tp.decode_topk(arrays, self.mask, swap_counts(self.mask, frac))
        return upd

    def combine(self, server_round: int, good: list[dict]) -> None:
        total = sum(u["n"] for u in good)
        for k in self.shapes:
            if k in self.mask.groups:
                num = sum(u["n"] * u["state"][k] for u in good)
                den = sum(u["n"] * u["mask"][k].view(self.shapes[k]).to(torch.float32) for u in good)
                self.state[k] = torch.where(den > 0, num / den.clamp_min(1e-12), self.state[k])
            else:
                self.state[k] = sum(u["n"] * u["state"][k] for u in good) / total
        frac = self.regrow_fraction(server_round)
        if frac:
            grads = {k: sum(u["n"] * u["grads"][k] for u in good) / total for k in self.mask.groups}
            flat = {k: self.state[k].flatten() for k in self.mask.groups}
            new_mask, counts = prune_and_grow(flat, self.mask, grads, frac)
            changed = sum(int((new_mask[k] & ~self.mask[k]).sum()) for k in counts)
            self._round(server_round).update(regrow_fraction=frac, swapped=counts, grown=changed)
            log(INFO, "round %d: prune/grow f=%.3f, swapped %s", server_round, frac, counts)
            self.set_mask(new_mask)  # grown weights start at 0 (they were 0 while inactive)


class SignSupermaskFedAvg(DenseFedAvg):
    """HideNseek server: frozen weights + fixed SynFlow mask; clients send sign bits."""

    method = "hidenseek"

    def __init__(self, model, cfg, mask: Mask, test_data=None, **kw):
        super().__init__(model, cfg, test_data, **kw)
        self.mask = mask
        self.base = frozen_weights(self.state, mask, cfg.weight_scale)
        self.signs = {k: torch.where(mask[k], 1.0, 0.0) for k in mask.groups}
        self.tally = {k: torch.zeros(mask[k].numel()) for k in mask.groups}  # vote momentum (cfg.vote_momentum)
        self.has_base: set[int] = set()
        self.mean_score = getattr(cfg, "vote", "majority") == "mean-score"
        if self.mean_score:  # broadcast scores: score_init on every kept weight, quantised
            self.set_scores({k: cfg.score_init * mask[k].float() for k in mask.groups})

    def set_scores(self, scores: dict[str, torch.Tensor]) -> None:
        """Mean-score mode: quantise ``scores`` for the downlink; the global signs follow
        the scores the nodes will decode (exact zeros keep the previous sign)."""
        self.score_rec, self.scores = tp.encode_scores(scores, self.mask, self.cfg.score_bits, zero_sign=self.signs)
        self.signs = {k: torch.where(self.scores[k] >= 0, 1.0, -1.0) * m.float() for k, m in self.mask.groups.items()}

    def global_record(self) -> ArrayRecord:
        """Dense tensors (biases, BN) + one sign bit per kept weight."""
        dense = {k: v for k, v in self.state.items() if k not in self.mask.groups}
        return tp.add_arrays(tp.encode_state(dense, None), tp.encode_signs(self.signs, self.mask))

    def downlink(self, node_id: int, server_round: int):
        if self.mean_score:  # the quantised mean scores replace the sign bits
            dense = {k: v for k, v in self.state.items() if k not in self.mask.groups}
            rec, extra = tp.add_arrays(tp.encode_state(dense, None), self.score_rec), {}
        else:
            rec, extra = self.global_record(), {}
        send_base = node_id not in self.has_base
        if send_base:
            base = tp.encode_state({k: self.base[k].view(self.shapes[k]) for k in self.mask.groups}, self.mask)
            extra.update({f"base/{k}": base[k] for k in base.keys()})
        return tp.add_arrays(rec, extra), {"send-base": send_base}

    def on_accepted(self, node: int, upd: dict) -> None:
        self.has_base.add(node)

    def on_needs_sync(self, node: int) -> None:
        self.has_base.discard(node)

    def decode(self, server_round: int, content: RecordDict) -> dict[str, Any]:
        arrays = content.get("arrays")
        if not isinstance(arrays, ArrayRecord):
            raise tp.MalformedUpdate("no ArrayRecord 'arrays' in the reply")
        dense_names = tuple(k for k in self.shapes if k not in self.mask.groups)
        two_bit = getattr(self.cfg, "vote", "majority") == "abstain"
        bit_keys = ("q/", "qs/") if self.mean_score else ("s/", "a/") if two_bit else ("s/",)
        state, _ = tp.decode_state(arrays, self.shapes, None, dense_names=dense_names, allowed_extra=bit_keys)
        extra = [k for k in arrays.keys() if k.startswith(bit_keys) and k.split("/", 1)[1] not in self.mask.groups]
        if extra:
            raise tp.MalformedUpdate(f"unexpected entries: {', '.join(extra[:3])}")
        if self.mean_score:
            return {"state": state, "scores": tp.decode_scores(arrays, self.mask, self.cfg.score_bits)}
        signs = tp.decode_signs(arrays, self.mask)
        upd = {"state": state, "signs": signs}
        if two_bit:
            upd["abstain"] = tp.decode_kept_bits(arrays, self.mask, "a/")
            if any(bool((upd["abstain"][k] & (signs[k] != self.signs[k])).any()) for k in signs):
                raise tp.MalformedUpdate("a/: abstains on a weight whose sign it flipped")
        return upd

    def combine(self, server_round: int, good: list[dict]) -> None:
        total = sum(u["n"] for u in good)
        for k in self.shapes:
            if k not in self.mask.groups:
                self.state[k] = sum(u["n"] * u["state"][k] for u in good) / total
        if self.mean_score:  # S = sum_i n_i s_i / sum_i n_i, re-quantised for the broadcast
            old = self.signs
            self.set_scores({k: sum(u["n"] * u["scores"][k] for u in good) / total for k in self.mask.groups})
            self._round(server_round)["sign_flips"] = sum(int((self.signs[k] != old[k]).sum()) for k in old)
            return
        flips = 0
        beta, margin = getattr(self.cfg, "vote_momentum", 0.0), getattr(self.cfg, "vote_margin", 0.0)
        for k, m in self.mask.groups.items():
            # 2-bit vote (cfg.vote == "abstain"): a node's abstentions do not count either way
            vote = sum(u["n"] * u["signs"][k] * (1.0 - u["abstain"][k].float() if "abstain" in u else 1.0)
                       for u in good) / total
            # running tally T = beta T_prev + (1 - beta) v; flip only where sigma * T < -margin
            # (beta = margin = 0: the plain majority vote, a tie keeps the sign)
            tally = self.tally[k] = beta * self.tally[k] + (1.0 - beta) * vote
            new = torch.where(self.signs[k] * tally < -margin, -self.signs[k], self.signs[k]) * m.float()
            flips += int((new != self.signs[k]).sum())
            self.signs[k] = new
        self._round(server_round)["sign_flips"] = flips

    def global_state_dict(self) -> dict[str, torch.Tensor]:
        out = {k: v.clone() for k, v in self.state.items()}
        for k in self.mask.groups:
            out[k] = (self.base[k] * self.signs[k]).view(self.shapes[k])
        return out

    # --- BN re-estimation under the voted signs (Flower's evaluate phase) ----------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        """Ask this round's nodes for BN statistics of the voted model (``cfg.bn_calibration``).

        Flower runs this after ``aggregate_train`` and before the server's ``evaluate_fn``;
        the accuracy with the clients' averaged training statistics is kept as
        ``accuracy_before_calibration`` for comparison."""
        if not getattr(self.cfg, "bn_calibration", False):
            return []
        nodes = [n for n in self._sent.get(server_round, []) if n in self.has_base]
        stats = self._round(server_round)
        if self.test_data is not None:
            stats["accuracy_before_calibration"] = evaluate(self.global_model(), self.test_data)[1]
        cal = stats["bn_calibration"] = {"sent": nodes, "down_bytes": 0, "up_bytes": 0, "accepted": 0,
                                         "failed": [], "rejected": []}
        conf = ConfigRecord({**self.train_config(server_round), "stage": "bn-calibrate"})
        msgs = []
        for node in nodes:
            content = RecordDict({"arrays": self.global_record(), "config": conf})
            cal["down_bytes"] += tp.record_bytes(content)
            msgs.append(Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node))
        stats["down_bytes"] += cal["down_bytes"]
        return msgs

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Pool the nodes' BN statistics (:func:`~.training.pool_bn_statistics`) into the global model."""
        stats = self._round(server_round)
        cal = stats.get("bn_calibration")
        if cal is None:
            return None
        shapes = {k: self.shapes[k] for k in bn_stat_names(self.model)}
        parts, seen = [], set()
        for msg in replies:
            node = msg.metadata.src_node_id
            seen.add(node)
            if msg.has_error():
                cal["failed"].append(node)
                log(WARNING, "round %d: node %d failed BN calibration", server_round, node)
                continue
            size = tp.record_bytes(msg.content)
            cal["up_bytes"] += size
            stats["up_bytes"] += size
            try:
                n = self._weight(msg.content)
                if float(msg.content["metrics"].get("needs-sync", 0)) > 0:
                    self.on_needs_sync(node)
                    continue
                if not isinstance(msg.content.get("arrays"), ArrayRecord):
                    raise tp.MalformedUpdate("no ArrayRecord 'arrays' in the reply")
                got, _ = tp.decode_state(msg.content["arrays"], shapes, None)
                if any(bool((v < 0).any()) for k, v in got.items() if k.endswith("running_var")):
                    raise tp.MalformedUpdate("negative BN variance")
            except tp.MalformedUpdate as e:
                cal["rejected"].append(node)
                self._reject(server_round, node, f"bn-calibrate: {e}")
                continue
            parts.append((n, got))
        cal["timed_out"] = [n for n in cal["sent"] if n not in seen]
        for node in cal["timed_out"]:
            log(WARNING, "round %d: node %d sent no BN statistics before the timeout", server_round, node)
        cal["accepted"] = len(parts)
        if not parts:
            log(WARNING, "round %d: no BN statistics came back; the averaged training statistics stay", server_round)
            return None
        self.state.update(pool_bn_statistics(parts))
        return MetricRecord({"bn-calibrated-nodes": len(parts)})
