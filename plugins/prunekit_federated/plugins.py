"""Plugin specs for federated pruning on Flower (imports only prunekit; heavy code by name)."""

from __future__ import annotations

from prunekit import Plugin

from .config import FedMefConfig, FedTinyConfig, HideNseekConfig

_HOOKS = {
    "client_app": "prunekit_federated.client_app:make_client_app",
    "server_app": "prunekit_federated.server_app:make_server_app",
    "simulate": "prunekit_federated.simulation:simulate",
}
# shared by the three specs; `prunekit fed run ...` is mounted from `commands`
_COMMON = dict(domain="federated", requires=("torch", "flwr"), extra="federated",
               commands={"fed": "prunekit_federated.cli:app"})

FEDTINY = Plugin(
    name="fedtiny",
    description="FedTiny: adaptive BN selection of a pruned candidate, then progressive magnitude-prune / "
                "top-k-gradient-grow on the server (Flower ClientApp/ServerApp)",
    config=FedTinyConfig,
    paper="Huang et al., Distributed Pruning Towards Tiny Neural Networks in Federated Learning, ICDCS 2023 "
          "(arXiv 2212.01977)",
    hooks=dict(_HOOKS),
    **_COMMON,
)

FEDMEF = Plugin(
    name="fedmef",
    description="FedMef: budget-aware extrusion of soon-pruned weights and scaled activation pruning on clients; "
                "server magnitude-prune / gradient-grow (Flower ClientApp/ServerApp)",
    config=FedMefConfig,
    paper="Huang et al., FedMef: Towards Memory-efficient Federated Dynamic Pruning, CVPR 2024 (arXiv 2403.14737)",
    hooks=dict(_HOOKS),
    **_COMMON,
)

HIDENSEEK = Plugin(
    name="hidenseek",
    description="HideNseek: server one-shot SynFlow pruning at init; clients learn a {-1,+1} sign supermask over "
                "frozen weights and send one bit per kept weight (opt-in, ours: b-bit scores averaged on the server, "
                "--vote mean-score) (Flower ClientApp/ServerApp)",
    config=HideNseekConfig,
    paper="Vallapuram et al., HideNseek: Federated Lottery Ticket via Server-side Pruning and Sign Supermask "
          "(arXiv 2206.04385)",
    hooks=dict(_HOOKS),
    **_COMMON,
)
