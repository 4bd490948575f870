"""Save and reload a Cropr-pruned model, ``save_pretrained``-style.

A folder holds:

- the backbone: ``config.json`` + ``model.safetensors`` via the transformers model's own
  ``save_pretrained`` (any other ``nn.Module``, e.g. timm or a wrapper with a decoder:
  ``backbone.safetensors``, its ``state_dict``);
- ``cropr.safetensors``: the reducer's parameters (queries, norms, projections, and the
  auxiliary heads if they were not removed);
- ``cropr_config.json``: the :class:`~prunekit_tokens.config.CroprConfig` and format tag.

:func:`load_pretrained` rebuilds the transformers model from its ``architectures``
entry (or loads ``backbone.safetensors`` into a ``model`` you pass), re-attaches the
Cropr modules and loads their weights. Files are written atomically; bad or missing
files raise :class:`~prunekit.errors.InputError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from torch import nn

from prunekit.errors import InputError, UsageError
from prunekit.fileio import atomic_path, atomic_write_text

from .attach import CroprReducer, attach_cropr
from .config import CroprConfig

FORMAT = "prunekit.cropr"
VERSION = 1
CONFIG_NAME = "cropr_config.json"
WEIGHTS_NAME = "cropr.safetensors"
BACKBONE_NAME = "backbone.safetensors"


def save_pretrained(model: nn.Module, reducer: CroprReducer, directory: str | os.PathLike) -> Path:
    """Write backbone, Cropr weights and config into ``directory``; returns it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained") and hasattr(model, "config"):
        model.save_pretrained(directory)
        backbone = "transformers"
    else:
        with atomic_path(directory / BACKBONE_NAME) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        backbone = "state_dict"
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file({k: v.contiguous() for k, v in reducer.state_dict().items()}, str(tmp), metadata={"format": FORMAT})
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(reducer.config).items()}
    meta = {"format": FORMAT, "version": VERSION, "backbone": backbone, "host": reducer.host.kind,
            "model_class": type(model).__name__, "config": cfg}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    return directory


def read_config(directory: str | os.PathLike) -> tuple[dict, CroprConfig]:
    path = Path(directory) / CONFIG_NAME
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (not a saved Cropr model folder)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: field 'format' must be {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise InputError(f"{path}: field 'version' must be {VERSION}, got {meta.get('version')!r}")
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: field 'config' must be an object")
    fields = {f.name for f in dataclasses.fields(CroprConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise InputError(f"{path}: field 'config' has unknown keys {unknown}")
    try:
        cfg = CroprConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()})
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: field 'config' is invalid ({e})") from None
    return meta, cfg


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad input file
        raise InputError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def load_pretrained(directory: str | os.PathLike, model: nn.Module | None = None) -> tuple[nn.Module, CroprReducer]:
    """Rebuild ``(model, reducer)`` from :func:`save_pretrained` output.

    ``model``: required when the backbone was saved as a ``state_dict`` (build the same
    architecture, e.g. the same timm model); its weights are then loaded from the folder.
    For a transformers backbone, a given ``model`` is used as it is (its weights are not
    replaced); leave it out to rebuild the saved model.
    """
    directory = Path(directory)
    meta, cfg = read_config(directory)
    if meta.get("backbone") == "transformers" and model is None:
        import transformers

        hf_cfg_path = directory / "config.json"
        try:
            arch = json.loads(hf_cfg_path.read_text())["architectures"][0]
        except FileNotFoundError:
            raise InputError(f"{hf_cfg_path}: no such file") from None
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise InputError(f"{hf_cfg_path}: field 'architectures' must list the model class") from None
        cls = getattr(transformers, arch, None)
        if cls is None:
            raise InputError(f"{hf_cfg_path}: architecture {arch!r} is not a transformers class")
        model = cls.from_pretrained(directory)
    elif meta.get("backbone") == "state_dict":
        if model is None:
            raise UsageError(f"{directory}: backbone saved as a state_dict; pass model= built with the same architecture")
        state = _load_tensors(directory / BACKBONE_NAME)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise InputError(f"{directory / BACKBONE_NAME}: weights do not fit the given model ({e})") from None
    model.eval()
    reducer = attach_cropr(model, cfg)
    weights = directory / WEIGHTS_NAME
    try:
        reducer.load_state_dict(_load_tensors(weights))
    except RuntimeError as e:
        reducer.remove()
        raise InputError(f"{weights}: Cropr weights do not fit the config ({e})") from None
    reducer.eval()
    return model, reducer
