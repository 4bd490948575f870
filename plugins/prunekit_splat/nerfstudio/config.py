"""Config of the pruning splatfacto methods (nerfstudio 1.1.5).

:class:`PrunedSplatfactoModelConfig` is splatfacto's model config plus a pruning schedule run by
:class:`prunekit_splat.strategy.PruneStrategy` inside splatfacto's own strategy hook (after
gsplat's ``DefaultStrategy`` densify/cull step of the same iteration):

- ``prune_threshold`` None: at ``prune_steps[i]`` keep ``1 - prune_fraction * prune_decay**i`` of
  the current Gaussians by the scorer's ranking (core ``Schedule.decay``; one step = one-shot);
- ``prune_threshold`` t: at every prune step remove the Gaussians whose score is below t
  (RadSplat's rule on the max blending weight).

The model class is imported only when ``setup()`` builds a model (``_target`` is the lazy
:func:`build_model`), so loading the entry points costs no prunekit import beyond this module.
The trainer configs copy nerfstudio 1.1.5's ``splatfacto`` method (optimisers, 30k steps,
``FullImageDatamanager``, the non-parallel image data manager that splatfacto uses), except that
the learning-rate schedules yield Python floats (:class:`FloatExponentialDecayScheduler`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple, Type

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig


def build_model(config, **kwargs):
    """``_target`` of the config: import the model class only when a model is built."""
    from .model import PrunedSplatfactoModel

    return PrunedSplatfactoModel(config, **kwargs)


@dataclass
class PrunedSplatfactoModelConfig(SplatfactoModelConfig):
    """Splatfacto with scheduled score-based pruning by a prunekit splat scorer."""

    _target: Type = field(default_factory=lambda: build_model)
    prune_scorer: str = "sundae"
    """prunekit splat scorer (plugin name): sundae, radsplat, lightgaussian, opacity, hits, random"""
    prune_scorer_options: Tuple[str, ...] = ()
    """scorer options as name=value, e.g. band_weight=0.5 (see `prunekit plugins <name>`)"""
    prune_steps: Tuple[int, ...] = (15000,)
    """training steps at which to prune"""
    prune_fraction: float = 0.9
    """fraction of the current Gaussians removed at the first prune step"""
    prune_decay: float = 1.0
    """step i removes prune_fraction * prune_decay**i of what is left"""
    prune_threshold: Optional[float] = None
    """if set, prune steps remove Gaussians whose score is below this instead"""
    prune_score_resolution: Optional[int] = None
    """long side (px) of the training views used for view-based scores; None: training resolution"""
    compensation: bool = False
    """SUNDAE neural compensation: an image-space UNet gain on every render, trained jointly with the
    Gaussians from the step after the first prune step (costs render time; see the README)"""
    compensation_channels: int = 16
    """width of the compensation UNet's first level (SUNDAE: 64)"""

    def compensation_start(self) -> int:
        """The step from which the compensation net is applied and trained."""
        return min(self.prune_steps) + 1 if self.prune_steps else 0

    def prune_schedule(self):
        """The core ``Schedule`` of a ratio run, or None in threshold mode."""
        import prunekit

        if self.prune_threshold is not None:
            return None
        return prunekit.Schedule.decay(self.prune_steps, self.prune_fraction, self.prune_decay)

    def scorer_options(self) -> dict:
        """``prune_scorer_options`` parsed into keyword arguments of the scorer's config.

        A scorer option ``antialiased`` (radsplat's) that is not given follows ``rasterize_mode``,
        so the blending weights are scored with the alpha the model is trained with."""
        import prunekit

        plugin = prunekit.load(self.prune_scorer)
        argv, given = [], set()
        for item in self.prune_scorer_options:
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or not name:
                raise ValueError(f"prune_scorer_options: {item!r} is not name=value")
            argv.append(f"--{name.replace('_', '-')}={value.strip()}")
            given.add(name)
        cfg, _ = prunekit.parse_options(plugin.config, argv)
        options = {} if cfg is None else dataclasses.asdict(cfg)
        if "antialiased" in options and "antialiased" not in given:
            options["antialiased"] = self.rasterize_mode == "antialiased"
        return options


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    """nerfstudio's exponential decay with Python-float rates. nerfstudio's own returns numpy
    scalars, which end up in the optimiser/scheduler state of every checkpoint; torch >= 2.6 loads
    checkpoints with ``weights_only=True`` by default and rejects them, so ns-export, ns-viewer,
    ns-eval and resuming fail (nerfstudio issue #3683), and so does prunekit's safe reader."""

    def get_scheduler(self, optimizer, lr_init):
        scheduler = super().get_scheduler(optimizer, lr_init)  # LambdaLR; its step 0 already set numpy rates
        scheduler.lr_lambdas = [lambda step, f=f: float(f(step)) for f in scheduler.lr_lambdas]
        scheduler._last_lr = [float(v) for v in scheduler._last_lr]
        for group in optimizer.param_groups:
            group["lr"] = float(group["lr"])
        return scheduler


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)


def _adam(lr: float, final: Optional[float] = None, **sched) -> dict:
    scheduler = None if final is None else FloatExponentialDecaySchedulerConfig(lr_final=final, max_steps=30000,
                                                                                 **sched)
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


def splatfacto_optimizers() -> dict:
    """nerfstudio 1.1.5 ``splatfacto``'s optimiser table (a test compares it with nerfstudio's)."""
    warm = dict(warmup_steps=1000, lr_pre_warmup=0)
    return {
        "means": _adam(1.6e-4, 1.6e-6),
        "features_dc": _adam(0.0025),
        "features_rest": _adam(0.0025 / 20),
        "opacities": _adam(0.05),
        "scales": _adam(0.005),
        "quats": _adam(0.001),
        "camera_opt": _adam(1e-4, 5e-7, **warm),
        "bilateral_grid": _adam(2e-3, 1e-4, **warm),
    }


def trainer_config(method_name: str, model: PrunedSplatfactoModelConfig) -> TrainerConfig:
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=30000,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True), cache_images_type="uint8"),
            model=model),
        optimizers={**splatfacto_optimizers(), "compensation": _adam(1e-3)},  # SUNDAE's net (if enabled): Adam 1e-3
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


#: method name -> (model config, one-line description)
METHODS = {
    "splatfacto-sundae": (
        PrunedSplatfactoModelConfig(prune_scorer="sundae", prune_steps=(15000,), prune_fraction=0.9),
        "Splatfacto + SUNDAE spectral pruning (graph high-pass of the centres, two-band keep), "
        "keeps 10% once densification stops [prunekit]"),
    "splatfacto-radsplat": (
        PrunedSplatfactoModelConfig(prune_scorer="radsplat", prune_steps=(16000, 24000), prune_threshold=0.01),
        "Splatfacto + RadSplat pruning: drop Gaussians whose max blending weight over the training "
        "views is < 0.01, at 16k and 24k [prunekit]"),
    "splatfacto-lightgaussian": (
        PrunedSplatfactoModelConfig(prune_scorer="lightgaussian", prune_steps=(16000, 24000), prune_fraction=0.5,
                                    prune_decay=0.8),
        "Splatfacto + LightGaussian global-significance pruning at 16k and 24k (50%, decay 0.8) [prunekit]"),
}
