"""The Python API behind the CLI: ``prune_file``, ``info_file``, ``eval_files``.

``prune_file`` is the one pipeline every file-pruning plugin goes through:
load -> context (views, calibration data, ...) -> plugin scorer -> :func:`select` ->
domain ``apply`` (slice, and optional recovery such as merge/distil) -> atomic save.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Sequence

from . import registry
from .budget import Budget
from .config import parse_options
from .errors import InputError, PluginError, UsageError
from .fileio import atomic_path
from .plugin import FileTarget, Plugin
from .report import Report
from .selection import select


def _kinds(suffixes) -> str:
    """``(".ply", "")`` -> ``".ply files and folders"`` (a target's empty suffix means folders)."""
    files = sorted(s for s in suffixes if s)
    parts = [f"{', '.join(files)} files"] if files else []
    if "" in suffixes:
        parts.append("folders")
    return " and ".join(parts) or "nothing"


def _targets() -> list[FileTarget]:
    """The file handlers of every loadable plugin that prunes files, each once, in registry order."""
    out: dict[int, FileTarget] = {}
    for st in registry.status():
        if st.status != "ok" or "prune" not in st.operations:
            continue
        try:
            t = registry.load(st.name).get_target()
        except PluginError:
            continue
        out.setdefault(id(t), t)
    return list(out.values())


def load_any(path: str | os.PathLike) -> tuple[FileTarget, Any]:
    """``(target, loaded object)`` from the first handler that reads ``path``. Several handlers may claim one
    suffix (a ``.ply`` is a Gaussian scene or a point cloud): when one fails with :class:`InputError` the next
    is tried; if all fail, the first one's error is raised."""
    targets = _targets()
    first: InputError | None = None
    for t in targets:
        if not t.can_read(path):
            continue
        try:
            return t, t.load(path)
        except InputError as e:
            first = first or e
    if first is not None:
        raise first
    suffixes = {s for t in targets for s in t.suffixes}
    raise InputError(f"{path}: no installed plugin reads this kind of file (readable: {_kinds(suffixes)})")


def _check_input(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")


BUDGET_HELP = "give exactly one of --keep RATIO, --count N, --threshold T"


def budget_from(keep: float | None = None, count: int | None = None, threshold: float | None = None,
                *, required: bool = True) -> Budget | None:
    """The budget of ``--keep/--count/--threshold``. With ``required=False`` none given gives
    ``None``: :func:`prune_file` then asks the plugin's config (``cfg.budget_option(None)``, e.g.
    LD-Pruner's ``--keep-macs``)."""
    given = [x for x in (keep, count, threshold) if x is not None]
    if not given and not required:
        return None
    if len(given) != 1:
        raise UsageError(BUDGET_HELP)
    try:
        return Budget(keep_ratio=keep, keep_count=count, threshold=threshold)
    except ValueError as e:
        raise UsageError(str(e)) from None


def prune_file(path: str | os.PathLike, method: str, budget: Budget | None, output: str | os.PathLike | None,
               argv: Sequence[str] = (), *, force: bool = False, report_dir: str | os.PathLike | None = None,
               **options: Any) -> tuple[Report, Any]:
    """Prune the file at ``path`` with plugin ``method`` under ``budget``; write ``output``.

    ``argv`` holds plugin and domain options in CLI form (``["--band-weight", "0.4"]``);
    ``options`` the same as keyword arguments (``band_weight=0.4``). ``output=None`` is a
    dry run. ``report_dir`` receives ``report.json`` plus whatever the domain draws there
    (``FileTarget.write_report``, optional: e.g. before/after images). Returns the report
    and the pruned object. A plugin config with ``budget_option(given)`` decides the budget from
    the one given here (or None) and its own options (e.g. LD-Pruner's ``--keep-macs``, TSP3D's
    paper threshold as the default); no budget either way is a usage error.
    """
    path = Path(path)
    _check_input(path)
    plugin: Plugin = registry.load(method)
    target = plugin.get_target()
    if not target.can_read(path):
        raise InputError(f"{path}: plugin {method!r} reads {getattr(target, 'reads', None) or _kinds(target.suffixes)}")
    if output is not None:
        output = Path(output)
        if output.resolve() == path.resolve() and not force:
            raise UsageError(f"{output}: refusing to overwrite the input (pass --force to allow)")
        writable = getattr(target, "writable", target.suffixes)
        if output.suffix not in writable:
            raise UsageError(f"{output}: cannot write {output.suffix or 'suffix-less'} files (writable: {_kinds(writable)})")
        if output.suffix and output.is_dir():
            raise UsageError(f"{output}: is a directory; give the output file's name")
    if report_dir is not None and Path(report_dir).exists() and not Path(report_dir).is_dir():
        raise UsageError(f"{report_dir}: --report needs a folder, and this is a file")
    argv = list(argv) + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    cfg, rest = parse_options(plugin.config, argv, allow_unknown=True)
    opts, _ = parse_options(target.options, rest, parsed_before=plugin.config)
    if hasattr(cfg, "budget_option"):
        budget = cfg.budget_option(budget)
    if budget is None:
        raise UsageError(BUDGET_HELP)

    report = Report(method=method, input=str(path), output=str(output or ""), budget=budget.describe())
    with report.time("load"):
        obj = target.load(path)
    report.before = target.size(obj)
    with report.time("context"):
        ctx = target.context(obj, opts, path)
    with report.time("score"):
        scores = plugin.get_scorer()(obj, ctx, cfg)
    if hasattr(cfg, "budget"):
        budget = cfg.budget(budget)  # e.g. SUNDAE's two-band rule sets low_fraction
        report.budget = budget.describe()
    with report.time("select"):
        mask = select(scores, budget)
    with report.time("apply"):
        extra = {}
        if {"scores", "budget"} <= set(inspect.signature(target.apply).parameters):
            extra = {"scores": scores, "budget": budget}  # for targets that refine the selection (e.g. merging)
        pruned = target.apply(obj, mask, ctx, opts, report, **extra)
    report.after = target.size(pruned)
    if output is not None:
        with report.time("write"), atomic_path(output) as tmp:
            target.save(pruned, tmp)
    if report_dir is not None:
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(target, "write_report"):
            target.write_report(obj, pruned, ctx, opts, report, report_dir)
        report.save(report_dir / "report.json")
    return report, pruned


def info_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    _check_input(path)
    target, obj = load_any(path)
    return target.info(obj, path)


def eval_files(ref: str | os.PathLike, cand: str | os.PathLike, argv: Sequence[str] = ()) -> Report:
    ref, cand = Path(ref), Path(cand)
    _check_input(ref)
    _check_input(cand)
    target, a = load_any(ref)
    opts, _ = parse_options(target.options, argv)
    report = Report(method="eval", input=str(ref), output=str(cand))
    b = target.load(cand)
    report.before, report.after = target.size(a), target.size(b)
    with report.time("eval"):
        report.metrics.update(target.evaluate(a, b, opts, report))
    return report
