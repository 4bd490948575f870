import numpy as np
import pytest
import torch

from prunekit import Mask
from prunekit_federated import transport as tp


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(8, 4, 3, 3, generator=g), "conv.bias": torch.randn(8, generator=g),
            "fc.weight": torch.randn(10, 50, generator=g)}


SHAPES = {k: tuple(v.shape) for k, v in _state().items()}


def _mask(density=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Mask({k: torch.rand(int(np.prod(SHAPES[k])), generator=g) < density for k in ("conv.weight", "fc.weight")})


def _record(items):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in items.items()})


def _items(rec):
    return {k: rec[k].numpy() for k in rec.keys()}


def test_pack_roundtrip_and_padding_check():
    m = torch.rand(37) < 0.5
    packed = tp.pack_mask(m)
    assert packed.dtype == np.uint8 and packed.size == 5
    assert torch.equal(tp.unpack_mask(packed, 37), m)
    bad = packed.copy()
    bad[-1] |= 1  # a padding bit set
    with pytest.raises(tp.MalformedUpdate, match="padding"):
        tp.unpack_mask(bad, 37)
    with pytest.raises(tp.MalformedUpdate, match="packed length"):
        tp.unpack_mask(packed[:-1], 37)


def test_sparse_roundtrip_exact_and_zero_outside_mask():
    state, mask = _state(), _mask()
    rec = tp.encode_state(state, mask)
    out, got_mask = tp.decode_state(rec, SHAPES, mask.groups)
    assert got_mask == mask
    for k, m in mask.groups.items():
        flat = out[k].flatten()
        assert torch.equal(flat[m], state[k].flatten()[m])
        assert torch.count_nonzero(flat[~m]) == 0
    assert torch.equal(out["conv.bias"], state["conv.bias"])


def test_bytes_shrink_with_density():
    from flwr.app import RecordDict

    state = _state()
    dense = tp.record_bytes(RecordDict({"arrays": tp.encode_state(state, None)}))
    sizes = {d: tp.record_bytes(RecordDict({"arrays": tp.encode_state(state, _mask(d))})) for d in (0.5, 0.2, 0.1)}
    assert sizes[0.1] < sizes[0.2] < sizes[0.5] < dense
    payload = 4 * sum(v.numel() for v in state.values())
    assert dense >= payload  # the wire form holds every float32


@pytest.mark.parametrize("corrupt, match", [
    (lambda d: d.__setitem__("v/fc.weight", np.concatenate([d["v/fc.weight"], [1.0]]).astype(np.float32)), "values for"),
    (lambda d: d["v/conv.weight"].__setitem__(0, np.nan), "non-finite"),
    (lambda d: d["d/conv.bias"].__setitem__(2, np.inf), "non-finite"),
    (lambda d: d.__setitem__("m/fc.weight", d["m/fc.weight"][:-1].copy()), "packed length"),
    (lambda d: d.__setitem__("d/conv.bias", np.zeros((9,), np.float32)), "shape"),
    (lambda d: d.__setitem__("v/fc.weight", d["v/fc.weight"].astype(np.float64)), "float32"),
    (lambda d: d.pop("d/conv.bias"), "missing"),
    (lambda d: d.__setitem__("x/evil", np.zeros(3, np.float32)), "unexpected"),
])
def test_malformed_updates_are_rejected(corrupt, match):
    state, mask = _state(), _mask()
    items = _items(tp.encode_state(state, mask))
    corrupt(items)
    with pytest.raises(tp.MalformedUpdate, match=match):
        tp.decode_state(_record(items), SHAPES, mask.groups)


def test_client_mask_must_lie_inside_round_mask():
    mask = _mask()
    wider = Mask({k: v.clone() for k, v in mask.groups.items()})
    wider.groups["fc.weight"][(~mask["fc.weight"]).nonzero()[0]] = True
    rec = tp.encode_state(_state(), wider)
    with pytest.raises(tp.MalformedUpdate, match="outside the round's mask"):
        tp.decode_state(rec, SHAPES, mask.groups)
    # a narrower (subset) mask is accepted
    narrower = Mask({k: v.clone() for k, v in mask.groups.items()})
    narrower.groups["fc.weight"][mask["fc.weight"].nonzero()[0]] = False
    _, got = tp.decode_state(tp.encode_state(_state(), narrower), SHAPES, mask.groups)
    assert got == narrower


def test_signs_one_bit_per_kept_weight():
    mask = _mask(0.3)
    g = torch.Generator().manual_seed(3)
    signs = {k: torch.where(torch.rand(m.numel(), generator=g) < 0.5, -1.0, 1.0) for k, m in mask.groups.items()}
    arrays = tp.encode_signs(signs, mask)
    for k, m in mask.groups.items():
        assert arrays[f"s/{k}"].numpy().size == (int(m.sum()) + 7) // 8
    back = tp.decode_signs(_record({k: v.numpy() for k, v in arrays.items()}), mask)
    for k, m in mask.groups.items():
        assert torch.equal(back[k][m], signs[k][m])
        assert torch.count_nonzero(back[k][~m]) == 0


def test_topk_validation():
    mask = _mask(0.5)
    inactive = (~mask["fc.weight"]).nonzero().flatten()[:4]
    active = mask["fc.weight"].nonzero().flatten()[:1]
    ok = {"fc.weight": (inactive, torch.ones(4)), "conv.weight": (torch.zeros(0, dtype=torch.long), torch.zeros(0))}
    caps = {"fc.weight": 4, "conv.weight": 0}
    g = tp.decode_topk(_record({k: v.numpy() for k, v in tp.encode_topk(ok).items()}), mask, caps)
    assert torch.equal(g["fc.weight"][inactive], torch.ones(4))
    with pytest.raises(tp.MalformedUpdate, match="at most"):
        tp.decode_topk(_record({k: v.numpy() for k, v in tp.encode_topk(ok).items()}), mask, {"fc.weight": 3})
    bad = {**ok, "fc.weight": (active, torch.ones(1))}
    with pytest.raises(tp.MalformedUpdate, match="active weight"):
        tp.decode_topk(_record({k: v.numpy() for k, v in tp.encode_topk(bad).items()}), mask, caps)
    oob = {**ok, "fc.weight": (torch.tensor([10_000]), torch.ones(1))}
    with pytest.raises(tp.MalformedUpdate, match="outside"):
        tp.decode_topk(_record({k: v.numpy() for k, v in tp.encode_topk(oob).items()}), mask, caps)
