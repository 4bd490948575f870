"""ClientApp + ServerApp logic over Flower Messages, delivered in-process (LocalGrid)."""

import math

import numpy as np
import pytest
import torch

from .conftest import LocalGrid, tiny_cfg
from prunekit_federated.client_app import make_client_app
from prunekit_federated.server_app import build_strategy, run_method


def _run(method, faults=None, nodes=3, silent=None, **kw):
    grid = LocalGrid(make_client_app(faults), nodes, silent=silent)
    summary = run_method(grid, method, tiny_cfg(method, clients=nodes, **kw))
    return summary, grid


def _per_client_up(h):
    return h["up_bytes"] / max(h["accepted"], 1)


def test_fedtiny_selects_lowest_loss_candidate_and_prunes_sparsely():
    s, grid = _run("fedtiny", rounds=2)
    sel = s["bn_selection"]
    assert len(sel["candidate_losses"]) == 2
    assert sel["chosen"] == int(np.argmin(sel["candidate_losses"]))
    assert [st for _, st in grid.log[:6]] == ["bn-adapt"] * 3 + ["bn-eval"] * 3
    assert s["density"] == pytest.approx(0.1, abs=0.002)
    h1 = s["history"][1]
    assert h1["regrow_fraction"] == pytest.approx(0.1) and h1["grown"] > 0  # prune/grow at round 1
    assert sum(h1["swapped"].values()) > 0
    assert all(h["accepted"] == 3 for h in s["history"][1:])
    assert all(0.0 <= h["accuracy"] <= 1.0 for h in s["history"])


def test_sparse_methods_upload_much_less_than_dense():
    dense, _ = _run("fedavg", rounds=1)
    tiny, _ = _run("fedtiny", rounds=2)
    hns, _ = _run("hidenseek", rounds=1)
    d = _per_client_up(dense["history"][1])
    t = _per_client_up(tiny["history"][2])  # a round without gradient uploads
    h = _per_client_up(hns["history"][1])
    assert t < 0.3 * d  # kept values + 1-bit masks at density 0.1 (digits net: headers weigh)
    assert h < t  # one bit per kept weight
    # HideNseek: frozen weights are sent once per node, then only signs and dense tensors
    assert hns["history"][1]["down_bytes"] > 0


def test_hidenseek_downlink_drops_after_first_contact():
    s, _ = _run("hidenseek", rounds=2)
    assert s["history"][2]["down_bytes"] < 0.7 * s["history"][1]["down_bytes"]


def test_mask_cached_on_nodes_is_resent_when_missing():
    grid = LocalGrid(make_client_app(), 2)
    strategy = build_strategy("fedmef", tiny_cfg("fedmef", clients=2, rounds=3, prune_end=0, prune_every=10))
    strategy.test_data = None
    orig = strategy.aggregate_train
    calls = {"n": 0}

    def wrapped(r, replies):
        out = orig(r, replies)
        if r == 1:  # node 101 loses its cached mask (e.g. a SuperNode restart)
            grid.contexts[101].state = type(grid.contexts[101].state)()
        calls["n"] += 1
        return out
    strategy.aggregate_train = wrapped
    strategy.run(grid, 3)
    h = strategy.history
    assert h[1]["accepted"] == 2
    assert h[2]["accepted"] == 1  # node 101 asked for the mask instead of training
    assert h[3]["accepted"] == 2  # ... which the server re-sent
    assert h[2]["down_bytes"] < h[1]["down_bytes"] and h[3]["down_bytes"] > h[2]["down_bytes"]


def test_faults_rejected_logged_round_completes():
    faults = {1: "nan@1", 2: "mask-length@1", 3: "shape@2", 4: "crash@2"}
    s, grid = _run("fedmef", faults=faults, nodes=6, silent={106}, rounds=2)
    h1, h2 = s["history"][1], s["history"][2]
    rej1 = {r["node"]: r["reason"] for r in h1["rejected"]}
    assert "non-finite" in rej1[102] and "packed length" in rej1[103]
    assert h1["accepted"] == 3 and h1["timed_out"] == [106]
    rej2 = {r["node"]: r["reason"] for r in h2["rejected"]}
    assert "shape" in rej2[104]
    assert [f["node"] for f in h2["failed"]] == [105] and "dropped out mid-round" in h2["failed"][0]["reason"]
    assert h2["accepted"] == 3
    assert all(math.isfinite(h["accuracy"]) for h in s["history"])


