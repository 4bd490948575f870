"""Options of the federated pruning plugins (torch- and flwr-free: imported by the plugin spec).

One dataclass per method; the CLI (``prunekit fed run``), the simulation helper and the
Flower ServerApp (via ``[tool.flwr.app.config]`` / ``context.run_config``) all build
their settings from these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from prunekit import option

METHODS = ("fedavg", "fedtiny", "fedmef", "hidenseek")
DATASETS = ("mnist", "digits")


@dataclass
class FedConfig:
    """Settings shared by every method (the dense FedAvg baseline uses only these)."""

    clients: int = option(10, "number of simulated clients (SuperNodes)")
    rounds: int = option(20, "federated rounds")
    sparsity: float = option(0.9, "fraction of conv/linear weights removed (0 for dense)")
    dataset: Literal["mnist", "digits"] = option("mnist", "real MNIST test set (shared data) or sklearn digits")
    data_dir: str = option("", "folder holding MNIST idx files (default: ../shared/data/mnist or $PRUNEKIT_DATA/mnist)")
    dirichlet_alpha: float = option(0.5, "Dirichlet concentration of the non-IID label split (smaller = more skewed)")
    test_fraction: float = option(0.2, "share of the data held out for the server's global evaluation")
    client_samples: int = option(0, "cap on each client's local training samples (0 = its whole partition)")
    local_epochs: int = option(1, "local epochs per round")
    batch_size: int = option(32, "local batch size")
    lr: float = option(0.05, "client SGD learning rate")
    momentum: float = option(0.9, "client SGD momentum (reset every round)")
    fraction_train: float = option(1.0, "fraction of nodes sampled per round")
    min_clients: int = option(2, "minimum nodes per round / available")
    timeout: float = option(600.0, "seconds the server waits for replies in a round")
    density_layout: Literal["erk", "uniform"] = option("erk", "per-layer density: Erdos-Renyi-Kernel or uniform")
    width: int = option(1, "width multiplier of the CNN: 16w and 32w conv channels, 64w hidden units")
    seed: int = option(0, "seed of the model, the masks and the data split")

    def __post_init__(self) -> None:
        if self.clients < 1 or self.rounds < 1:
            raise ValueError("clients and rounds must be >= 1")
        if not (0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.dirichlet_alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if not (0.0 < self.test_fraction < 1.0):
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.client_samples < 0:
            raise ValueError(f"client_samples must be >= 0, got {self.client_samples}")
        if self.local_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("local_epochs and batch_size must be >= 1 and lr > 0")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        if not (0.0 < self.fraction_train <= 1.0):
            raise ValueError(f"fraction_train must be in (0, 1], got {self.fraction_train}")

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    # flat key/value form carried by Flower ConfigRecords and run_config -----------------
    def to_record(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name.replace("_", "-")] = v
        return out

    @classmethod
    def from_record(cls, rec, **overrides) -> "FedConfig":
        """Build from a run_config / ConfigRecord (dash or underscore keys; unknown keys ignored)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in dict(rec).items():
            name = str(k).replace("-", "_")
            if name in names:
                kw[name] = _coerce(v, names[name].default)
        kw.update(overrides)
        return cls(**kw)


