"""Plugin specs for ``prunekit`` (entry points ``ld-pruner``, ``random-operator`` and ``aptp``).

This module imports only ``prunekit``: torch and diffusers are loaded when an operation runs.

``--keep R`` (or ``--keep-macs R``) on the command line is a fraction of the denoiser's
**MACs** per call by default (``--budget-over macs``): the scorer measures every operator's MACs and the
config turns the ratio into a cost budget ``R * total - fixed`` (fixed = parts that
cannot be removed). ``--budget-over count`` keeps a fraction of the removable operators
instead. ``--count N`` and ``--threshold T`` keep N operators / operators scoring >= T.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prunekit import Budget, Plugin, option
from prunekit.errors import UsageError


@dataclass
class OperatorBudgetConfig:
    budget_over: Literal["macs", "count"] = option(
        "macs", "what --keep is a fraction of: the denoiser's MACs per call, or the removable operators")
    keep_macs: float | None = option(
        None, "fraction of the denoiser's MACs per call to keep, in (0, 1] (instead of --keep; implies --budget-over macs)")
    # filled in by the scorer (not options): total MACs per call and the part no removal can touch
    _total_macs: float = field(default=0.0, repr=False)
    _fixed_macs: float = field(default=0.0, repr=False)

    def budget_option(self, given: Budget | None) -> Budget | None:
        """``--keep-macs R`` as the budget, when no ``--keep/--count/--threshold`` is ``given``."""
        if self.keep_macs is None:
            return given
        if given is not None:
            raise UsageError("give either --keep-macs or --keep/--count/--threshold, not both")
        if self.budget_over != "macs":
            raise UsageError("--keep-macs is a fraction of MACs: it cannot be combined with --budget-over count")
        try:
            return Budget(keep_ratio=self.keep_macs)
        except ValueError as e:
            raise UsageError(f"--keep-macs: {e}") from None

    def budget(self, budget: Budget) -> Budget:
        """Turn ``--keep R`` into a MAC budget (``R * total - fixed``) when ``budget_over == "macs"``."""
        if self.budget_over != "macs" or budget.kind != "keep_ratio" or not self._total_macs:
            return budget
        limit = budget.keep_ratio * self._total_macs - self._fixed_macs
        if limit < 0:
            raise UsageError(f"--keep {budget.keep_ratio:g}: the parts that cannot be removed already use "
                             f"{self._fixed_macs / self._total_macs:.3f} of the MACs")
        return Budget(cost=limit, scope=budget.scope, floor=budget.floor)


@dataclass
class LDPrunerConfig(OperatorBudgetConfig):
    pass


@dataclass
class RandomOperatorConfig(OperatorBudgetConfig):
    random_seed: int = option(0, "seed of the random operator scores")


LD_PRUNER = Plugin(
    name="ld-pruner",
    domain="diffusion",
    description="LD-Pruner: remove the denoiser operators (ResNet/attention/DiT blocks) whose bypass moves "
                "the final latents' mean and spread least",
    config=LDPrunerConfig,
    paper="Castells et al., LD-Pruner: Efficient Pruning of Latent Diffusion Models using Task-Agnostic "
          "Insights, CVPR 2024 EDGE workshop, arXiv 2404.11936",
    scorer="prunekit_diffusion.target:ld_pruner_scorer",
    target="prunekit_diffusion.target:TARGET",
    requires=("torch", "diffusers"),
    extra="diffusion",
)

RANDOM_OPERATOR = Plugin(
    name="random-operator",
    domain="diffusion",
    description="Baseline: remove random denoiser operators under the same MAC budget as LD-Pruner",
    config=RandomOperatorConfig,
    scorer="prunekit_diffusion.target:random_operator_scorer",
    target="prunekit_diffusion.target:TARGET",
    requires=("torch", "diffusers"),
    extra="diffusion",
)

APTP = Plugin(
    name="aptp",
    domain="diffusion",
    description="APTP: a prompt router picks one of K pruned architecture codes per prompt; each code is "
                "exported as its own sliced UNet (commands: prunekit aptp train|export|info)",
    paper="Ganjdanesh et al., Not All Prompts Are Made Equal: Prompt-based Pruning of Text-to-Image "
          "Diffusion Models, ICLR 2025, arXiv 2406.12042",
    commands={"aptp": "prunekit_diffusion.aptp.cli:app"},
    requires=("torch", "diffusers", "transformers"),
    extra="diffusion",
)
