"""Plugin configs are dataclasses; CLI options and docs are generated from them.

Declare options with :func:`option` so they carry help text::

    @dataclass
    class SundaeConfig:
        band_weight: float = option(0.5, "fraction of the budget taken from the high-pass end")

:func:`describe_options` lists (name, type, default, help); :func:`parse_options` turns
``--band-weight 0.6`` style arguments into a config instance, with clear errors.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Sequence

from .errors import UsageError


def option(default: Any = MISSING, help: str = "", *, choices: Sequence[Any] | None = None, default_factory: Any = MISSING):
    """A dataclass field with CLI help (and optional choices)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionInfo:
    name: str
    flag: str
    type: str
    default: Any
    help: str
    choices: tuple | None = None


def _field_type(cls, f) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, str)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return f"{_type_name(args[0])}?"
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def describe_options(cfg_cls) -> list[OptionInfo]:
    """One :class:`OptionInfo` per dataclass field of ``cfg_cls``."""
    if cfg_cls is None:
        return []
    out = []
    for f in dataclasses.fields(cfg_cls):
        if f.name.startswith("_"):
            continue
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
        tp = _field_type(cfg_cls, f)
        choices = f.metadata.get("choices")
        if typing.get_origin(tp) is typing.Literal:
            choices = typing.get_args(tp)
        out.append(OptionInfo(f.name, "--" + f.name.replace("_", "-"), _type_name(tp), default, f.metadata.get("help", ""), choices))
    return out


def _convert(raw: str, tp, flag: str):
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is typing.Literal:
        for a in typing.get_args(tp):
            if str(a) == raw:
                return a
        raise UsageError(f"{flag}: expected one of {', '.join(map(str, typing.get_args(tp)))}, got {raw!r}")
    if args and origin is not None and origin not in (list, tuple):
        if raw.lower() in ("none", "null", ""):
            return None
        return _convert(raw, args[0], flag)
    if tp is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{flag}: expected true/false, got {raw!r}")
    if tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            raise UsageError(f"{flag}: expected {'an integer' if tp is int else 'a number'}, got {raw!r}") from None
    if origin in (list, tuple):
        inner = args[0] if args else str
        return origin(_convert(p, inner, flag) for p in raw.split(",") if p)
    return raw


def parse_options(cfg_cls, argv: Sequence[str], *, allow_unknown: bool = False,
                  parsed_before: type | None = None) -> tuple[Any, list[str]]:
    """Parse ``--name value`` / ``--name=value`` / ``--flag`` / ``--no-flag`` into ``cfg_cls``.

    Returns (config, leftover args). Unknown options raise :class:`UsageError` unless
    ``allow_unknown``; its message lists the options of ``cfg_cls`` and of ``parsed_before`` (the
    config that took its options from ``argv`` first, e.g. the plugin's before the domain's).
    """
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)} if cfg_cls else {}
    hints = typing.get_type_hints(cfg_cls) if cfg_cls else {}
    values: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--"):
            rest.append(a)
            i += 1
            continue
        key, eq, val = a[2:].partition("=")
        name = key.replace("-", "_")
        negated = False
        if name not in fields and name.startswith("no_") and name[3:] in fields and hints.get(name[3:]) is bool:
            name, negated = name[3:], True
        if name not in fields:
            if allow_unknown:
                rest.append(a)
                if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    rest.append(argv[i + 1])
                    i += 1
                i += 1
                continue
            names = [*fields, *(f.name for f in dataclasses.fields(parsed_before))] if parsed_before else fields
            known = ", ".join("--" + n.replace("_", "-") for n in names) or "none"
            raise UsageError(f"unknown option --{key} (options here: {known})")
        tp = hints.get(name, str)
        if tp is bool and not eq:
            values[name] = not negated
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"--{key}: needs a value")
            val = argv[i + 1]
            i += 1
        v = _convert(val, tp, "--" + key)
        choices = fields[name].metadata.get("choices")
        if choices and v not in choices:
            raise UsageError(f"--{key}: expected one of {', '.join(map(str, choices))}, got {val!r}")
        values[name] = v
        i += 1
    try:
        cfg = cfg_cls(**values) if cfg_cls else None
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    return cfg, rest
