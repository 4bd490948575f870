"""``PrunedSplatfactoModel``: nerfstudio 1.1.5's splatfacto with prunekit pruning during training.

- Pruning: splatfacto's gsplat ``DefaultStrategy`` is wrapped in
  :class:`SplatfactoPruneStrategy` (a :class:`prunekit_splat.strategy.PruneStrategy`), which
  splatfacto already drives from its ``AFTER_TRAIN_ITERATION`` training callback: at each prune
  step, after the base strategy's densify/cull, the scorer ranks the current Gaussians and
  ``gsplat.strategy.ops.remove`` slices ``gauss_params``, their Adam states and the strategy's
  per-Gaussian running state together, so the optimisers stay consistent.
- Views: view-based scorers (radsplat, lightgaussian, hits) render blending statistics from
  the training cameras of the pipeline's data manager (nerfstudio ``Cameras``: OpenGL
  camera-to-world, converted to OpenCV world-to-camera as splatfacto's ``get_viewmat`` does;
  lens distortion ignored; perspective cameras only), with prunekit's renderer (gsplat on CUDA,
  the PyTorch reference renderer otherwise).
- SUNDAE compensation (config ``compensation``): a :class:`CompensationNet` submodule (so its
  weights are in the checkpoint as ``_model.compensation.*``, which prunekit's checkpoint
  reader attaches to the scene for ``prunekit eval``). From ``compensation_start()`` on,
  ``get_outputs`` returns ``net(rgb)`` (clamped to [0, 1] outside training), so splatfacto's
  own loss trains the net and the Gaussians in one backward pass; optimiser group
  ``compensation`` (Adam 1e-3, SUNDAE's rate).
- Offline construction: splatfacto builds torchmetrics' LPIPS in ``populate_modules``, which
  downloads AlexNet weights. Here it is replaced by :class:`LazyLPIPS`, built at its first use
  (evaluation); if that fails (no network, no cached weights) LPIPS is reported as NaN with one
  warning. LPIPS weights are therefore not part of this model's checkpoints.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import torch
from nerfstudio.models.splatfacto import SplatfactoModel

import prunekit

from ..cameras import Camera, intrinsics, viewmat_from_c2w
from ..compensation import seeded_net
from ..strategy import PruneStrategy

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


class LazyLPIPS(torch.nn.Module):
    """torchmetrics ``LearnedPerceptualImagePatchSimilarity`` built on first call (not a submodule,
    so it adds nothing to the state dict); NaN with one warning when it cannot be built."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self._kwargs = kwargs
        self._metric: list = []  # [metric] once built, [None] once it failed
        self.error: str | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self._metric:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._metric.append(LearnedPerceptualImagePatchSimilarity(**self._kwargs))
            except Exception as e:  # noqa: BLE001 - offline: the AlexNet download fails in many ways
                self.error = f"{type(e).__name__}: {e}".splitlines()[0]
                self._metric.append(None)
                warnings.warn(f"LPIPS unavailable ({self.error}); reporting NaN", stacklevel=2)
        metric = self._metric[0]
        if metric is None:
            return torch.tensor(float("nan"))
        return metric.to(a.device)(a, b)


def train_cameras(pipeline) -> list[Camera]:
    """The data manager's training cameras as prunekit :class:`Camera` objects."""
    return cameras_from_nerfstudio(pipeline.datamanager.train_dataset.cameras)


def cameras_from_nerfstudio(cameras) -> list[Camera]:
    """nerfstudio ``Cameras`` (c2w [N,3,4] OpenGL axes, fx/fy/cx/cy/width/height [N,1]) -> Cameras."""
    from nerfstudio.cameras.cameras import CameraType

    types = cameras.camera_type.reshape(-1).tolist()
    if any(t != CameraType.PERSPECTIVE.value for t in types):
        bad = sorted({CameraType(t).name for t in types if t != CameraType.PERSPECTIVE.value})
        raise ValueError(f"view-based pruning scores need perspective cameras; the training set has {', '.join(bad)}")
    c2w = cameras.camera_to_worlds.detach().cpu().float()
    f = [cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height]
    fx, fy, cx, cy, w, h = (t.detach().cpu().reshape(-1) for t in f)
    return [Camera(viewmat_from_c2w(c2w[i, :3, :3] @ _GL_TO_CV, c2w[i, :3, 3]),
                   intrinsics(float(fx[i]), float(fy[i]), float(cx[i]), float(cy[i])),
                   int(w[i]), int(h[i]), name=f"train_{i}") for i in range(c2w.shape[0])]


@dataclass
class SplatfactoPruneStrategy(PruneStrategy):
    """:class:`PruneStrategy` with splatfacto's extra needs: the ``absgrad`` flag of the wrapped
    strategy (read by splatfacto's ``get_outputs``) and RadSplat-style threshold steps
    (``threshold``: at each of ``threshold_steps`` remove Gaussians scoring below it)."""

    threshold: float | None = None
    threshold_steps: tuple = ()

    @property
    def absgrad(self) -> bool:
        return bool(getattr(self.base, "absgrad", False))

    def step_post_backward(self, params, optimizers, state, step, info, packed: bool = False,
                           lr: float | None = None) -> None:
        super().step_post_backward(params, optimizers, state, step, info, packed=packed, lr=lr)
        if self.threshold is not None and step in self.threshold_steps:
            self.prune(params, optimizers, state, prunekit.Budget(threshold=self.threshold), step=step)


class PrunedSplatfactoModel(SplatfactoModel):
    """Splatfacto whose strategy also prunes on the config's schedule (see module docstring)."""

    def populate_modules(self) -> None:
        import torchmetrics.image.lpip as lpip_module

        real = lpip_module.LearnedPerceptualImagePatchSimilarity
        lpip_module.LearnedPerceptualImagePatchSimilarity = LazyLPIPS  # splatfacto imports it inside this call
        try:
            super().populate_modules()
        finally:
            lpip_module.LearnedPerceptualImagePatchSimilarity = real
        cfg = self.config
        by_threshold = cfg.prune_threshold is not None
        self.strategy = SplatfactoPruneStrategy(
            base=self.strategy, scorer=cfg.prune_scorer, scorer_options=cfg.scorer_options(),
            schedule=cfg.prune_schedule(), score_resolution=cfg.prune_score_resolution,
            threshold=cfg.prune_threshold, threshold_steps=tuple(cfg.prune_steps) if by_threshold else (),
            verbose=True)
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self.compensation = seeded_net(4, cfg.compensation_channels, 0) if cfg.compensation else None

    def get_param_groups(self):
        groups = super().get_param_groups()
        if self.compensation is not None:
            groups["compensation"] = list(self.compensation.parameters())
        return groups

    def get_outputs(self, camera):
        return self.compensate(super().get_outputs(camera))

    def compensate(self, outputs: dict) -> dict:
        """``outputs["rgb"]`` through the compensation net once it is active (see module docstring)."""
        if self.compensation is None or self.step < self.config.compensation_start() or "rgb" not in outputs:
            return outputs
        rgb = self.compensation(outputs["rgb"])
        return dict(outputs, rgb=rgb if self.training else rgb.clamp(0, 1))

    def get_training_callbacks(self, training_callback_attributes):
        pipeline = training_callback_attributes.pipeline
        if pipeline is not None:
            self.strategy.cameras = partial(train_cameras, pipeline)
        return super().get_training_callbacks(training_callback_attributes)

    def prune_events(self) -> list[dict]:
        """What was pruned so far: ``{"step", "scorer", "budget", "before", "after", "seconds"}`` each."""
        return list(self.strategy_state.get("prunekit", []))
