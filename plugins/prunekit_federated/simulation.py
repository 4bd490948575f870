"""Run a method in Flower's simulation engine (``flwr.simulation.run_simulation``, Ray).

Sets Flower/Ray quiet-offline variables (no telemetry, no update check, no Ray usage
stats; Ray workers at the caller's priority) unless already set. Returns the
ServerApp's run summary. Every process the run started (Ray's gcs_server, raylet and
workers) is gone when it returns (:class:`~.procs.ChildWatch`).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .config import FedConfig, config_for
from .procs import ChildWatch

QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0",
             "RAY_DEDUP_LOGS": "0",
             # Ray starts workers 15 nice levels below the caller; the clients *are* the work here
             "RAY_worker_niceness": "0"}


def quiet_env() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="flwr-home-"))


def simulate(method: str, cfg: FedConfig | None = None, *, faults: dict[int, str] | None = None,
             num_cpus: int | None = None, client_cpus: float = 1.0, verbose: bool = False,
             runs: list[tuple[str, FedConfig]] | None = None, **overrides) -> dict[str, Any]:
    """Run ``method`` with ``cfg.clients`` virtual SuperNodes on the Ray backend.

    With ``runs=[(method, cfg), ...]`` every run shares one simulation (same nodes,
    one Ray start-up; all cfgs must agree on ``clients``); the result maps
    ``"<index>:<method>"`` to each run's summary.
    """
    quiet_env()
    import torch

    from flwr.simulation import run_simulation

    from .client_app import make_client_app
    from .server_app import make_server_app

    cfg = cfg or (runs[0][1] if runs else config_for(method, {}, **overrides))
    if runs and len({c.clients for _, c in runs}) != 1:
        raise ValueError("all runs of one simulation need the same number of clients")
    results: dict[str, Any] = {}
    init_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose}
    init_args["num_cpus"] = int(num_cpus or min(os.cpu_count() or 1, 4))
    os.environ.setdefault("PRUNEKIT_FED_THREADS", "1")  # inherited by the Ray workers
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    watch = ChildWatch()
    try:
        with watch:
            run_simulation(
                server_app=make_server_app(cfg, method, results, runs=runs),
                client_app=make_client_app(faults),
                num_supernodes=cfg.clients,
                backend_name="ray",
                backend_config={"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
                                "init_args": init_args},
                verbose_logging=verbose,
            )
    finally:
        watch.reap()  # Ray workers outlive ray.shutdown() for a while; end them by pid
    if not results:
        raise RuntimeError(f"the {method} simulation ended without a result (see the Flower log above)")
    return results