def _coerce(v: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")
    if isinstance(default, int) and not isinstance(default, bool):
        return int(v)
    if isinstance(default, float):
        return float(v)
    return v


@dataclass
class DynamicPruneConfig(FedConfig):
    """Server-side magnitude-prune / gradient-grow schedule shared by FedTiny and FedMef."""

    prune_every: int = option(2, "rounds between prune/grow steps (Delta T; paper 10)")
    prune_end: int = option(0, "last round with a prune/grow step (T_end; paper 300; 0 = 3/4 of the rounds)")
    regrow_alpha: float = option(0.2, "alpha of the cosine prune/grow fraction f(t) = alpha/2 (1 + cos(pi t / T_end))")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prune_every < 1 or self.prune_end < 0:
            raise ValueError("prune_every must be >= 1 and prune_end >= 0")
        if not (0.0 < self.regrow_alpha < 1.0):
            raise ValueError(f"regrow_alpha must be in (0, 1), got {self.regrow_alpha}")

    @property
    def t_end(self) -> int:
        return self.prune_end or max(1, (3 * self.rounds) // 4)


@dataclass
class FedTinyConfig(DynamicPruneConfig):
    """FedTiny (Huang et al., ICDCS 2023, arXiv 2212.01977)."""

    candidates: int = option(5, "candidate pruned models in adaptive BN selection (K)")
    bn_steps: int = option(10, "local BN-only steps per candidate in adaptive BN selection")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidates < 1 or self.bn_steps < 0:
            raise ValueError("candidates must be >= 1 and bn_steps >= 0")


@dataclass
class FedMefConfig(DynamicPruneConfig):
    """FedMef (Huang et al., CVPR 2024, arXiv 2403.14737)."""

    extrusion_lambda: float = option(0.01, "lambda of the budget-aware extrusion penalty lambda * ||w_low||^2")
    extrusion_rounds: int = option(0, "rounds before each prune step with extrusion on (0 = every round until T_end)")
    activation_prune: float = option(0.5, "gamma: fraction of saved conv/linear input activations dropped (0 = off)")
    norm: Literal["nsconv", "bn"] = option("nsconv", "normalised sparse conv without BN (paper) or conv + BN")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.extrusion_lambda < 0 or self.extrusion_rounds < 0:
            raise ValueError("extrusion_lambda and extrusion_rounds must be >= 0")
        if not (0.0 <= self.activation_prune < 1.0):
            raise ValueError(f"activation_prune must be in [0, 1), got {self.activation_prune}")


@dataclass
class HideNseekConfig(FedConfig):
    """HideNseek (Vallapuram et al., arXiv 2206.04385)."""

    synflow_iters: int = option(100, "SynFlow pruning iterations at initialisation (paper: 100)")
    score_lr: float = option(0.1, "client SGD learning rate of the sign scores (tuned with weight_scale=density)")
    score_init: float = option(0.02, "initial |score| of every kept weight (sign starts at +1)")
    weight_scale: Literal["density", "none"] = option(
        "density", "frozen weights divided by sqrt(layer density) (edge-popup's scaled init) or kept as initialised")
    local_epochs: int = option(3, "local epochs per round (HideNseek learns signs only: 3 converge faster than 1)")
    bn_calibration: bool = option(
        True, "after each vote, clients re-estimate BN running statistics under the voted signs "
              "(Flower evaluate phase; ours, not the paper's); off: average the clients' training statistics")

    vote: Literal["majority", "abstain", "mean-score"] = option(
        "majority", "sign aggregation: sample-weighted majority of the nodes' signs, a 2-bit "
                    "{flip, keep, abstain} vote where a node whose score shrank without flipping abstains, or "
                    "mean-score: nodes send their scores quantised to score_bits, the server broadcasts the "
                    "sample-weighted mean scores as every node's next starting scores (all ours, METHODS 9.3)")
    score_bits: int = option(8, "bits per kept weight of the quantised scores, both ways (vote=mean-score only)")

    vote_momentum: float = option(
        0.0, "server vote momentum beta: running tally T = beta T + (1 - beta) v of the normalised sign votes; "
             "a sign flips where sign * T < -vote_margin (0 = plain majority; ours)")
    vote_margin: float = option(0.0, "margin the running vote tally must cross against a sign to flip it (ours)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.vote_momentum < 1.0) or not (0.0 <= self.vote_margin < 1.0):
            raise ValueError("vote_momentum and vote_margin must be in [0, 1)")
        if self.vote not in ("majority", "abstain", "mean-score"):
            raise ValueError(f"vote must be 'majority', 'abstain' or 'mean-score', got {self.vote!r}")
        if not 1 <= self.score_bits <= 8:
            raise ValueError(f"score_bits must be in 1..8, got {self.score_bits}")
        if self.vote == "mean-score" and (self.vote_momentum or self.vote_margin):
            raise ValueError("vote_momentum and vote_margin apply to sign votes, not to vote=mean-score")
        if self.synflow_iters < 1 or self.score_lr <= 0 or self.score_init <= 0:
            raise ValueError("synflow_iters must be >= 1, score_lr and score_init > 0")
        if self.weight_scale not in ("density", "none"):
            raise ValueError(f"weight_scale must be 'density' or 'none', got {self.weight_scale!r}")


CONFIGS: dict[str, type[FedConfig]] = {
    "fedavg": FedConfig,
    "fedtiny": FedTinyConfig,
    "fedmef": FedMefConfig,
    "hidenseek": HideNseekConfig,
}


def config_for(method: str, rec=None, **overrides) -> FedConfig:
    """The method's config from a record (run_config / ConfigRecord) plus overrides."""
    if method not in CONFIGS:
        from prunekit.errors import UsageError

        raise UsageError(f"unknown federated method {method!r} (choose from {', '.join(METHODS)})")
    return CONFIGS[method].from_record(rec or {}, **overrides)
