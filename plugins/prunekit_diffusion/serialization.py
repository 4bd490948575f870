"""Saving and reloading pruned denoisers and pipelines.

- Config-expressible pruning (transformer blocks deleted and the config's
  ``num_layers`` updated): the directory is a plain diffusers model; ``from_pretrained``
  reloads it. A ``prunekit_pruned.json`` manifest beside it records what was removed.
- Otherwise (UNet operators replaced by their skip path): ``save_pretrained`` writes
  ``config.json`` of the *original* architecture, the manifest lists the replaced
  operators, and the weights go to ``prunekit_pruned.safetensors`` instead of
  ``diffusion_pytorch_model.safetensors``, so a plain diffusers load fails loudly
  (no such weights file) instead of filling the removed operators with random weights.
  :func:`load_pruned` builds the model from the config, re-applies the removals and
  loads the weights with ``strict=True``.

Pipelines are saved with ``save_pipeline`` (``save_pretrained`` + the above per pruned
component) and reloaded with :func:`load_pruned`, which passes the rebuilt components
to the pipeline's ``from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from prunekit.errors import InputError

from .bypass import apply_records, removal_history

MANIFEST = "prunekit_pruned.json"
WEIGHTS = "prunekit_pruned.safetensors"
FORMAT = "prunekit.diffusion.pruned"
VERSION = 1
DENOISER_COMPONENTS = ("unet", "transformer", "denoiser")


def needs_manifest_load(records: list[dict[str, Any]]) -> bool:
    """True when plain ``from_pretrained`` cannot rebuild the pruned shape."""
    return any(r["mode"] == "replace" or not r.get("config_updated") for r in records)


def save_model(model: torch.nn.Module, path: str | Path, info: dict[str, Any] | None = None) -> None:
    """``model.save_pretrained(path)`` plus the prunekit manifest (and weights file) when pruned."""
    from safetensors.torch import save_file

    path = Path(path)
    model.save_pretrained(path)
    records = removal_history(model)
    if not records:
        return
    custom = needs_manifest_load(records)
    manifest = {"format": FORMAT, "version": VERSION, "class": type(model).__name__,
                "plain_diffusers_loadable": not custom, "removed": records, **(info or {})}
    if custom:
        for f in list(path.glob("diffusion_pytorch_model*")):
            f.unlink()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path / WEIGHTS), metadata={"format": FORMAT})
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, default=float) + "\n")


def save_pipeline(pipe: Any, path: str | Path, info: dict[str, Any] | None = None) -> None:
    """``pipe.save_pretrained(path)`` with pruned components saved by :func:`save_model`."""
    path = Path(path)
    pipe.save_pretrained(path)
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module) and removal_history(comp):
            save_model(comp, path / name, info)


def save_pruned(obj: Any, path: str | Path, info: dict[str, Any] | None = None) -> None:
    """Save a (pruned) diffusers model or pipeline so that :func:`load_pruned` restores it."""
    if isinstance(obj, torch.nn.Module):
        save_model(obj, path, info)
    else:
        save_pipeline(obj, path, info)


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not valid JSON ({e})") from None


def model_class(name: str, where: Path):
    import diffusers
    from diffusers import ModelMixin

    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
        raise InputError(f"{where}: _class_name {name!r} is not a diffusers model class")
    return cls


def load_model(path: str | Path) -> torch.nn.Module:
    """A (possibly pruned) diffusers model directory as a model in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = _read_json(path / "config.json")
    cls = model_class(cfg.get("_class_name"), path / "config.json")
    man_path = path / MANIFEST
    if not man_path.exists():
        try:
            return cls.from_pretrained(path).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise InputError(f"{path}: cannot load {cls.__name__} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    man = _read_json(man_path)
    if man.get("format") != FORMAT or not isinstance(man.get("removed"), list):
        raise InputError(f"{man_path}: not a prunekit pruning manifest (format must be {FORMAT!r} with a 'removed' list)")
    if man.get("version", 0) > VERSION:
        raise InputError(f"{man_path}: manifest version {man['version']} is newer than this prunekit ({VERSION})")
    records = man["removed"]
    try:
        if not needs_manifest_load(records):
            model = cls.from_pretrained(path)
            model._prunekit_removed = list(records)
            return model.eval()
        model = cls.from_config(cls.load_config(path))
        apply_records(model, records)
        wpath = path / WEIGHTS
        if not wpath.exists():
            raise InputError(f"{wpath}: no such file (the manifest lists replaced operators)")
        model.load_state_dict(load_file(str(wpath)), strict=True)
    except InputError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError, OSError, AttributeError) as e:
        raise InputError(f"{path}: pruned model does not match its manifest ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return model.eval()


def pipeline_class(name: str, where: Path):
    import diffusers
    from diffusers import DiffusionPipeline

    from .pipeline import ClassConditionalPipeline

    if name == ClassConditionalPipeline.__name__:
        return ClassConditionalPipeline
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, DiffusionPipeline)):
        raise InputError(f"{where}: _class_name {name!r} is not a diffusers pipeline class")
    return cls


def load_pipeline(path: str | Path, **kwargs: Any) -> Any:
    path = Path(path)
    index = _read_json(path / "model_index.json")
    cls = pipeline_class(index.get("_class_name"), path / "model_index.json")
    overrides = {name: load_model(path / name) for name in index
                 if not name.startswith("_") and (path / name / MANIFEST).exists()}
    # components saved as absent (e.g. a pipeline assembled with text_encoder=None) load as None
    expected, _ = cls._get_signature_keys(cls)
    for name in expected:
        entry = index.get(name)
        if name not in kwargs and name not in overrides and (entry is None or list(entry) == [None, None]):
            overrides[name] = None
    try:
        return cls.from_pretrained(path, **overrides, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{path}: cannot load {cls.__name__} ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_pruned(path: str | Path, **kwargs: Any) -> Any:
    """Load a pipeline directory (``model_index.json``) or a model directory (``config.json``).

    Pruned components are rebuilt from their manifest; unpruned ones load as usual.
    """
    path = Path(path)
    if (path / "model_index.json").exists():
        return load_pipeline(path, **kwargs)
    if (path / "config.json").exists():
        return load_model(path)
    raise InputError(f"{path}: not a diffusers pipeline or model directory (no model_index.json or config.json)")
