"""``HollowNerfactoModel``: nerfstudio 1.1.5's nerfacto with a HollowNeRF saliency gate on its hash grid.

- After nerfacto builds its modules, the field's ``mlp_base`` (torch ``HashEncoding`` + ``MLP``) is replaced
  by :class:`GatedHashMLP`, which reads the same hash-table parameter through prunekit's
  :class:`~prunekit_hashgrid.encoding.HashGrid` (same layout, faster CPU backward), multiplies the features by
  the straight-through saliency gate m(x), and the field's density by m(x) as well.
- Loss: nerfacto's plus ``saliency_budget`` (augmented-Lagrangian penalty); an ``AFTER_TRAIN_ITERATION``
  callback does the dual ascent and, at ``saliency_freeze``, freezes the mask (projected onto the budget with
  the core ``select``); after that only points in kept cells are hash-encoded.
- Offline construction: nerfacto builds torchmetrics' LPIPS in ``populate_modules``, which downloads AlexNet
  weights; here it is built at first use (evaluation) and reported as NaN with one warning if that fails.
"""

from __future__ import annotations

import warnings
from unittest import mock

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.fields.nerfacto_field import NerfactoField
from nerfstudio.models.nerfacto import NerfactoModel

from ..encoding import HashGrid
from ..saliency import SaliencyBudget, SaliencyGrid
from ..train import enforce_budget


class LazyLPIPS(torch.nn.Module):
    """LPIPS built on first call; NaN (one warning) when it cannot be built offline. Not a submodule."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self._kwargs, self._metric = kwargs, []

    def forward(self, a, b):
        if not self._metric:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity as Lpips

                self._metric.append(Lpips(**self._kwargs))
            except Exception as e:  # noqa: BLE001 - offline: the AlexNet download fails in many ways
                warnings.warn(f"LPIPS unavailable ({type(e).__name__}); reporting NaN", stacklevel=2)
                self._metric.append(None)
        m = self._metric[0]
        return torch.tensor(float("nan")) if m is None else m.to(a.device)(a, b)


class GatedHashMLP(torch.nn.Module):
    """h = MLP(enc(x) * m(x)); remembers m(x) of the last call for the density gate."""

    def __init__(self, encoder, mlp, saliency: SaliencyGrid):
        super().__init__()
        self.grid = HashGrid.from_nerfstudio(encoder)
        self.mlp, self.saliency = mlp, saliency
        self.frozen = False
        self.last_gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.saliency(x, hard=True)
        if self.frozen:  # only points in kept cells read the table
            keep = m > 0
            feats = x.new_zeros(x.shape[0], self.grid.out_dim)
            if bool(keep.any()):
                feats = feats.index_put((keep.nonzero().flatten(),), self.grid(x[keep]).to(x.dtype))
        else:
            feats = self.grid(x) * m[:, None]
        self.last_gate = m
        return self.mlp(feats)


class HollowNerfactoField(NerfactoField):
    def get_density(self, ray_samples):
        density, base_mlp_out = super().get_density(ray_samples)
        m = self.mlp_base.last_gate
        return density * m.view(density.shape).to(density.dtype), base_mlp_out


class HollowNerfactoModel(NerfactoModel):
    def populate_modules(self):
        with mock.patch("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", LazyLPIPS):
            super().populate_modules()
        cfg = self.config
        base = self.field.mlp_base
        encoder, mlp = base.model[0], base.model[1]
        saliency = SaliencyGrid(cfg.saliency_res, cfg.saliency_init_logit)
        self.field.mlp_base = GatedHashMLP(encoder, mlp, saliency)
        self.field.__class__ = HollowNerfactoField
        self.saliency_budget = SaliencyBudget(cfg.saliency_target, cfg.saliency_budget_start, cfg.saliency_budget_end,
                                              cfg.saliency_rho, cfg.saliency_eta)
        self.saliency_step = 0

    @property
    def saliency(self) -> SaliencyGrid:
        return self.field.mlp_base.saliency

    def get_param_groups(self):
        groups = super().get_param_groups()
        logits = self.saliency.logits
        groups["fields"] = [p for p in groups["fields"] if p is not logits]
        groups["saliency"] = [logits]
        return groups

    def get_loss_dict(self, outputs, batch, metrics_dict=None):
        loss = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and not self.field.mlp_base.frozen:
            loss["saliency_budget"] = self.saliency_budget.penalty(self.saliency, self.saliency_step)
        return loss

    def saliency_after_step(self, step: int) -> None:
        self.saliency_step = step + 1
        base = self.field.mlp_base
        if base.frozen:
            return
        self.saliency_budget.update(self.saliency, step)
        if step + 1 >= self.config.saliency_freeze:
            enforce_budget(self.saliency, self.config.saliency_target)
            self.saliency.logits.requires_grad_(False)
            base.frozen = True

    def get_training_callbacks(self, training_callback_attributes):
        callbacks = super().get_training_callbacks(training_callback_attributes)
        callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                          update_every_num_iters=1, func=self.saliency_after_step))
        return callbacks

    def get_metrics_dict(self, outputs, batch):
        metrics = super().get_metrics_dict(outputs, batch)
        if self.training:
            metrics["saliency_kept"] = float(self.saliency.kept().float().mean())
            metrics["saliency_lambda"] = self.saliency_budget.enforcer.lam
        return metrics
