"""``prunekit`` command line (typer).

Exit codes: 0 ok, 1 failure (bad file, failed plugin), 2 usage error. User mistakes
print one line on stderr, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import click
import typer

from . import __version__, registry
from .errors import PluginUsageError, PrunekitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pruning plugins for 3D and generative models.")
plugins_app = typer.Typer(add_completion=False, invoke_without_command=True, pretty_exceptions_enable=False,
                          help="List installed plugins, or show one.")
app.add_typer(plugins_app, name="plugins")

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _fail(msg: str, code: int) -> None:
    typer.echo(f"prunekit: error: {msg}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn PrunekitError (and friends) into one line + exit code."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except PrunekitError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory", 1)

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prunekit {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    plugin_opts: List[str] = typer.Option([], "-p", help="-p no:NAME disables plugin NAME (repeatable)."),
) -> None:
    for p in plugin_opts:
        if not p.startswith("no:") or len(p) < 4:
            _fail(f"-p {p}: expected no:NAME", 2)
        registry.disable(p[3:])


def _print_json(obj) -> None:
    from .report import strict_json

    typer.echo(strict_json(obj))


@plugins_app.callback()
@user_errors
def plugins_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Table of plugins: name, domain, package, version, status."""
    if ctx.invoked_subcommand is not None:
        return
    rows = registry.status()
    if as_json:
        _print_json([r.to_dict() for r in rows])
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "domain", "package", "version", "status", "operations / reason")
    for r in rows:
        colour = {"ok": "green", "disabled": "yellow"}.get(r.status, "red")
        t.add_row(r.name, r.domain, r.package, r.version, f"[{colour}]{r.status}[/]",
                  r.reason or " ".join(r.operations))
    Console(width=140).print(t)


