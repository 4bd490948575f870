"""prunekit_federated: federated pruning as Flower apps (Message API, Flower >= 1.42).

Methods (each a ``prunekit.plugins`` entry; masks and scores through the core):

- ``fedtiny`` — Huang et al., ICDCS 2023 (arXiv 2212.01977): adaptive BN selection of a
  pruned candidate, then progressive magnitude-prune / top-k-gradient-grow.
- ``fedmef`` — Huang et al., CVPR 2024 (arXiv 2403.14737): budget-aware extrusion and
  scaled activation pruning on clients; server prune/grow as FedTiny.
- ``hidenseek`` — Vallapuram et al. (arXiv 2206.04385): server SynFlow pruning at init,
  clients learn a {-1,+1} sign supermask, one bit per kept weight.
- ``fedavg`` — the dense baseline in the same harness.

Modules: :mod:`.client_app` / :mod:`.server_app` (the Flower apps, ``app`` objects for
``flwr run``), :mod:`.strategy` (aggregation, validation, byte accounting),
:mod:`.transport` (sparse records), :mod:`.masks`, :mod:`.synflow`, :mod:`.sap`,
:mod:`.training`, :mod:`.data`, :mod:`.models`, :mod:`.simulation`, :mod:`.procs`
(no process left behind), :mod:`.cli`.
This file imports nothing heavy.
"""
