"""APTP prompt router: prompt embedding -> architecture predictor -> one of E learnable codes.

Following Ganjdanesh et al. (ICLR 2025, arXiv 2406.12042) and METHODS.md 6.2:

- architecture predictor: one linear map per width gate group and one for all depth gates, from
  the frozen prompt embedding to gate logits ``z``;
- codebook: ``E`` learnable logit vectors (orthogonal init);
- binarisation: Gumbel-sigmoid ``sigmoid((l + g + offset) / T)`` with logistic noise
  ``g = log u - log(1-u)`` in training (none in eval) and a straight-through hard threshold at 0.5
  (:func:`prunekit.straight_through_gate`); at least one unit per width group stays open;
- matching vectors: width bits times their block's depth bit, scaled by sqrt(1/group size),
  L2-normalised; similarity = cosine;
- assignment: in training Sinkhorn-Knopp optimal transport on the prompt/code similarities
  (eps = 0.05, 3 iterations, Cuturi 2013 / SwAV) so each batch spreads evenly over the codes; at
  inference the cosine argmax.
- eval gates: noise-free by default (threshold of ``l + offset``). ``eval_noise_seed=S`` (opt-in) follows the
  reference code (rezashkv/diffusion_pruning ``pdm/models/vq/quantizer.py``), whose deployed gates are a noise
  *sample*: its codes keep their last training sample and its prompt vectors use a fixed-seed sample. Here: one
  fixed logistic sample per code (seed ``2 S + 1``) and one shared by every prompt (seed ``2 S``, so a prompt's
  route does not depend on its batch); an approximation (the reference's sample is Gumbel, and per batch row).

Losses (:func:`resource_loss`, :func:`contrastive_loss`): ``R = |log(mean MAC ratio / p)|``;
contrastive = BCE between the row-softmaxes (T = 0.03) of the arch-vector similarity and the
prompt-embedding similarity matrices. Approximations: depth logits use the plain Gumbel-sigmoid
(the paper's softmax -> reverse-cumsum parameterisation is not reproduced), and the predictor is
also pulled to its Sinkhorn target by a cross-entropy (:func:`assignment_loss`, SwAV-style) so that
the inference-time argmax agrees with the training-time transport plan (not used with
``AptpConfig(paper_losses=True)``, which follows the reference code: see ``train.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from prunekit.gates import straight_through_gate
from torch import nn

from .gating import GateLayout


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Transport plan ``Q`` (B x E, rows sum to 1) with column mass pushed toward B/E each."""
    q = torch.exp((scores - scores.max()) / eps).T  # E x B
    q = q / q.sum()
    e, b = q.shape
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / e
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


