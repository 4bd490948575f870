"""``prunekit fed run METHOD --clients N --rounds R --sparsity S`` (typer).

Mounted by the core CLI as the ``fed`` group (``app.add_typer(fed_app, name="fed")``);
also ``python -m prunekit_federated run ...``. Runs the Flower simulation engine (Ray)
and prints one line per round; ``--json PATH`` writes the full summary atomically.
Method options (see ``prunekit plugins show fedtiny``) follow as ``--name value``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prunekit.errors import PrunekitError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Federated pruning on Flower (FedTiny, FedMef, HideNseek, dense FedAvg).")

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _main() -> None:
    """Federated pruning on Flower."""


@app.command(context_settings=EXTRA)
def run(
    ctx: typer.Context,
    method: str = typer.Argument(..., help="fedtiny | fedmef | hidenseek | fedavg (dense baseline)"),
    clients: int = typer.Option(10, "--clients", help="Number of simulated clients."),
    rounds: int = typer.Option(20, "--rounds", help="Federated rounds."),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="Fraction of conv/linear weights removed (ignored by fedavg)."),
    dataset: str = typer.Option("mnist", "--dataset", help="mnist (shared MNIST test set) or digits (sklearn)."),
    num_cpus: int = typer.Option(0, "--cpus", help="CPUs for the Ray backend (0: up to 4)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the run summary (JSON) here."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's log."),
) -> None:
    """Run METHOD in Flower's simulation engine and report accuracy and bytes per round.

    Method options follow as --name value (e.g. hidenseek --vote mean-score --score-bits 8):
    `prunekit plugins show METHOD` lists them.
    """
    try:
        summary = _run(method, clients, rounds, sparsity, dataset, num_cpus, verbose, list(ctx.args))
    except PrunekitError as e:
        typer.echo(f"prunekit: error: {e}", err=True)
        raise typer.Exit(e.exit_code)
    for h in summary["history"]:
        acc = h.get("accuracy")
        typer.echo(f"round {h['round']:3d}  acc {acc if acc is None else f'{acc:.4f}'}  "
                   f"down {h['down_bytes']:>10,d} B  up {h['up_bytes']:>10,d} B  "
                   f"accepted {h['accepted']}/{h['sent']}  rejected {len(h['rejected'])}  failed "
                   f"{len(h['failed']) + len(h['timed_out'])}")
    typer.echo(f"{method}: final accuracy {summary['final_accuracy']:.4f} at density {summary['density']:.3f} "
               f"({summary['seconds']:.1f} s)")
    if json_out is not None:
        from prunekit.fileio import atomic_write_text
        from prunekit.report import machine_info

        summary["machine"] = machine_info()
        atomic_write_text(json_out, json.dumps(summary, indent=1, default=float) + "\n")


def _run(method, clients, rounds, sparsity, dataset, num_cpus, verbose, extra):
    import dataclasses

    from prunekit import parse_options

    from .config import CONFIGS, METHODS

    if method not in CONFIGS:
        raise UsageError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    cls = CONFIGS[method]
    base, rest = parse_options(cls, extra)
    if rest:
        raise UsageError(f"unexpected arguments: {' '.join(rest)}")
    if method == "fedavg":
        sparsity = 0.0  # the dense baseline: --sparsity does not apply
    elif sparsity is None:
        sparsity = base.sparsity
    try:
        cfg = dataclasses.replace(base, clients=clients, rounds=rounds, sparsity=sparsity, dataset=dataset,
                                  min_clients=min(base.min_clients, clients))
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    if cfg.dataset == "mnist":
        from .data import load_dataset

        load_dataset("mnist", cfg.data_dir)  # InputError now rather than inside a client
    try:
        from .simulation import simulate
    except ModuleNotFoundError as e:
        from prunekit.errors import PluginError

        raise PluginError(f"missing module {e.name!r}; install prunekit[federated]") from None
    return simulate(method, cfg, num_cpus=num_cpus or None, verbose=verbose)


def main() -> None:
    app()