@plugins_app.command("show")
@user_errors
def plugins_show(name: str, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """A plugin's description, paper and options (generated from its Config dataclass)."""
    from .config import describe_options

    st = {s.name: s for s in registry.status()}.get(name)
    if st is None:
        raise PluginUsageError(f"unknown plugin {name!r} (installed: {', '.join(i.name for i in registry.discover()) or 'none'})")
    if st.status in ("failed", "disabled"):
        raise registry.PluginError(f"plugin {name!r} {st.status}: {st.reason}")
    p = registry.load(name)
    opts = [dataclasses.asdict(o) for o in describe_options(p.config)]
    domain_opts = []
    if p.target is not None and st.status == "ok":
        domain_opts = [dataclasses.asdict(o) for o in describe_options(p.get_target().options)]
    d = {**st.to_dict(), "paper": p.paper, "options": opts, "domain_options": domain_opts,
         "hooks": list(p.hooks), "extra": p.extra}
    if as_json:
        _print_json(d)
        return
    typer.echo(f"{p.name}  ({p.domain}; {st.package} {st.version}; {st.status}{': ' + st.reason if st.reason else ''})")
    typer.echo(f"  {p.description}")
    if p.paper:
        typer.echo(f"  paper: {p.paper}")
    for title, rows in (("options", opts), (f"{p.domain} prune options", domain_opts)):
        if rows:
            typer.echo(f"{title}:")
            for o in rows:
                ch = f" {{{', '.join(map(str, o['choices']))}}}" if o["choices"] else ""
                typer.echo(f"  {o['flag']} {o['type']}{ch}  (default {o['default']!r})  {o['help']}")


@app.command(context_settings=EXTRA)
@user_errors
def prune(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Input file (scene, checkpoint, ...)."),
    method: str = typer.Option(..., "-m", "--method", help="Plugin name (see `prunekit plugins`)."),
    keep: Optional[float] = typer.Option(None, "--keep", help="Fraction of units to keep, in (0, 1]."),
    count: Optional[int] = typer.Option(None, "--count", help="Number of units to keep."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep units scoring >= T."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file; omit for a dry run."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write report.json (and images) here."),
    force: bool = typer.Option(False, "--force", help="Allow writing over the input file."),
) -> None:
    """Prune FILE with METHOD. Plugin and domain options (see `plugins show METHOD`) follow."""
    from .api import budget_from, prune_file

    budget = budget_from(keep, count, threshold, required=False)
    report, _ = prune_file(file, method, budget, output, ctx.args, force=force, report_dir=report_dir)
    if as_json:
        typer.echo(report.to_json())
    else:
        typer.echo(report.table())


@app.command()
@user_errors
def info(file: Path, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Describe a file: unit count, sizes, statistics."""
    from .api import info_file

    d = info_file(file)
    if as_json:
        _print_json(d)
        return
    for k, v in d.items():
        if isinstance(v, dict):
            typer.echo(f"{k}:")
            for kk, vv in v.items():
                typer.echo(f"  {kk}: {vv}")
        else:
            typer.echo(f"{k}: {v}")


@app.command("eval", context_settings=EXTRA)
@user_errors
def eval_(ctx: typer.Context, ref: Path, cand: Path,
          as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Quality of CAND against REF (e.g. PSNR/SSIM of renders)."""
    from .api import eval_files

    report = eval_files(ref, cand, ctx.args)
    typer.echo(report.to_json() if as_json else report.table())


def _list_plugin_commands(builtin: set[str]) -> None:
    """Show plugin sub-commands in ``prunekit --help`` without importing them.

    Each entry carries only help text naming its plugin(s); ``prunekit NAME ...`` mounts the real command.
    """
    owners: dict[str, list[str]] = {}
    for st in registry.status():
        if st.status == "ok":
            for name in registry.load(st.name).commands:
                owners.setdefault(name, []).append(st.name)
    for name, plugins in sorted(owners.items()):
        if name not in builtin:
            app.command(name, help=f"From plugin{'s' * (len(plugins) > 1)} {', '.join(plugins)}: `prunekit {name} --help` lists its commands.",
                        context_settings=EXTRA, add_help_option=False)(lambda: None)


def _mount_plugin_commands(argv: list[str]) -> None:
    """Mount ``prunekit NAME ...`` sub-commands that plugins declare (only the one invoked)."""
    builtin = {"plugins", "prune", "info", "eval"}
    wanted, it = None, iter(argv)
    for a in it:
        if a == "-p":
            opt = next(it, "")
            if opt.startswith("no:"):
                registry.disable(opt[3:])
        elif not a.startswith("-"):
            wanted = a
            break
    if wanted is None:
        _list_plugin_commands(builtin)
    if wanted is None or wanted in builtin:
        return
    for st in registry.status():
        if st.status != "ok":
            continue
        p = registry.load(st.name)
        if wanted in p.commands:
            try:
                sub = p._resolve(p.commands[wanted])
            except PrunekitError as e:
                _fail(str(e), e.exit_code)
            app.add_typer(sub, name=wanted)
            return


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings (e.g. a repaired input file) as one ``prunekit: warning: ...`` line, without source lines."""
    return f"prunekit: warning: {message}\n"


def run() -> None:
    """Console-script entry point. Click's usage errors (a bad option value, an unknown command) become one
    ``prunekit: error: ...`` line and exit code 2 instead of typer's boxed message."""
    original, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        _run()
    finally:
        warnings.formatwarning = original  # run() may be called in-process (tests)


def _run() -> None:
    try:
        try:
            _mount_plugin_commands(sys.argv[1:])
        except typer.Exit as e:
            sys.exit(e.exit_code)
        code = app(standalone_mode=False)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as e:
        typer.echo(e.format_message(), err=True)
        sys.exit(2)
    except click.UsageError as e:
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        _exit_with(f"prunekit: error: {e.format_message()}{where}", e.exit_code)
    except click.ClickException as e:
        _exit_with(f"prunekit: error: {e.format_message()}", e.exit_code)
    except click.Abort:
        _exit_with("prunekit: error: aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _exit_with(line: str, code: int) -> None:
    typer.echo(line, err=True)
    sys.exit(code)


if __name__ == "__main__":
    run()