def test_fault_logs_name_the_node(caplog):
    import logging

    logging.getLogger("flwr").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="flwr"):
            _run("fedavg", faults={0: "nan@1"}, nodes=2, rounds=1)
    finally:
        logging.getLogger("flwr").propagate = False
    assert any("rejected update from node 101" in r.getMessage() and "non-finite" in r.getMessage()
               for r in caplog.records)


def test_mask_aware_aggregation_formula():
    from prunekit import Mask

    strategy = build_strategy("fedmef", tiny_cfg("fedmef", prune_end=0, prune_every=10))
    k = "fc2.weight"
    n = strategy.mask[k].numel()
    m_a = strategy.mask[k].clone()
    m_b = strategy.mask[k].clone()
    m_b[m_b.nonzero()[0]] = False  # client b dropped one kept weight
    shape = strategy.shapes[k]
    upd = []
    for weight, m, val in ((1.0, m_a, 1.0), (3.0, m_b, 2.0)):
        state = {name: torch.full(s, val) for name, s in strategy.shapes.items()}
        state[k] = (torch.full((n,), val) * m).view(shape)
        masks = {name: strategy.mask[name].clone() for name in strategy.mask.groups}
        masks[k] = m
        upd.append({"state": state, "mask": Mask(masks), "n": weight})
    strategy.combine(5, upd)
    got = strategy.state[k].flatten()
    both = m_a & m_b
    only_a = m_a & ~m_b
    assert torch.allclose(got[both], torch.full_like(got[both], (1 * 1 + 3 * 2) / 4))
    assert torch.allclose(got[only_a], torch.ones_like(got[only_a]))  # only a held it: its value
    assert torch.count_nonzero(got[~m_a]) == 0
    dense = strategy.state["fc2.bias"]
    assert torch.allclose(dense, torch.full_like(dense, 7 / 4))


def test_sign_majority_vote():
    strategy = build_strategy("hidenseek", tiny_cfg("hidenseek"))
    k = "fc2.weight"
    m = strategy.mask[k]
    idx = m.nonzero().flatten()[:3]
    prev = strategy.signs[k].clone()

    def signs(vals):
        s = {name: strategy.signs[name].clone() for name in strategy.mask.groups}
        s[k][idx] = torch.tensor(vals)
        return s
    dense = {name: strategy.state[name] for name in strategy.shapes if name not in strategy.mask.groups}
    upd = [{"state": dense, "signs": signs([-1.0, -1.0, 1.0]), "n": 2.0},
           {"state": dense, "signs": signs([-1.0, 1.0, -1.0]), "n": 2.0},
           {"state": dense, "signs": signs([1.0, 1.0, -1.0]), "n": 1.0}]
    strategy.combine(1, upd)
    assert strategy.signs[k][idx].tolist() == [-1.0, 1.0, -1.0]  # votes: -3, +1, -1
    assert strategy.history[1]["sign_flips"] == 2
    # a tie keeps the previous sign
    upd = [{"state": dense, "signs": signs([-1.0, -1.0, -1.0]), "n": 1.0},
           {"state": dense, "signs": signs([1.0, 1.0, 1.0]), "n": 1.0}]
    before = strategy.signs[k][idx].clone()
    strategy.combine(2, upd)
    assert torch.equal(strategy.signs[k][idx], before)
    assert torch.equal(strategy.signs[k][~m], prev[~m])


def test_fedmef_extrudes_before_prune_rounds_and_saves_activation_memory():
    tiny, _ = _run("fedtiny", rounds=1, prune_every=2, prune_end=4)
    mef, _ = _run("fedmef", rounds=1, prune_every=2, prune_end=4)
    assert mef["history"][1]["client_extruded-weights"] > 0  # round 1 precedes the prune at round 2
    assert tiny["history"][1]["client_extruded-weights"] == 0
    assert mef["history"][1]["client_activation-bytes"] < 0.9 * tiny["history"][1]["client_activation-bytes"]


def test_abstentions_flip_keep_abstain():
    from prunekit_federated.training import abstentions

    start = {"w": torch.tensor([0.5, 0.5, -0.5, -0.5, 0.5])}
    end = {"w": torch.tensor([-0.1, 0.7, -0.2, 0.3, 0.5])}
    # flipped, reinforced, shrank (abstain), flipped, unchanged (keep)
    assert abstentions(start, end)["w"].tolist() == [False, False, True, False, False]


