"""FedMef's scaled activation pruning (SAP) and an activation-memory meter.

Scaled activation pruning (Huang et al., FedMef, CVPR 2024, arXiv 2403.14737): a conv or
linear layer needs its input x only to form the weight gradient
dL/dW = conv_weight_grad(x, dL/dy). SAP keeps, for backward, only the top (1 - gamma)
fraction of x by |x| (selected by :func:`prunekit.select`), stored as float32 values
plus a 1-bit packed mask, and re-pads the rest with zeros in backward. The input
gradient needs only W and is exact. The forward pass is unchanged. The network input
itself (the data batch) is not an activation and is saved as is.

"Scaled" refers to the normalised sparse convolution the paper pairs SAP with (so
activations stay zero-centred and pruning by |x| is meaningful); here it is the scaled
weight standardisation in :class:`prunekit_federated.models.SparseConv2d`. The
paper's exact NSConv formula is not reproduced (approximation, documented there).

:class:`ActivationMeter` counts the bytes of every tensor autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``), excluding model parameters: the
client's activation memory for a training step, measured, not estimated. It also
samples the C heap in use (glibc ``mallinfo2``: in-use arena bytes + mmapped blocks,
which is where torch's CPU tensors live) at every save and every unpack of a saved
tensor and at :meth:`ActivationMeter.sample` calls (after backward, after the optimiser
step); ``peak_heap_bytes`` is the highest sample above the level at entry, i.e. the
measured peak memory of the step (activations, gradients, optimiser state,
temporaries alive at a sample point). None where mallinfo2 is unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch
import torch.nn.functional as F

from prunekit import Budget, Scores, select


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Flat bool -> uint8 (8 elements per byte, MSB first)."""
    flat = mask.flatten().to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.flatten()[:n].to(torch.bool)


def activation_keep_mask(x: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the top ``keep`` fraction of |x| (a threshold budget through prunekit.select).

    The threshold is the (1 - keep) quantile of |x| (``torch.kthvalue``, linear time,
    instead of a full sort per forward pass); exact zeros (ReLU outputs) are never
    kept, since re-padding restores them exactly; ties at the threshold are dropped, so
    at most ``keep`` of the entries are kept.
    """
    a = x.detach().abs().flatten()
    k = int(round((1.0 - keep) * a.numel()))
    if k < 1:
        return torch.ones_like(x, dtype=torch.bool)
    # keep |x| strictly above the k-th smallest (ties there are dropped; zeros never kept)
    t = float(torch.nextafter(a.kthvalue(k).values.double(), torch.tensor(float("inf"), dtype=torch.float64)))
    return select(Scores.single(a), Budget(threshold=t)).only.view(x.shape)


def _compress(x: torch.Tensor, keep: float):
    m = activation_keep_mask(x, keep)
    return x.detach()[m].contiguous(), pack_bits(m)


def _restore(values: torch.Tensor, packed: torch.Tensor, shape) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    m = unpack_bits(packed, n)
    x = torch.zeros(n, dtype=values.dtype)
    x[m] = values
    return x.view(shape)


class _SAPConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, keep):
        y = F.conv2d(x, weight, bias, stride, padding)
        values, packed = _compress(x, keep)
        ctx.save_for_backward(values, packed, weight)
        ctx.conf = (tuple(x.shape), stride, padding, bias is not None)
        return y

    @staticmethod
    def backward(ctx, gy):
        values, packed, weight = ctx.saved_tensors
        shape, stride, padding, has_bias = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(shape, weight, gy, stride, padding)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(_restore(values, packed, shape), weight.shape, gy, stride, padding)
        if has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


class _SAPLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, keep):
        y = F.linear(x, weight, bias)
        values, packed = _compress(x, keep)
        ctx.save_for_backward(values, packed, weight)
        ctx.conf = (tuple(x.shape), bias is not None)
        return y

    @staticmethod
    def backward(ctx, gy):
        values, packed, weight = ctx.saved_tensors
        shape, has_bias = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = gy @ weight
        if ctx.needs_input_grad[1]:
            x = _restore(values, packed, shape)
            gw = gy.reshape(-1, gy.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if has_bias and ctx.needs_input_grad[2]:
            gb = gy.reshape(-1, gy.shape[-1]).sum(0)
        return gx, gw, gb, None


def sap_conv2d(x, weight, bias, stride, padding, keep: float):
    return _SAPConv2d.apply(x, weight, bias, stride, padding, keep)


def sap_linear(x, weight, bias, keep: float):
    return _SAPLinear.apply(x, weight, bias, keep)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _load_mallinfo2()


def heap_in_use() -> int | None:
    """Bytes of C heap in use (glibc mallinfo2: uordblks + hblkhd), or None if unavailable."""
    if _MALLINFO2 is None:
        return None
    m = _MALLINFO2()
    return int(m.uordblks + m.hblkhd)


class ActivationMeter:
    """Bytes saved for backward during a forward pass (parameters excluded), and the
    sampled peak heap of the step (see the module doc).

    >>> with ActivationMeter(model) as meter:
    ...     loss = model(x).sum()
    >>> loss.backward(); meter.sample(); opt.step(); meter.sample()
    >>> meter.bytes, meter.peak_heap_bytes
    """

    def __init__(self, model: torch.nn.Module | None = None):
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
        self._seen: set[int] = set()
        self.bytes = 0
        self._base = self._peak = None
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def sample(self) -> None:
        h = heap_in_use()
        if h is not None and self._peak is not None:
            self._peak = max(self._peak, h)

    @property
    def peak_heap_bytes(self) -> int | None:
        return None if self._base is None else self._peak - self._base

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in self._params and ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes += st.nbytes()
        self.sample()
        return t

    def _unpack(self, t: torch.Tensor) -> torch.Tensor:
        self.sample()
        return t

    def __enter__(self) -> "ActivationMeter":
        self._base = self._peak = heap_in_use()
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self.sample()
        self._ctx.__exit__(*exc)
        return False
