"""The plugin contract: a small spec object, cheap to import.

An entry point in the ``prunekit.plugins`` group names a :class:`Plugin` instance.
Heavy code (torch models, gsplat, diffusers, flwr) is referenced by ``"module:attr"``
strings and imported only when an operation is used, so listing plugins never imports
them and a broken extra never breaks the host.

Operations a plugin may offer (all optional):

- ``scorer``: ``(target, context, config) -> Scores`` — pure, no mutation.
- ``target``: a :class:`FileTarget` for its domain, so ``prunekit prune/info/eval FILE``
  work (shared by every plugin of a domain).
- ``hooks``: named train-time integrations (``{"gsplat": "pkg.mod:Strategy"}``).
- ``commands``: CLI sub-commands, ``{"fed": "pkg.cli:app"}`` mounts a ``typer.Typer`` as
  ``prunekit fed ...`` (resolved only when that command runs).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from .errors import PluginError, PluginUsageError

#: Version of the contract below. A plugin declaring another major version is refused.
PLUGIN_API_VERSION = 1

def resolve(ref: Any, *, plugin: str = "", extra: str | None = None) -> Any:
    """Import ``"module:attr"`` (dotted attr allowed); objects pass through unchanged."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as e:
        hint = f"; install prunekit[{extra}]" if extra else ""
        raise PluginError(f"plugin {plugin!r}: missing module {e.name!r}{hint}") from None
    except Exception as e:  # noqa: BLE001 - a plugin's import failure must not escape
        raise PluginError(f"plugin {plugin!r}: importing {module} failed: {type(e).__name__}: {e}") from None
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"plugin {plugin!r}: {module} has no attribute {attr!r}") from None
    return obj


@dataclass(frozen=True)
class Plugin:
    """What a plugin author provides. Only ``name``, ``domain`` and ``description`` are required."""

    name: str
    domain: str
    description: str
    config: type | None = None
    paper: str = ""
    scorer: Any = None
    target: Any = None
    hooks: Mapping[str, Any] = field(default_factory=dict)
    commands: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    extra: str | None = None
    api_version: int = PLUGIN_API_VERSION

    @property
    def operations(self) -> list[str]:
        ops = []
        if self.scorer is not None:
            ops.append("score")
        if self.target is not None:
            ops.append("prune")
        ops.extend(f"hook:{k}" for k in self.hooks)
        ops.extend(f"command:{k}" for k in self.commands)
        return ops

    def missing_requirements(self) -> list[str]:
        """Required top-level modules that are not importable (checked without importing)."""
        out = []
        for mod in self.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    out.append(mod)
            except (ImportError, ValueError):
                out.append(mod)
        return out

    def _resolve(self, ref: Any) -> Any:
        missing = self.missing_requirements()
        if missing:
            hint = f"; install prunekit[{self.extra}]" if self.extra else ""
            raise PluginError(f"plugin {self.name!r} needs {', '.join(missing)}{hint}")
        return resolve(ref, plugin=self.name, extra=self.extra)

    def get_scorer(self) -> Callable:
        if self.scorer is None:
            raise PluginError(f"plugin {self.name!r} has no scorer")
        return self._resolve(self.scorer)

    def get_target(self) -> "FileTarget":
        if self.target is None:
            raise PluginUsageError(f"plugin {self.name!r} does not prune files (operations: {', '.join(self.operations) or 'none'})")
        return self._resolve(self.target)

    def get_hook(self, name: str) -> Any:
        if name not in self.hooks:
            raise PluginError(f"plugin {self.name!r} has no hook {name!r} (hooks: {', '.join(self.hooks) or 'none'})")
        return self._resolve(self.hooks[name])

    def make_config(self, **overrides) -> Any:
        if self.config is None:
            if overrides:
                raise PluginError(f"plugin {self.name!r} takes no options")
            return None
        return self.config(**overrides)


@runtime_checkable
class FileTarget(Protocol):
    """Domain file handling used by ``prunekit prune / info / eval``.

    ``options`` is a dataclass of the domain's prune options (parsed from the CLI like a
    plugin config). ``load`` raises :class:`~prunekit.errors.InputError` on bad files.
    ``save`` writes to the given path (the core makes it atomic); the path's suffix
    selects the format. ``apply`` may also take keyword arguments ``scores`` and ``budget``
    (targets that refine the selection, e.g. progressive merging, use them). Optionally, ``write_report(original, pruned, context, options,
    report, folder)`` draws extra report files (``prunekit prune --report DIR``). Optional attributes:
    ``writable`` (the suffixes ``save`` writes, when fewer than it reads) and ``reads`` (a phrase for error
    messages when the suffix alone does not say what is readable, e.g. "diffusers model folders").
    """

    domain: str
    suffixes: tuple[str, ...]
    options: type

    def can_read(self, path) -> bool: ...
    def load(self, path) -> Any: ...
    def save(self, obj, path) -> None: ...
    def size(self, obj) -> dict[str, float]: ...
    def info(self, obj, path) -> dict[str, Any]: ...
    def context(self, obj, options, path) -> Any: ...
    def apply(self, obj, mask, context, options, report) -> Any: ...
    def evaluate(self, ref, cand, options, report) -> dict[str, float]: ...
