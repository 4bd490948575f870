"""Sparse transport over Flower records, validation of client updates, and byte counting.

One :class:`flwr.app.ArrayRecord` carries a model update. Keys:

- ``v/<name>`` float32 values of the kept weights of prunable tensor ``name``, in
  flat (row-major) order of the mask's True entries;
- ``m/<name>`` uint8 ``np.packbits`` of the flat keep-mask (ceil(n/8) bytes, zero padding);
- ``s/<name>`` uint8 packbits of one sign bit per kept weight (HideNseek; 1 = +1);
- ``q/<name>`` uint8 packbits of one b-bit score code per kept weight and ``qs/<name>`` its
  float32 per-tensor step (HideNseek's opt-in mean-score aggregation, :func:`encode_scores`);
- ``d/<name>`` a dense tensor (biases, norm layers, or every tensor for dense FedAvg);
- ``gi/<name>``, ``gv/<name>`` int32 flat indices and float32 values of a top-k gradient.

So a layer at density d costs 4*d + 1/8 bytes per weight instead of 4 (values + mask),
and a HideNseek sign update 1/8 byte per kept weight. :func:`record_bytes` is the
size of the serialised (protobuf) RecordDict, i.e. what crosses the wire.

:func:`decode_update` checks everything a client sends (keys, dtypes, shapes, mask
length and padding, value counts, finiteness) and raises :class:`MalformedUpdate`
naming the offending entry; the server then drops that client's update.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from prunekit import Mask


class MalformedUpdate(ValueError):
    """A client update that fails validation (the message says which entry and why)."""


# bit packing -----------------------------------------------------------------------------
def pack_mask(mask: torch.Tensor) -> np.ndarray:
    return np.packbits(mask.detach().flatten().cpu().numpy().astype(bool))


def unpack_mask(packed: np.ndarray, n: int, what: str = "mask") -> torch.Tensor:
    """Inverse of :func:`pack_mask`, checking the length and the zero padding."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise MalformedUpdate(f"{what}: expected a 1-D uint8 packed bit array, got {packed.dtype} {packed.shape}")
    if packed.size != (n + 7) // 8:
        raise MalformedUpdate(f"{what}: packed length {packed.size} bytes, expected {(n + 7) // 8} for {n} elements")
    bits = np.unpackbits(packed)
    if bits[n:].any():
        raise MalformedUpdate(f"{what}: non-zero padding bits after element {n}")
    return torch.from_numpy(bits[:n].astype(bool))


def _arr(x) -> "object":
    from flwr.app import Array

    return Array(np.ascontiguousarray(x))


# encoding ----------------------------------------------------------------------------------
def encode_state(state: Mapping[str, torch.Tensor], mask: Mask | None, *, with_mask: bool = True,
                 skip: tuple[str, ...] = ()) -> "object":
    """ArrayRecord of a model state: prunable tensors sparse (values [+ mask]), the rest dense."""
    from flwr.app import ArrayRecord

    items = {}
    sparse = set(mask.groups) if mask is not None else set()
    for name, t in state.items():
        if name in skip:
            continue
        t = t.detach().cpu()
        if name in sparse:
            m = mask[name]
            items[f"v/{name}"] = _arr(t.flatten()[m].to(torch.float32).numpy())
            if with_mask:
                items[f"m/{name}"] = _arr(pack_mask(m))
        else:
            items[f"d/{name}"] = _arr(t.numpy())
    return ArrayRecord(items)


def encode_signs(signs: Mapping[str, torch.Tensor], mask: Mask) -> dict:
    """``s/<name>``: one bit per kept weight (sign > 0)."""
    return encode_kept_bits({k: signs[k].flatten() > 0 for k in mask.groups}, mask, "s/")


def encode_kept_bits(bits: Mapping[str, torch.Tensor], mask: Mask, prefix: str) -> dict:
    """``<prefix><name>``: one packed bit per kept weight of a boolean tensor (e.g. ``a/`` abstentions)."""
    return {f"{prefix}{k}": _arr(np.packbits(bits[k].flatten()[mask[k]].numpy())) for k in mask.groups}


