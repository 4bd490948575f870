"""Plugin registry over the ``prunekit.plugins`` entry-point group.

- :func:`discover` lists plugins from installed package metadata, importing nothing.
- :func:`load` imports one plugin's spec lazily (cached); failures become a
  :class:`~prunekit.errors.PluginError` with the reason and never escape otherwise.
- :func:`status` loads every plugin and reports per plugin: ok / unavailable / failed /
  disabled, with the reason.
- Disable by name with ``PRUNEKIT_DISABLE_PLUGINS=a,b`` (or ``disable("a")``, the CLI's
  ``-p no:a``); ``PRUNEKIT_DISABLE_PLUGIN_AUTOLOAD=1`` ignores every installed plugin
  (in-process ones from :func:`register` remain), like pytest's switch of the same name.
- :func:`register` adds a plugin in process (tests, notebooks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Iterable

from .errors import PluginError, PluginUsageError
from .plugin import PLUGIN_API_VERSION, Plugin

GROUP = "prunekit.plugins"
ENV_DISABLE = "PRUNEKIT_DISABLE_PLUGINS"
ENV_NO_AUTOLOAD = "PRUNEKIT_DISABLE_PLUGIN_AUTOLOAD"

_registered: dict[str, Plugin] = {}
_loaded: dict[str, Plugin] = {}
_disabled_in_process: set[str] = set()


@dataclass(frozen=True)
class PluginInfo:
    """What package metadata says about a plugin (no import needed)."""

    name: str
    value: str  # "module:attr", or "<in-process>"
    package: str
    version: str


@dataclass(frozen=True)
class PluginStatus:
    name: str
    package: str
    version: str
    status: str  # ok | unavailable | failed | disabled
    reason: str = ""
    domain: str = ""
    description: str = ""
    operations: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def disabled_names() -> set[str]:
    env = {n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip()}
    return env | _disabled_in_process


def autoload_disabled() -> bool:
    return os.environ.get(ENV_NO_AUTOLOAD, "").strip().lower() not in ("", "0", "false", "no")


def disable(name: str) -> None:
    """Disable a plugin for this process (what ``prunekit -p no:NAME`` does)."""
    _disabled_in_process.add(name)
    _loaded.pop(name, None)


def enable(name: str) -> None:
    _disabled_in_process.discard(name)


def register(plugin: Plugin) -> Plugin:
    """Add (or replace) an in-process plugin. Returns it, so it works as a decorator target."""
    if not isinstance(plugin, Plugin):
        raise TypeError(f"register() takes a prunekit.Plugin, got {type(plugin).__name__}")
    _check_api(plugin)
    _registered[plugin.name] = plugin
    _loaded.pop(plugin.name, None)
    return plugin


def unregister(name: str) -> None:
    _registered.pop(name, None)
    _loaded.pop(name, None)


def _entry_points() -> list[metadata.EntryPoint]:
    if autoload_disabled():
        return []
    eps = metadata.entry_points(group=GROUP)
    seen: dict[str, metadata.EntryPoint] = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)  # first on sys.path wins, like importlib
    return list(seen.values())


def discover() -> list[PluginInfo]:
    """Every known plugin, from metadata only (entry points, then in-process ones)."""
    out = []
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        pkg = dist.metadata["Name"] if dist is not None else "?"
        ver = dist.version if dist is not None else "?"
        out.append(PluginInfo(ep.name, ep.value, pkg, ver))
    for name, p in _registered.items():
        out = [i for i in out if i.name != name]
        out.append(PluginInfo(name, "<in-process>", "<in-process>", "-"))
    return sorted(out, key=lambda i: i.name)


def _check_api(plugin: Plugin) -> None:
    if plugin.api_version != PLUGIN_API_VERSION:
        raise PluginError(
            f"plugin {plugin.name!r} declares plugin API {plugin.api_version}, this prunekit supports {PLUGIN_API_VERSION}"
        )


def load(name: str) -> Plugin:
    """Load one plugin's spec. Raises :class:`PluginError` (with the reason) on any failure."""
    if name in disabled_names():
        raise PluginError(f"plugin {name!r} is disabled ({ENV_DISABLE} or -p no:{name})")
    if name in _loaded:
        return _loaded[name]
    if name in _registered:
        _loaded[name] = _registered[name]
        return _registered[name]
    for ep in _entry_points():
        if ep.name != name:
            continue
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must never break the host
            raise PluginError(f"plugin {name!r} failed to import ({ep.value}): {type(e).__name__}: {e}") from None
        if not isinstance(obj, Plugin):
            raise PluginError(f"plugin {name!r}: {ep.value} is a {type(obj).__name__}, not a prunekit.Plugin")
        if obj.name != name:
            raise PluginError(f"plugin {name!r}: {ep.value} names itself {obj.name!r}")
        _check_api(obj)
        _loaded[name] = obj
        return obj
    known = ", ".join(i.name for i in discover() if i.name not in disabled_names()) or "none"
    raise PluginUsageError(f"unknown plugin {name!r} (installed: {known})")


def status(names: Iterable[str] | None = None) -> list[PluginStatus]:
    """Load status of every plugin (or of ``names``); never raises for a bad plugin."""
    infos = {i.name: i for i in discover()}
    wanted = sorted(infos) if names is None else list(names)
    out = []
    for name in wanted:
        info = infos.get(name)
        if info is None:
            out.append(PluginStatus(name, "?", "?", "failed", "not installed"))
            continue
        base = dict(name=name, package=info.package, version=info.version)
        if name in disabled_names():
            out.append(PluginStatus(**base, status="disabled", reason="disabled by the user"))
            continue
        try:
            p = load(name)
        except PluginError as e:
            out.append(PluginStatus(**base, status="failed", reason=str(e)))
            continue
        missing = p.missing_requirements()
        st, reason = "ok", ""
        if missing:
            st = "unavailable"
            reason = f"needs {', '.join(missing)}" + (f"; install prunekit[{p.extra}]" if p.extra else "")
        out.append(PluginStatus(**base, status=st, reason=reason, domain=p.domain,
                                description=p.description, operations=tuple(p.operations)))
    return out


def plugins_for_domain(domain: str) -> list[Plugin]:
    """Loadable plugins of one domain (used to find a file handler for ``info``/``eval``)."""
    out = []
    for s in status():
        if s.status == "ok" and s.domain == domain:
            out.append(load(s.name))
    return out


def clear_cache() -> None:
    _loaded.clear()
