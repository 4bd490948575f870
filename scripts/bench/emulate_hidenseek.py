"""In-process emulation of a HideNseek federation (screening tool, not the benchmark).

Same client maths (:func:`prunekit_federated.training.train_signs`, node-kept score
magnitudes under the global signs, same seeds as the ClientApp) and the real server
strategy (``SignSupermaskFedAvg.combine``, so the vote options of ``HideNseekConfig``
are exercised, ``--set vote=mean-score`` included: nodes then start every round from the
server's quantised mean scores and send their scores quantised as the ClientApp does),
BN statistics re-estimated under the voted signs and pooled
(``bn_statistics`` / ``pool_bn_statistics``) as in Flower's evaluate phase; no Flower
messages, no Ray, so it costs ~1/2 of a Ray run's CPU. Its per-round accuracies track
the Ray bench's but are not identical (reply order), so final figures come from
``bench_federated.py``.

``--counterfactuals`` also evaluates, every round, the voted signs with the previous
round's dense tensors (biases, BN affine) and the previous signs with the new dense
tensors, to see which of the two moves the accuracy between rounds, counts flips
that undo the previous round's flips, and (from ``--counterfactuals-from``) evaluates
the round's flips undone in one layer at a time.

    .venv/bin/python scripts/bench/emulate_hidenseek.py --set vote_momentum=0.5 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="HideNseekConfig override")
    p.add_argument("--counterfactuals", action="store_true")
    p.add_argument("--counterfactuals-from", type=int, default=10, help="first round of the per-layer counterfactuals")
    p.add_argument("--final-window", type=int, default=3)
    p.add_argument("--out", default="")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    sys.path.insert(0, str(ROOT / "plugins"))
    sys.path.insert(0, str(ROOT / "core"))
    import torch

    torch.set_num_threads(1)
    from prunekit_federated import transport as tp
    from prunekit_federated.config import config_for
    from prunekit_federated.data import client_data, server_test_data
    from prunekit_federated.masks import prunable_shapes
    from prunekit_federated.models import build_model
    from prunekit_federated.server_app import build_strategy
    from prunekit_federated.strategy import load_state
    from prunekit_federated.training import abstentions, bn_statistics, evaluate, pool_bn_statistics, train_signs

    sets = dict(s.split("=", 1) for s in a.set)
    cfg = config_for("hidenseek", sets, clients=a.clients, rounds=a.rounds, sparsity=a.sparsity)
    test = server_test_data(cfg.dataset, cfg.data_dir, cfg.test_fraction, cfg.seed)
    st = build_strategy("hidenseek", cfg, test)
    prun = prunable_shapes(st.model)
    datas = [client_data(cfg.dataset, cfg.data_dir, i, a.clients, cfg.dirichlet_alpha, cfg.test_fraction, cfg.seed)
             for i in range(a.clients)]
    base = {k: st.base[k].view(prun[k]) for k in prun}
    scores: list = [None] * a.clients

    def calibrated_acc(state: dict, signs: dict) -> float:
        """Accuracy of (dense state, signs) after pooled BN re-estimation on the clients' data."""
        saved_state, saved_signs = st.state, st.signs
        st.state, st.signs = dict(state), dict(signs)
        try:
            if cfg.bn_calibration:
                g = st.global_model()
                st.state.update(pool_bn_statistics([(len(d), bn_statistics(g, d)) for d in datas]))
            return evaluate(st.global_model(), test)[1]
        finally:
            st.state, st.signs = saved_state, saved_signs

    hist, t0 = [], time.process_time()
    prev_flipped = None
    for r in range(1, a.rounds + 1):
        gstate = st.global_state_dict()
        good = []
        for i in range(a.clients):
            model = build_model(cfg.dataset, "hidenseek", cfg)
            if scores[i] is None:
                scores[i] = {k: torch.full(s, cfg.score_init) for k, s in prun.items()}
            for k in prun:
                scores[i][k] = (st.scores[k].view(prun[k]).clone() if st.mean_score
                                else st.signs[k].view(prun[k]) * scores[i][k].abs().clamp_min(1e-8))
            start = {k: v.clone() for k, v in scores[i].items()}
            load_state(model, {**{k: v for k, v in gstate.items() if k not in prun}, **base})
            res = train_signs(model, base, st.mask, scores[i], datas[i], epochs=cfg.local_epochs,
                              batch_size=cfg.batch_size, lr=cfg.lr, score_lr=cfg.score_lr, momentum=cfg.momentum,
                              seed=cfg.seed * 1_000_003 + i * 1009 + r)
            sd = model.state_dict()
            good.append({"n": float(res.examples), "state": {k: sd[k].float() for k in st.shapes if k not in prun},
                         "signs": {k: torch.sign(scores[i][k]).flatten() * st.mask[k].float() for k in prun}})
            if st.mean_score:  # what the server decodes: the scores quantised to score_bits
                good[-1]["scores"] = tp.encode_scores(scores[i], st.mask, cfg.score_bits)[1]
            if cfg.vote == "abstain":
                good[-1]["abstain"] = {k: v.flatten() & st.mask[k] for k, v in abstentions(start, scores[i]).items()}
        old_state, old_signs = dict(st.state), {k: v.clone() for k, v in st.signs.items()}
        st.combine(r, good)
        flipped = {k: st.signs[k] != old_signs[k] for k in prun}
        row = {"round": r, "sign_flips": st.history[r]["sign_flips"]}
        if cfg.bn_calibration:  # as the evaluate phase: pooled statistics become part of the global state
            st.state.update(pool_bn_statistics([(len(d), bn_statistics(st.global_model(), d)) for d in datas]))
        row["accuracy"] = evaluate(st.global_model(), test)[1]
        if a.counterfactuals:
            dense_old = {**st.state, **{k: v for k, v in old_state.items() if "running" not in k}}
            row["acc_new_signs_old_dense"] = calibrated_acc(dense_old, st.signs)
            row["acc_old_signs_new_dense"] = calibrated_acc(st.state, old_signs)
            if prev_flipped is not None:
                row["reverted_flips"] = int(sum(int((flipped[k] & prev_flipped[k]).sum()) for k in prun))
            row["flips_per_layer"] = {k: int(flipped[k].sum()) for k in prun}
            if r >= a.counterfactuals_from:  # this round's flips undone in one layer only
                row["acc_old_signs_in_layer"] = {k: calibrated_acc(st.state, {**st.signs, k: old_signs[k]}) for k in prun}
        prev_flipped = flipped
        row["cpu_s"] = round(time.process_time() - t0, 1)
        hist.append(row)
        print(json.dumps(row), flush=True)
    w = a.final_window
    from prunekit.report import machine_info

    out = {"script": "emulate_hidenseek.py", "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "args": vars(a), "config": cfg.to_record(),
           "final_accuracy": sum(h["accuracy"] for h in hist[-w:]) / w, "last_accuracy": hist[-1]["accuracy"],
           "cpu_s": time.process_time() - t0, "history": hist}
    print(json.dumps({k: v for k, v in out.items() if k != "history"}), flush=True)
    if a.out:
        from prunekit import atomic_path

        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
