"""``PruneStrategy``: scheduled score-based pruning inside gsplat's training loop.

A gsplat-style strategy (dataclass with ``initialize_state``, ``check_sanity``,
``step_pre_backward``, ``step_post_backward``) that wraps a gsplat ``DefaultStrategy`` or
``MCMCStrategy`` (field ``base``; any object with the same surface works) and, at the steps of
a core :class:`prunekit.Schedule`, removes Gaussians:

1. the parameters are viewed as a :class:`GaussianScene` (detached);
2. a prunekit splat scorer chosen by plugin name (``opacity``, ``lightgaussian``, ``radsplat``,
   ``sundae``, ``hits``, ``random``, or any third-party one) scores them; view-based scorers
   render blending statistics from ``cameras`` (a list of :class:`Camera` or a callable
   returning one, e.g. the trainer's training views);
3. :func:`prunekit.select` keeps ``Schedule.step_keep(step)`` of the *current* Gaussians
   (plugin budget rules apply, e.g. SUNDAE's two-band rule);
4. ``gsplat.strategy.ops.remove`` slices every parameter, every Adam state tensor and the
   per-Gaussian running state, so the optimisers stay consistent.

Schedules: ``Schedule.one_shot(s, keep)``; ``Schedule.decay(steps, fraction, decay)``
(LightGaussian's in-training rounds, arXiv 2311.17245: round i removes
``fraction * decay**i`` of what is left); ``Schedule.cubic(...)`` (Zhu & Gupta ramp).

Host-strategy caveats (METHODS.md section 3.2):

- ``DefaultStrategy`` keeps densifying until ``refine_stop_iter``; prune steps inside that
  window are followed by regrowth (as LightGaussian's in-training schedule accepts). Its
  running state (``grad2d``, ``count``, ``radii``) is sliced with the Gaussians.
- ``MCMCStrategy`` never removes Gaussians and grows 5 % per refine up to ``cap_max``; its state
  holds the ``binoms`` table, which must not be sliced. Only per-Gaussian state tensors
  (first dimension N, not ``binoms``) go to ``ops.remove``, and after a prune the base's
  ``cap_max`` is lowered to the new count so relocation keeps the count fixed instead of
  regrowing to the old cap.

:meth:`PruneStrategy.prune_to_cap` prunes an MCMC output (or any parameters) to at most ``cap``
Gaussians after training, with the same scorer.

Parameter names: gsplat's ``means, quats, scales, opacities, sh0, shN`` or splatfacto's
``means, quats, scales, opacities, features_dc, features_rest``.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch

try:
    from gsplat.strategy import ops as _ops
    from gsplat.strategy.base import Strategy as _GsplatStrategy
except ImportError as e:  # pragma: no cover - exercised only without gsplat
    raise ImportError(
        "prunekit_splat.strategy needs gsplat (pip install gsplat==1.4.0, or prunekit[nerfstudio]); "
        f"importing it failed: {e}") from None

import prunekit

from .cameras import Camera
from .context import SplatContext
from .scene import GaussianScene

CameraSource = Union[Sequence[Camera], Callable[[], Sequence[Camera]], None]
#: state entries that are not per-Gaussian even when their first dimension happens to equal N
_NOT_PER_GAUSSIAN = frozenset({"binoms"})
_ALIASES = {"sh0": ("sh0", "features_dc"), "shN": ("shN", "features_rest")}


def params_to_scene(params, detach: bool = True) -> GaussianScene:
    """:class:`GaussianScene` view of gsplat/splatfacto parameters (sh0 [N,1,3] or [N,3])."""
    def get(name):
        for key in _ALIASES.get(name, (name,)):
            if key in params:
                return params[key].detach() if detach else params[key]
        return None

    means = get("means")
    n = means.shape[0]
    sh0 = get("sh0")
    if sh0 is None:
        raise KeyError("params need 'sh0' (gsplat) or 'features_dc' (splatfacto)")
    shN = get("shN")
    return GaussianScene(means=means, quats=get("quats"), scales=get("scales"),
                         opacities=get("opacities").reshape(n), sh0=sh0.reshape(n, 3),
                         shN=shN if shN is not None else torch.zeros(n, 0, 3, device=means.device))


class _NoViews(Sequence):
    """Stands in for the camera list when none was given: any use is a clear error."""

    def __init__(self, scorer: str):
        self.scorer = scorer

    def __len__(self):
        raise ValueError(f"scorer {self.scorer!r} renders the scene: give PruneStrategy cameras=[...] "
                         "(the training views) or a callable returning them")

    def __getitem__(self, i):
        return self.__len__()


def _accepted(fn, kwargs: dict) -> dict:
    """The entries of ``kwargs`` that ``fn`` takes by name."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def _per_gaussian_state(state: dict, n: int) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items()
            if isinstance(v, torch.Tensor) and k not in _NOT_PER_GAUSSIAN and v.dim() and v.shape[0] == n}


