"""prunekit: a small shared pruning core (scores, budgets, masks, schedules, gates,
reports, plugin registry) for pruning plugins of 3D and generative models.

Submodules import torch; this package itself imports it only on first use of a
torch-backed name, so listing plugins and ``prunekit --version`` stay fast.
"""

from __future__ import annotations

import importlib
from importlib import metadata

try:
    __version__ = metadata.version("prunekit")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from .budget import Budget
from .config import describe_options, option, parse_options
from .errors import InputError, PluginError, PrunekitError, UsageError
from .fileio import atomic_path, atomic_write_bytes, atomic_write_text
from .plugin import PLUGIN_API_VERSION, FileTarget, Plugin
from .registry import discover, load, register, status, unregister
from .schedule import Schedule

_LAZY = {
    "Scores": "scores", "Mask": "mask", "select": "selection", "Report": "report", "machine_info": "report",
    "sigmoid_gate": "gates", "straight_through_gate": "gates", "HardConcrete": "gates",
    "AugmentedLagrangian": "gates", "prune_file": "api", "info_file": "api", "eval_files": "api",
}

__all__ = [
    "Budget", "describe_options", "option", "parse_options", "InputError", "PluginError", "PrunekitError",
    "UsageError", "atomic_path", "atomic_write_bytes", "atomic_write_text", "PLUGIN_API_VERSION", "FileTarget",
    "Plugin", "discover", "load", "register", "status", "unregister", "Schedule", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