class AptpRouter(nn.Module):
    def __init__(self, layout: GateLayout, emb_dim: int, n_codes: int = 4, temperature: float = 0.4,
                 offset: float = 3.0, sinkhorn_eps: float = 0.05, sinkhorn_iters: int = 3,
                 eval_noise_seed: int | None = None):
        super().__init__()
        self.layout, self.n_codes = layout, n_codes
        self.temperature, self.offset = temperature, offset
        self.sinkhorn_eps, self.sinkhorn_iters = sinkhorn_eps, sinkhorn_iters
        self.eval_noise_seed = eval_noise_seed
        sizes = [g.size for g in layout.width] + [len(layout.depth)]
        self.sizes = [s for s in sizes if s > 0]
        self.predictor = nn.ModuleList(nn.Linear(emb_dim, s) for s in self.sizes)
        self.codes = nn.Parameter(torch.empty(n_codes, layout.dim))
        nn.init.orthogonal_(self.codes)
        scale = torch.cat([torch.full((g.size,), 1.0 / math.sqrt(g.size)) for g in layout.groups])
        self.register_buffer("match_scale", scale, persistent=False)

    def config(self) -> dict:
        return {"emb_dim": self.predictor[0].in_features, "n_codes": self.n_codes, "temperature": self.temperature,
                "offset": self.offset, "sinkhorn_eps": self.sinkhorn_eps, "sinkhorn_iters": self.sinkhorn_iters,
                "eval_noise_seed": self.eval_noise_seed}

    def predict(self, emb: torch.Tensor) -> torch.Tensor:
        """Gate logits per prompt, ``(B, layout.dim)``."""
        return torch.cat([lin(emb) for lin in self.predictor], dim=-1)

    def fixed_noise(self, rows: int, salt: int) -> torch.Tensor | None:
        """The eval-time logistic noise ``(rows, dim)`` of ``eval_noise_seed`` (None without it or in training)."""
        if self.training or self.eval_noise_seed is None:
            return None
        g = torch.Generator().manual_seed(2 * self.eval_noise_seed + salt)
        u = torch.rand((rows, self.layout.dim), generator=g).clamp(1e-6, 1 - 1e-6)
        return (torch.log(u) - torch.log1p(-u)).to(self.codes.device)

    def binarise(self, logits: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Hard 0/1 gates (straight-through); logistic noise in training mode, ``noise`` (if given) in eval."""
        x = logits + self.offset
        if self.training:
            u = torch.rand_like(x).clamp(1e-6, 1 - 1e-6)
            x = x + torch.log(u) - torch.log1p(-u)
        elif noise is not None:
            x = x + noise
        bits = straight_through_gate(x, 0.5, self.temperature)
        parts = []
        for g in self.layout.width:  # keep the strongest unit of every width group open
            b, lg = bits[..., g.offset : g.offset + g.size], x[..., g.offset : g.offset + g.size]
            top = F.one_hot(lg.argmax(-1), g.size).to(b.dtype)
            parts.append(b + (torch.maximum(b, top) - b).detach())
        parts.append(bits[..., sum(g.size for g in self.layout.width):])  # depth gates
        return torch.cat(parts, dim=-1)

    def match_vectors(self, bits: torch.Tensor) -> torch.Tensor:
        parts = self.layout.split(bits)
        out = []
        for g in self.layout.groups:
            v = parts[g.name]
            if g.kind != "depth" and g.parent is not None:
                v = v * parts[f"{g.parent}:depth"]
            out.append(v)
        return F.normalize(torch.cat(out, dim=-1) * self.match_scale, dim=-1)

    def code_gates(self) -> torch.Tensor:
        """Hard gates of every code ``(E, dim)`` (noisy in training mode; see ``eval_noise_seed``)."""
        return self.binarise(self.codes, self.fixed_noise(self.n_codes, 1))

    def similarities(self, emb: torch.Tensor, code_bits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine similarities prompt x code, the prompts' own arch bits)."""
        bits = self.binarise(self.predict(emb), self.fixed_noise(1, 0))
        codes = self.code_gates() if code_bits is None else code_bits
        return self.match_vectors(bits) @ self.match_vectors(codes).T, bits

    @torch.no_grad()
    def route(self, emb: torch.Tensor) -> torch.Tensor:
        """Inference routing: the cosine-argmax code per prompt (noise-free)."""
        was = self.training
        self.eval()
        try:
            sims, _ = self.similarities(emb)
        finally:
            self.train(was)
        return sims.argmax(-1)

    def forward(self, emb: torch.Tensor, quantise: bool = True) -> dict[str, torch.Tensor]:
        """Training-time routing: gates per prompt and what the losses need."""
        code_bits = self.code_gates()
        sims, bits = self.similarities(emb, code_bits)
        if not quantise:
            return {"gates": bits, "bits": bits, "sims": sims, "index": sims.argmax(-1), "plan": None}
        plan = sinkhorn(sims.detach(), self.sinkhorn_eps, self.sinkhorn_iters) if self.training else None
        index = (plan if plan is not None else sims).argmax(-1)
        return {"gates": code_bits[index], "bits": bits, "sims": sims, "index": index, "plan": plan,
                "code_bits": code_bits}


def resource_loss(mac_ratios: torch.Tensor, target: float) -> torch.Tensor:
    """``|log(mean(ratio) / p)|``."""
    return torch.log(mac_ratios.mean() / target).abs()


def contrastive_loss(arch: torch.Tensor, emb: torch.Tensor, temperature: float = 0.03) -> torch.Tensor:
    """BCE between row-softmaxes of arch-vector and prompt-embedding cosine similarities."""
    a = F.normalize(arch, dim=-1)
    e = F.normalize(emb, dim=-1)
    pa = torch.softmax(a @ a.T / temperature, dim=-1)
    pe = torch.softmax(e @ e.T / temperature, dim=-1)
    return F.binary_cross_entropy(pa.clamp(1e-6, 1 - 1e-6), pe.detach())


def assignment_loss(sims: torch.Tensor, plan: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Cross-entropy of softmax(sims / T) against the Sinkhorn plan (SwAV-style swapped prediction)."""
    return -(plan * torch.log_softmax(sims / temperature, dim=-1)).sum(-1).mean()