@dataclass
class PruneStrategy(_GsplatStrategy):
    """Wrap ``base`` (gsplat ``DefaultStrategy``/``MCMCStrategy``) and prune on ``schedule``.

    ``scorer``: a prunekit splat plugin name; ``scorer_options``: its config fields (e.g.
    ``{"band_weight": 0.5}`` for sundae). ``cameras``: views for view-based scorers (list or
    zero-argument callable); ``score_resolution`` rescales them to that long side for scoring
    (None: as given). ``schedule`` None means the wrapper only forwards to ``base``.
    """

    base: Any = None
    scorer: str = "opacity"
    scorer_options: dict = field(default_factory=dict)
    schedule: prunekit.Schedule | None = None
    cameras: CameraSource = None
    score_resolution: int | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        self._plugin = prunekit.load(self.scorer)  # fails early with the registry's reason
        if self._plugin.domain != "splat":
            raise ValueError(f"scorer {self.scorer!r} is a {self._plugin.domain!r} plugin, not a splat scorer")
        self._score_fn = self._plugin.get_scorer()
        self._config = self._plugin.make_config(**self.scorer_options)

    # ------------------------------------------------------------------ gsplat surface
    def initialize_state(self, **kwargs) -> dict[str, Any]:
        """The base's state plus ``state["prunekit"]``: a list of prune events (dicts).

        Keyword arguments the base does not take are dropped (``DefaultStrategy`` takes
        ``scene_scale``, ``MCMCStrategy`` nothing), so one call serves either base.
        """
        state = self.base.initialize_state(**_accepted(self.base.initialize_state, kwargs)) if self.base else {}
        state["prunekit"] = []
        return state

    def check_sanity(self, params, optimizers) -> None:
        if self.base is not None:
            self.base.check_sanity(params, optimizers)
        else:
            super().check_sanity(params, optimizers)
        for key in ("means", "quats", "scales", "opacities"):
            assert key in params, f"{key} is required in params but missing."

    def step_pre_backward(self, params, optimizers, state, step, info) -> None:
        if self.base is not None:
            self.base.step_pre_backward(params, optimizers, state, step, info)

    def step_post_backward(self, params, optimizers, state, step, info, packed: bool = False,
                           lr: float | None = None) -> None:
        """Run the base's post-backward step (densify/relocate), then prune if ``step`` is scheduled.

        ``lr`` (the means' learning rate, needed by ``MCMCStrategy``) defaults to the current
        rate of ``optimizers["means"]``; ``packed`` goes to bases that take it.
        """
        if self.base is not None:
            lr = optimizers["means"].param_groups[0]["lr"] if lr is None else lr
            kw = _accepted(self.base.step_post_backward, {"packed": packed, "lr": lr})
            self.base.step_post_backward(params, optimizers, state, step, info, **kw)
        if self.schedule is not None and self.schedule.is_prune_step(step):
            keep = self.schedule.step_keep(step)
            self.prune(params, optimizers, state, prunekit.Budget(keep_ratio=keep), step=step)

    # ------------------------------------------------------------------ pruning
    def views(self) -> list[Camera]:
        cams = self.cameras() if callable(self.cameras) else self.cameras
        cams = list(cams or [])
        if self.score_resolution:
            cams = [c.scaled(self.score_resolution / max(c.width, c.height)) for c in cams]
        return cams

    def score(self, params) -> prunekit.Scores:
        """Scores of the current Gaussians (higher = keep) from the configured scorer."""
        scene = params_to_scene(params)
        cams = self.views()
        return self._score_fn(scene, SplatContext(scene, cams or _NoViews(self.scorer)), self._config)

    @torch.no_grad()
    def prune(self, params, optimizers, state: dict | None, budget: prunekit.Budget,
              step: int | None = None) -> int:
        """Score, select under ``budget`` and remove the rest in place; returns the number removed."""
        t0 = time.perf_counter()
        n = len(params["means"])
        if n == 0:
            return 0
        if hasattr(self._config, "budget"):
            budget = self._config.budget(budget)  # e.g. SUNDAE's two-band keep rule
        keep = prunekit.select(self.score(params), budget).only.to(params["means"].device)
        removed = int((~keep).sum())
        if removed:
            state = state if state is not None else {}
            sliced = _per_gaussian_state(state, n)
            _ops.remove(params, optimizers, sliced, ~keep)
            state.update(sliced)
            if hasattr(self.base, "cap_max"):  # MCMC: relocate within the new count, do not regrow
                self.base.cap_max = min(int(self.base.cap_max), n - removed)
        event = {"step": step, "scorer": self.scorer, "budget": budget.describe(), "before": n,
                 "after": n - removed, "seconds": time.perf_counter() - t0}
        if state is not None and isinstance(state.get("prunekit"), list):
            state["prunekit"].append(event)
        if self.verbose:
            print(f"Step {step}: prunekit {self.scorer} kept {n - removed} of {n} Gaussians.")
        return removed

    def prune_to_cap(self, params, optimizers, cap: int, state: dict | None = None,
                     scorer: str | None = None, **scorer_options) -> int:
        """Prune to at most ``cap`` Gaussians (e.g. an MCMC result); returns the number removed.

        ``scorer``/``scorer_options`` override the strategy's scorer for this call.
        """
        if cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        if len(params["means"]) <= cap:
            return 0
        s = self if scorer is None else PruneStrategy(
            base=self.base, scorer=scorer, scorer_options=scorer_options, cameras=self.cameras,
            score_resolution=self.score_resolution, verbose=self.verbose)
        return s.prune(params, optimizers, state, prunekit.Budget(keep_count=int(cap)))
