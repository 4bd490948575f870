"""HideNseek's opt-in mean-score aggregation (``vote="mean-score"``): quantiser, server
maths, bytes on the wire, rejection of malformed score updates."""

import numpy as np
import pytest
import torch

from .conftest import LocalGrid, tiny_cfg
from prunekit_federated import transport as tp
from prunekit_federated.client_app import make_client_app
from prunekit_federated.server_app import build_strategy, run_method


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_quantiser_rounds_to_nearest_level_and_keeps_signs(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(1001, generator=g) * 0.3
    x[0], x[1] = 0.0, -x.abs().max()  # a zero and the extreme value
    codes, step = tp.quantise_scores(x, bits)
    half = 2 ** (bits - 1)
    assert step == pytest.approx(float(x.abs().max()) / half, rel=1e-6)
    assert codes.dtype == np.uint8 and int(codes.max()) <= 2 ** bits - 1
    back = tp.dequantise_scores(codes, step, bits)
    assert float((back - x).abs().max()) <= step / 2 * (1 + 1e-5)  # nearest of the 2^b mid-rise levels
    assert torch.equal(back[1:] >= 0, x[1:] >= 0) and back[0] > 0  # no zero level: signs survive, 0 -> +
    neg = tp.quantise_scores(x, bits, zero_sign=-torch.ones_like(x))[0]
    assert tp.dequantise_scores(neg, step, bits)[0] < 0  # a zero on a negative global sign stays negative
    packed = tp.pack_codes(codes, bits)
    assert packed.size == (x.numel() * bits + 7) // 8
    assert np.array_equal(tp.unpack_codes(packed, x.numel(), bits), codes)


def _strategy(**kw):
    return build_strategy("hidenseek", tiny_cfg("hidenseek", vote="mean-score", **kw))


def test_server_takes_the_sample_weighted_mean_and_requantises_it():
    st = _strategy()
    k = "fc2.weight"
    m = st.mask[k]
    idx = m.nonzero().flatten()[:3]
    dense = {name: st.state[name] for name in st.shapes if name not in st.mask.groups}
    assert torch.allclose(st.scores[k][m], torch.full((int(m.sum()),), 0.02), rtol=2 ** -8)  # score_init broadcast

    def upd(vals, n):
        s = {name: st.scores[name].clone() for name in st.mask.groups}
        s[k][idx] = torch.tensor(vals)
        return {"state": dense, "scores": s, "n": n}
    # weighted means (exact in float32): (3*0.125 - 0.5)/4 = -0.03125, (3*-0.25 + 0.25)/4 = -0.125,
    # (3*0.25 - 0.75)/4 = 0: a tie, which keeps the previous sign (+1)
    u1, u2 = upd([0.125, -0.25, 0.25], 3.0), upd([-0.5, 0.25, -0.75], 1.0)
    mean = (3.0 * u1["scores"][k] + u2["scores"][k]) / 4
    st.combine(1, [u1, u2])
    step = float(mean[m].abs().max()) / 2 ** 7
    assert float((st.scores[k][m] - mean[m]).abs().max()) <= step / 2 * (1 + 1e-5)
    assert st.signs[k][idx].tolist() == [-1.0, -1.0, 1.0]
    assert st.history[1]["sign_flips"] == 2
    assert torch.count_nonzero(st.scores[k][~m]) == 0 and torch.count_nonzero(st.signs[k][~m]) == 0
    st.combine(2, [upd([0.5, 0.5, 0.5], 1.0), upd([-0.5, 0.5, 0.5], 1.0)])  # tie on a negative sign: stays
    assert st.signs[k][idx].tolist() == [-1.0, 1.0, 1.0] and st.scores[k][idx[0]] < 0
    # the broadcast is exactly what the server holds (nodes decode the same scores)
    from flwr.app import ArrayRecord

    assert torch.equal(tp.decode_scores(ArrayRecord(st.score_rec), st.mask, 8)[k], st.scores[k])
    # the effective global weight stays m * sign(s) * w0
    assert torch.equal(st.global_state_dict()[k].flatten(), st.base[k] * st.signs[k])


def _per_client(h, way):  # train messages only (BN calibration traffic excluded)
    return (h[f"{way}_bytes"] - h["bn_calibration"][f"{way}_bytes"]) / (h["replied"] if way == "up" else h["sent"])


def test_bytes_are_b_bits_per_kept_weight_each_way_and_malformed_scores_are_rejected():
    runs = {}
    for key, kw, faults in (("vote", {}, None), ("8", {"vote": "mean-score"}, {2: "mask-length@1"}),
                            ("4", {"vote": "mean-score", "score_bits": 4}, None)):
        grid = LocalGrid(make_client_app(faults), 3)
        runs[key] = run_method(grid, "hidenseek", tiny_cfg("hidenseek", clients=3, rounds=1, **kw))["history"][1]
    mask = _strategy().mask
    kept = [int(m.sum()) for m in mask.groups.values()]
    codes = {b: sum((n * b + 7) // 8 for n in kept) for b in (1, 4, 8)}
    # uplink: the 8- vs 4-bit replies differ exactly by the packed codes (same keys, same framing)
    # (one of the three 8-bit replies is a byte short: the injected fault)
    assert _per_client(runs["8"], "up") - _per_client(runs["4"], "up") == pytest.approx(codes[8] - codes[4], abs=1)
    # vs the 1-bit vote: the codes' extra payload plus one float32 step array per tensor
    extra = _per_client(runs["4"], "up") - _per_client(runs["vote"], "up")
    assert codes[4] - codes[1] < extra < codes[4] - codes[1] + 250 * len(kept)
    # downlink: the b-bit mean scores replace the sign bits (+ protobuf varint lengths)
    down = _per_client(runs["8"], "down") - _per_client(runs["4"], "down")
    assert down == pytest.approx(codes[8] - codes[4], abs=2 * len(kept))
    # node 103 truncated its score codes: rejected, logged, the round completed with the others
    assert runs["8"]["accepted"] == 2 and runs["8"]["rejected"][0]["node"] == 103
    assert "q/" in runs["8"]["rejected"][0]["reason"] and "packed length" in runs["8"]["rejected"][0]["reason"]


def test_decode_rejects_malformed_score_updates():
    from flwr.app import Array, RecordDict

    st = _strategy()
    dense = {k: v for k, v in st.state.items() if k not in st.mask.groups}
    scores = {k: torch.randn(m.numel()) * m.float() for k, m in st.mask.groups.items()}
    good = tp.add_arrays(tp.encode_state(dense, None), tp.encode_scores(scores, st.mask, 8)[0])
    got = st.decode(1, RecordDict({"arrays": good}))["scores"]
    assert all(torch.equal(got[k] > 0, scores[k] > 0) for k in scores)
    k = "fc2.weight"

    def bad(**items):
        rec = tp.add_arrays(good, {key: Array(np.asarray(v)) for key, v in items.items() if v is not None})
        for key, v in items.items():
            if v is None:
                del rec[key]
        return RecordDict({"arrays": rec})
    for items, msg in (({f"qs/{k}": np.asarray([np.nan], np.float32)}, "non-finite"),
                       ({f"qs/{k}": np.asarray([0.0], np.float32)}, "step must be > 0"),
                       ({f"qs/{k}": np.asarray([3e38], np.float32)}, "overflows"),
                       ({f"qs/{k}": np.asarray([0.1, 0.1], np.float32)}, "one float32 step"),
                       ({f"q/{k}": good[f"q/{k}"].numpy()[:-1].copy()}, "packed length"),
                       ({f"qs/{k}": None}, "missing entries"),
                       ({f"s/{k}": np.zeros(1, np.uint8)}, "unexpected entries")):
        with pytest.raises(tp.MalformedUpdate, match=msg):
            st.decode(1, bad(**items))
    # 3-bit codes: a set padding bit after the last code is rejected
    st3 = _strategy(score_bits=3)
    k3 = next(name for name, m in st3.mask.groups.items() if int(m.sum()) * 3 % 8)
    rec = tp.add_arrays(tp.encode_state(dense, None), tp.encode_scores(scores, st3.mask, 3)[0])
    st3.decode(1, RecordDict({"arrays": rec}))
    q = rec[f"q/{k3}"].numpy().copy()
    q[-1] |= 1
    with pytest.raises(tp.MalformedUpdate, match="padding"):
        st3.decode(1, RecordDict({"arrays": tp.add_arrays(rec, {f"q/{k3}": Array(q)})}))


def test_mean_score_options_are_checked():
    with pytest.raises(ValueError, match="score_bits"):
        tiny_cfg("hidenseek", vote="mean-score", score_bits=9)
    with pytest.raises(ValueError, match="mean-score"):
        tiny_cfg("hidenseek", vote="mean-score", vote_momentum=0.3)


def test_cli_passes_mean_score_options_and_rejects_bad_ones(monkeypatch):
    from typer.testing import CliRunner

    import prunekit_federated.simulation as sim
    from prunekit_federated.cli import app

    seen = {}

    def fake(method, cfg, **kw):
        seen.update(cfg=cfg)
        return {"history": [], "final_accuracy": 0.5, "density": 0.1, "seconds": 1.0}
    monkeypatch.setattr(sim, "simulate", fake)
    r = CliRunner().invoke(app, ["run", "hidenseek", "--dataset", "digits", "--vote", "mean-score", "--score-bits", "6"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].vote == "mean-score" and seen["cfg"].score_bits == 6
    r = CliRunner().invoke(app, ["run", "hidenseek", "--dataset", "digits", "--vote", "mean-score", "--score-bits", "0"])
    assert r.exit_code == 2 and "score_bits must be in 1..8" in r.output and len(r.output.strip().splitlines()) == 1
