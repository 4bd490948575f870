"""Config of ``nerfacto-hollow`` (nerfstudio 1.1.5): nerfacto with a HollowNeRF saliency grid.

The main field's hash encoding uses the torch implementation (tcnn fuses encoding and MLP, so its
table is not addressable, and its layout differs), gated by a ``saliency_res``^3 saliency grid over
nerfacto's contracted [0,1]^3 space; the kept-cell fraction is driven to ``saliency_target`` by the core
augmented-Lagrangian enforcer (target ramped by the core cubic schedule from ``saliency_budget_start`` to
``saliency_budget_end``); at ``saliency_freeze`` the mask is frozen (and projected onto the budget) and hash
lookups in pruned cells stop. The proposal networks keep their own (dense) grids.

Trainer: nerfacto 1.1.5's, except the non-parallel ``VanillaDataManager`` (no worker processes),
``mixed_precision=False`` (the torch hash grid runs on CPU too) and a ``saliency`` optimiser group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.nerfacto import NerfactoModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

DESCRIPTION = ("nerfacto + HollowNeRF: a trainable saliency grid gates the (torch) hash grid, budgeted by "
               "ADMM; pruned cells skip hash lookups after the freeze step [prunekit]")


def build_model(config, **kwargs):
    """``_target`` of the config: import the model class only when a model is built."""
    from .model import HollowNerfactoModel

    return HollowNerfactoModel(config, **kwargs)


def _global_adam():
    from prunekit_hashgrid.saliency import GlobalAdam

    return GlobalAdam


@dataclass
class GlobalAdamOptimizerConfig(OptimizerConfig):
    """prunekit's GlobalAdam (one second moment per tensor) for the saliency logits."""

    _target: Type = field(default_factory=_global_adam)
    lr: float = 5e-2
    eps: float = 1e-30


@dataclass
class HollowNerfactoModelConfig(NerfactoModelConfig):
    _target: Type = field(default_factory=lambda: build_model)
    implementation: str = "torch"
    """hash-grid implementation: must be torch (the saliency gate needs an addressable table)"""
    saliency_res: int = 64
    """saliency grid resolution G (G^3 cells over the contracted unit cube)"""
    saliency_target: float = 0.1
    """fraction of saliency cells kept (the budget C)"""
    saliency_init_logit: float = 0.5
    """initial gate logits (spread +-0.25)"""
    saliency_rho: float = 20.0
    """augmented-Lagrangian quadratic weight"""
    saliency_eta: float = 0.01
    """dual ascent step"""
    saliency_budget_start: int = 1000
    """step at which the budget starts (target 1.0, ramped down)"""
    saliency_budget_end: int = 15000
    """step at which the target reaches saliency_target"""
    saliency_freeze: int = 24000
    """step at which the mask is frozen and pruned cells stop hash lookups"""

    def __post_init__(self) -> None:
        if self.implementation != "torch":
            raise ValueError("nerfacto-hollow needs implementation='torch' (tcnn fuses encoding and MLP)")
        if not 0.0 < self.saliency_target <= 1.0:
            raise ValueError(f"saliency_target must be in (0, 1], got {self.saliency_target}")
        if not self.saliency_budget_start < self.saliency_budget_end <= self.saliency_freeze:
            raise ValueError("need saliency_budget_start < saliency_budget_end <= saliency_freeze")


def _adam(lr: float, final: float, steps: int) -> dict:
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=final, max_steps=steps)}


def trainer_config() -> TrainerConfig:
    return TrainerConfig(
        method_name="nerfacto-hollow",
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=NerfstudioDataParserConfig(), train_num_rays_per_batch=4096,
                                                 eval_num_rays_per_batch=4096),
            model=HollowNerfactoModelConfig(eval_num_rays_per_chunk=1 << 15, average_init_density=0.01,
                                            camera_optimizer=CameraOptimizerConfig(mode="SO3xR3")),
        ),
        optimizers={
            "proposal_networks": _adam(1e-2, 1e-4, 200000),
            "fields": _adam(1e-2, 1e-4, 200000),
            "camera_opt": _adam(1e-3, 1e-4, 5000),
            "saliency": {"optimizer": GlobalAdamOptimizerConfig(), "scheduler": None},
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )
