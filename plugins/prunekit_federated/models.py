"""Small CNNs with batch norm for MNIST / digits, optionally FedMef-style.

``SmallCNN``: conv(16) - norm - ReLU - maxpool - conv(32) - norm - ReLU - maxpool -
fc(64) - ReLU - fc(10), widths times the ``width`` option. Prunable tensors:
``conv1.weight``, ``conv2.weight``, ``fc1.weight``, ``fc2.weight``.

``norm="bn"``: BatchNorm2d after each conv (FedTiny, HideNseek, dense FedAvg).
``norm="nsconv"``: no BN; each conv standardises its *kept* weights per output channel
and scales by 1/sqrt(kept fan-in) with a learned gain,
w_hat = g_o * m * (w - mu_o) / (sigma_o * sqrt(n_o)), mu/sigma/n over the kept weights
of output channel o (scaled weight standardisation, Brock et al. arXiv 2101.08692,
restricted to the sparse support). This stands in for FedMef's normalised sparse
convolution (NSConv), whose exact formula is [unverified].
``act_keep < 1`` turns on scaled activation pruning (:mod:`.sap`) in training.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sap import sap_conv2d, sap_linear


class SparseConv2d(nn.Conv2d):
    def __init__(self, *a, standardize: bool = False, act_keep: float = 1.0, **kw):
        super().__init__(*a, **kw)
        self.standardize = standardize
        self.act_keep = act_keep
        self.register_buffer("mask", None, persistent=False)
        if standardize:
            self.gain = nn.Parameter(torch.ones(self.out_channels))

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        if not self.standardize:
            return w
        m = self.mask.view_as(w).to(w.dtype) if self.mask is not None else torch.ones_like(w)
        n = m.sum((1, 2, 3), keepdim=True).clamp_min(1.0)
        mu = (w * m).sum((1, 2, 3), keepdim=True) / n
        var = (((w - mu) * m) ** 2).sum((1, 2, 3), keepdim=True) / n
        return self.gain.view(-1, 1, 1, 1) * m * (w - mu) / torch.sqrt((var + 1e-5) * n)

    def forward(self, x):
        w = self.effective_weight()
        if self.act_keep < 1.0 and self.training and torch.is_grad_enabled():
            return sap_conv2d(x, w, self.bias, self.stride, self.padding, self.act_keep)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class SparseLinear(nn.Linear):
    def __init__(self, *a, act_keep: float = 1.0, **kw):
        super().__init__(*a, **kw)
        self.act_keep = act_keep

    def forward(self, x):
        if self.act_keep < 1.0 and self.training and torch.is_grad_enabled():
            return sap_linear(x, self.weight, self.bias, self.act_keep)
        return F.linear(x, self.weight, self.bias)


class SmallCNN(nn.Module):
    def __init__(self, image_size: int = 28, in_channels: int = 1, num_classes: int = 10,
                 channels: tuple[int, int] = (16, 32), hidden: int = 64, norm: str = "bn", act_keep: float = 1.0):
        super().__init__()
        if norm not in ("bn", "nsconv"):
            raise ValueError(f"norm must be 'bn' or 'nsconv', got {norm!r}")
        ns = norm == "nsconv"
        c1, c2 = channels
        # the first conv sees the data batch itself: never activation-pruned
        self.conv1 = SparseConv2d(in_channels, c1, 3, padding=1, bias=ns, standardize=ns)
        self.norm1 = nn.BatchNorm2d(c1) if not ns else nn.Identity()
        self.conv2 = SparseConv2d(c1, c2, 3, padding=1, bias=ns, standardize=ns, act_keep=act_keep)
        self.norm2 = nn.BatchNorm2d(c2) if not ns else nn.Identity()
        side = image_size // 4
        self.fc1 = SparseLinear(c2 * side * side, hidden, act_keep=act_keep)
        self.fc2 = SparseLinear(hidden, num_classes, act_keep=act_keep)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.norm2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    def set_masks(self, mask) -> None:
        """Hand keep-masks to standardising convs (they normalise over kept weights only)."""
        for name, mod in self.named_modules():
            if isinstance(mod, SparseConv2d) and mod.standardize:
                key = f"{name}.weight"
                mod.mask = mask[key].view_as(mod.weight) if (mask is not None and key in mask.groups) else None


def build_model(dataset: str, method: str, cfg) -> SmallCNN:
    """The model every node of a run builds (same names and shapes everywhere)."""
    size = 28 if dataset == "mnist" else 8
    w = int(getattr(cfg, "width", 1))
    shape = dict(image_size=size, channels=(16 * w, 32 * w), hidden=64 * w)
    if method == "fedmef":
        norm = getattr(cfg, "norm", "nsconv")
        keep = 1.0 - float(getattr(cfg, "activation_prune", 0.0))
        return SmallCNN(**shape, norm=norm, act_keep=keep)
    return SmallCNN(**shape)