def test_two_bit_vote_ignores_abstentions():
    strategy = build_strategy("hidenseek", tiny_cfg("hidenseek", vote="abstain"))
    k = "fc2.weight"
    idx = strategy.mask[k].nonzero().flatten()[:2]
    dense = {name: strategy.state[name] for name in strategy.shapes if name not in strategy.mask.groups}

    def upd(vals, abstain, n):
        s = {name: strategy.signs[name].clone() for name in strategy.mask.groups}
        a = {name: torch.zeros_like(s[name], dtype=torch.bool) for name in s}
        s[k][idx], a[k][idx] = torch.tensor(vals), torch.tensor(abstain)
        return {"state": dense, "signs": s, "abstain": a, "n": n}
    # weight 0: one node flips, two larger nodes kept the sign but abstain -> flip (a majority vote keeps it)
    # weight 1: same flip, the larger nodes reinforced the sign (vote keep) -> keep
    good = [upd([-1.0, -1.0], [False, False], 1.0), upd([1.0, 1.0], [True, False], 2.0),
            upd([1.0, 1.0], [True, False], 2.0)]
    strategy.combine(1, good)
    assert strategy.signs[k][idx].tolist() == [-1.0, 1.0]
    assert strategy.history[1]["sign_flips"] == 1


def test_two_bit_vote_over_messages():
    one, _ = _run("hidenseek", rounds=1)
    two, _ = _run("hidenseek", rounds=1, vote="abstain")
    mask = build_strategy("hidenseek", tiny_cfg("hidenseek", vote="abstain")).mask
    packed = sum((int(m.sum()) + 7) // 8 for m in mask.groups.values())
    h1, h2 = one["history"][1], two["history"][1]
    assert h2["accepted"] == 3 and not h2["rejected"]
    extra = _per_client_up(h2) - _per_client_up(h1)  # one more packed bit per kept weight, plus record framing
    assert packed <= extra < packed + 250 * len(mask.groups)  # ~180 B of Flower framing per array


def test_two_bit_vote_rejects_abstaining_on_a_flipped_weight():
    from prunekit_federated import transport as tp

    strategy = build_strategy("hidenseek", tiny_cfg("hidenseek", vote="abstain"))
    flipped = {k: -strategy.signs[k] for k in strategy.mask.groups}
    everywhere = {k: strategy.mask[k].clone() for k in strategy.mask.groups}
    dense = {k: v for k, v in strategy.state.items() if k not in strategy.mask.groups}
    from flwr.app import RecordDict

    rec = tp.add_arrays(tp.encode_state(dense, None), {**tp.encode_signs(flipped, strategy.mask),
                                                       **tp.encode_kept_bits(everywhere, strategy.mask, "a/")})
    with pytest.raises(tp.MalformedUpdate, match="abstains on a weight whose sign it flipped"):
        strategy.decode(1, RecordDict({"arrays": rec}))
    del rec["a/fc2.weight"]
    with pytest.raises(tp.MalformedUpdate, match="missing entries: a/fc2.weight"):
        strategy.decode(1, RecordDict({"arrays": rec}))


def test_vote_momentum_needs_a_persistent_or_large_majority():
    strategy = build_strategy("hidenseek", tiny_cfg("hidenseek", vote_momentum=0.5))
    k = "fc2.weight"
    idx = strategy.mask[k].nonzero().flatten()[:2]
    dense = {name: strategy.state[name] for name in strategy.shapes if name not in strategy.mask.groups}

    def upd(vals, n):
        s = {name: strategy.signs[name].clone() for name in strategy.mask.groups}
        s[k][idx] = torch.tensor(vals)
        return {"state": dense, "signs": s, "n": n}

    def rnd(r, votes):  # votes: per node the two signs, equal weights
        strategy.combine(r, [upd(v, 1.0) for v in votes])
        return strategy.signs[k][idx].tolist()
    keep = [[1.0, 1.0]] * 4
    assert rnd(1, keep) == [1.0, 1.0]  # tally 0.5
    # 3 of 4 nodes flip weight 0 (v = -0.5): T = 0.25 - 0.25 = 0, not below 0 -> a plain majority would flip
    assert rnd(2, [[-1.0, 1.0]] * 3 + [[1.0, 1.0]]) == [1.0, 1.0]
    assert rnd(3, [[-1.0, 1.0]] * 3 + [[1.0, 1.0]]) == [-1.0, 1.0]  # persists: T = -0.25 -> flip
    # a tied round keeps the new sign: the tally decays towards 0 (T = -0.125) without crossing it
    assert rnd(4, [[-1.0, 1.0]] * 2 + [[1.0, 1.0]] * 2) == [-1.0, 1.0]
    assert strategy.tally[k][idx[0]].item() == pytest.approx(-0.125)
    with pytest.raises(ValueError, match="vote_momentum"):
        tiny_cfg("hidenseek", vote_momentum=1.0)