def quantise_scores(x: torch.Tensor, bits: int, zero_sign: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """b-bit mid-rise uniform quantiser with a per-tensor step (deterministic rounding).

    With L = 2^(b-1) and step D = max|x| / L, a value x gets the code
    q = clamp(floor(x / D), -L, L - 1) + L in [0, 2^b - 1] and is restored as
    (q - L + 1/2) D, i.e. rounded to the nearest of the 2^b levels +-D/2, +-3D/2, ...,
    +-(L - 1/2) D (error <= D/2). No level is 0, so the sign of every score survives
    quantisation (x = 0 maps to +D/2, as sign(0) = +1 in the client's forward; where
    ``zero_sign`` < 0 it maps to -D/2). Returns (uint8 codes, D)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"score bits must be in 1..8, got {bits}")
    half = 2 ** (bits - 1)
    x = x.detach().flatten().to(torch.float64)
    step = max(float(x.abs().max()) if x.numel() else 0.0, 1e-30) / half
    q = torch.floor(x / step).clamp(-half, half - 1)
    if zero_sign is not None:
        q = torch.where((x == 0) & (zero_sign.flatten() < 0), torch.full_like(q, -1.0), q)
    return (q + half).to(torch.uint8).numpy(), float(np.float32(step))


def dequantise_scores(codes: np.ndarray, step: float, bits: int) -> torch.Tensor:
    """Inverse of :func:`quantise_scores`: (q - L + 1/2) D as float32."""
    half = 2 ** (bits - 1)
    return torch.from_numpy((codes.astype(np.float64) - half + 0.5) * float(step)).to(torch.float32)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """b-bit codes packed back to back (MSB first): ceil(n b / 8) bytes."""
    planes = np.unpackbits(codes.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - bits:]
    return np.packbits(planes.flatten())


def unpack_codes(packed: np.ndarray, n: int, bits: int, what: str = "codes") -> np.ndarray:
    """Inverse of :func:`pack_codes`, checking the length and the zero padding."""
    flat = unpack_mask(packed, n * bits, what).numpy().reshape(n, bits).astype(np.uint8)
    return (flat.astype(np.uint16) << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(1).astype(np.uint8)


def encode_scores(scores: Mapping[str, torch.Tensor], mask: Mask, bits: int,
                  zero_sign: Mapping[str, torch.Tensor] | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """``q/<name>`` packed b-bit codes of the kept weights' scores and ``qs/<name>`` the
    float32 step; also returns what the receiver decodes (flat, 0 where pruned)."""
    out, restored = {}, {}
    for k, m in mask.groups.items():
        zs = zero_sign[k].flatten()[m] if zero_sign is not None else None
        codes, step = quantise_scores(scores[k].flatten()[m], bits, zs)
        out[f"q/{k}"] = _arr(pack_codes(codes, bits))
        out[f"qs/{k}"] = _arr(np.asarray([step], dtype=np.float32))
        r = torch.zeros(m.numel(), dtype=torch.float32)
        r[m] = dequantise_scores(codes, step, bits)
        restored[k] = r
    return out, restored


def encode_topk(grads: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    out = {}
    for k, (idx, val) in grads.items():
        out[f"gi/{k}"] = _arr(idx.to(torch.int32).numpy())
        out[f"gv/{k}"] = _arr(val.to(torch.float32).numpy())
    return out


def add_arrays(record, extra: dict):
    """A new ArrayRecord with ``extra`` Arrays added."""
    from flwr.app import ArrayRecord

    items = {k: record[k] for k in record}
    items.update(extra)
    return ArrayRecord(items)


# decoding and validation -----------------------------------------------------------------
def _numpy(record, key: str) -> np.ndarray:
    try:
        return record[key].numpy()
    except Exception as e:  # noqa: BLE001 - any decode failure is a malformed update
        raise MalformedUpdate(f"{key}: undecodable array ({type(e).__name__}: {e})") from None


def _finite(key: str, a: np.ndarray) -> None:
    if a.dtype.kind not in "fiub":
        raise MalformedUpdate(f"{key}: unsupported dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise MalformedUpdate(f"{key}: {bad} non-finite value(s) (NaN/Inf)")


def decode_state(record, shapes: Mapping[str, tuple[int, ...]], sparse: Mapping[str, torch.Tensor] | None,
                 *, need_mask: bool = True, dense_names: tuple[str, ...] | None = None,
                 allowed_extra: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], Mask | None]:
    """Decode and validate a model update.

    ``shapes``: every tensor the update must hold; ``sparse``: the round's mask per
    prunable tensor (a client's mask must be a subset of it) or None for a dense
    update. Returns dense tensors (zeros at pruned positions) and the client's mask.
    Keys starting with a prefix in ``allowed_extra`` (e.g. ``"gi/"``) are not checked here.
    """
    sparse = dict(sparse or {})
    names = dense_names if dense_names is not None else tuple(k for k in shapes if k not in sparse)
    expected = {f"d/{k}" for k in names}
    for k in sparse:
        expected.add(f"v/{k}")
        if need_mask:
            expected.add(f"m/{k}")
    keys = set(record.keys())
    extra = {k for k in keys - expected if not k.startswith(allowed_extra or ("\0",))}
    missing = expected - keys
    if missing:
        raise MalformedUpdate(f"missing entries: {', '.join(sorted(missing)[:5])}")
    if extra:
        raise MalformedUpdate(f"unexpected entries: {', '.join(sorted(extra)[:5])}")
    out: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for k in names:
        a = _numpy(record, f"d/{k}")
        if tuple(a.shape) != tuple(shapes[k]):
            raise MalformedUpdate(f"d/{k}: shape {tuple(a.shape)}, expected {tuple(shapes[k])}")
        _finite(f"d/{k}", a)
        out[k] = torch.from_numpy(a.astype(np.float32, copy=False).copy())
    for k, round_mask in sparse.items():
        n = int(np.prod(shapes[k]))
        if need_mask:
            m = unpack_mask(_numpy(record, f"m/{k}"), n, f"m/{k}")
            if bool((m & ~round_mask).any()):
                raise MalformedUpdate(f"m/{k}: {int((m & ~round_mask).sum())} weight(s) outside the round's mask")
        else:
            m = round_mask
        v = _numpy(record, f"v/{k}")
        if v.ndim != 1 or v.dtype != np.float32:
            raise MalformedUpdate(f"v/{k}: expected 1-D float32, got {v.dtype} {v.shape}")
        if v.size != int(m.sum()):
            raise MalformedUpdate(f"v/{k}: {v.size} values for {int(m.sum())} kept weights")
        _finite(f"v/{k}", v)
        dense = torch.zeros(n, dtype=torch.float32)
        dense[m] = torch.from_numpy(v.copy())
        out[k] = dense.view(shapes[k])
        masks[k] = m
    return out, (Mask(masks) if sparse else None)


def decode_signs(record, mask: Mask) -> dict[str, torch.Tensor]:
    """``s/<name>`` -> +-1 float tensors (flat, 0 where pruned)."""
    out = {}
    for k, bits in decode_kept_bits(record, mask, "s/").items():
        out[k] = torch.where(bits, 1.0, -1.0) * mask[k].float()
    return out


def decode_kept_bits(record, mask: Mask, prefix: str) -> dict[str, torch.Tensor]:
    """``<prefix><name>`` -> flat bool tensors (False where pruned); checks length and padding."""
    out = {}
    for k, m in mask.groups.items():
        key = f"{prefix}{k}"
        if key not in record:
            raise MalformedUpdate(f"missing entries: {key}")
        bits = unpack_mask(_numpy(record, key), int(m.sum()), key)
        b = torch.zeros(m.numel(), dtype=torch.bool)
        b[m] = bits
        out[k] = b
    return out


def decode_scores(record, mask: Mask, bits: int) -> dict[str, torch.Tensor]:
    """``q/<name>`` + ``qs/<name>`` -> flat float32 scores (0 where pruned); checks the packed
    length and padding and that the step is one finite positive float32 whose scores are finite."""
    out = {}
    for k, m in mask.groups.items():
        kq, ks = f"q/{k}", f"qs/{k}"
        if kq not in record or ks not in record:
            raise MalformedUpdate(f"missing entries: {kq}/{ks}")
        step = _numpy(record, ks)
        if step.dtype != np.float32 or step.shape != (1,):
            raise MalformedUpdate(f"{ks}: expected one float32 step, got {step.dtype} {step.shape}")
        _finite(ks, step)
        if not step[0] > 0:
            raise MalformedUpdate(f"{ks}: step must be > 0, got {float(step[0])}")
        codes = unpack_codes(_numpy(record, kq), int(m.sum()), bits, kq)
        s = torch.zeros(m.numel(), dtype=torch.float32)
        s[m] = dequantise_scores(codes, float(step[0]), bits)
        if not bool(torch.isfinite(s).all()):
            raise MalformedUpdate(f"{ks}: step {float(step[0])} overflows float32 scores")
        out[k] = s
    return out


def decode_topk(record, mask: Mask, caps: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Top-k gradients of inactive weights -> dense flat tensors; checks indices and counts."""
    out = {}
    for k, m in mask.groups.items():
        ki, kv = f"gi/{k}", f"gv/{k}"
        if ki not in record or kv not in record:
            raise MalformedUpdate(f"missing entries: {ki}/{kv}")
        idx, val = _numpy(record, ki), _numpy(record, kv)
        if idx.dtype != np.int32 or val.dtype != np.float32 or idx.ndim != 1 or idx.shape != val.shape:
            raise MalformedUpdate(f"{ki}: expected matching 1-D int32 indices and float32 values")
        if idx.size > caps.get(k, 0):
            raise MalformedUpdate(f"{ki}: {idx.size} gradients, at most {caps.get(k, 0)} allowed")
        _finite(kv, val)
        n = m.numel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise MalformedUpdate(f"{ki}: index outside 0..{n - 1}")
        if np.unique(idx).size != idx.size:
            raise MalformedUpdate(f"{ki}: repeated indices")
        t = torch.from_numpy(idx.astype(np.int64))
        if bool(m[t].any()):
            raise MalformedUpdate(f"{ki}: gradient reported for an active weight")
        g = torch.zeros(n, dtype=torch.float32)
        g[t] = torch.from_numpy(val.copy())
        out[k] = g
    return out


# byte counting -------------------------------------------------------------------------------
def record_bytes(content) -> int:
    """Serialised size in bytes of a RecordDict (protobuf wire form)."""
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(content).ByteSize())


def dense_bytes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """float32 payload of a full dense model (no headers)."""
    return 4 * sum(int(np.prod(s)) for s in shapes.values())
