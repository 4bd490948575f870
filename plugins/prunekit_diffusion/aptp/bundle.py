"""Saving and reloading an APTP router and its sliced experts (safetensors + one JSON manifest).

Directory layout::

    aptp.json              format, version, router config, gate layout, MAC model, base UNet config,
                           one entry per code (MAC ratio, spec = kept units + removed blocks)
    router.safetensors     predictor + codes
    expert_<k>.safetensors the sliced UNet of code k (only in an exported bundle)

A router checkpoint (written during training) has no experts; :func:`export_experts` slices them from
the base UNet and writes a complete bundle into a fresh directory (built beside it, then renamed, so
an interrupted export leaves nothing). :func:`load_bundle` rebuilds every expert's shapes on a UNet
constructed from the stored config (:func:`~.slicing.apply_spec`) and loads its weights with
``strict=True``; any inconsistency is an :class:`prunekit.InputError` (one line).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prunekit import InputError, atomic_path, atomic_write_text

from .gating import GateLayout, MacModel, discover
from .router import AptpRouter
from .finetune import experts_from
from .slicing import apply_spec, code_spec

MANIFEST = "aptp.json"
ROUTER = "router.safetensors"
FORMAT = "prunekit.diffusion.aptp"
VERSION = 1


def code_table(router: AptpRouter, macs: MacModel) -> list[dict[str, Any]]:
    """Hard (eval) gates of every code, their MAC ratio and slicing spec."""
    router.eval()
    with torch.no_grad():
        gates = router.code_gates()
        ratios = macs.ratio(gates)
    return [{"index": k, "mac_ratio": float(ratios[k]), "spec": code_spec(router.layout, gates[k])}
            for k in range(router.n_codes)]


def _manifest(router: AptpRouter, macs: MacModel, base_config: dict | None, info: dict | None) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "router": router.config(), "layout": router.layout.to_json(),
            "ff_chunks": max([g.size for g in router.layout.width if g.kind == "ff"], default=32),
            "macs": macs.to_json(), "codes": code_table(router, macs), "base_config": base_config, **(info or {})}


def _save_tensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": FORMAT})


def save_router(folder: str | Path, router: AptpRouter, macs: MacModel, info: dict | None = None,
                base_config: dict | None = None) -> None:
    """Write (or overwrite) a router checkpoint: ``router.safetensors`` + ``aptp.json`` (atomic files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was = router.training
    _save_tensors(folder / ROUTER, router.state_dict())
    atomic_write_text(folder / MANIFEST, json.dumps(_manifest(router, macs, base_config, info), indent=1) + "\n")
    router.train(was)


def export_experts(folder: str | Path, router: AptpRouter, macs: MacModel, unet: torch.nn.Module,
                   info: dict | None = None) -> list[torch.nn.Module]:
    """Slice every code out of ``unet`` (no gate hooks on it) and write a complete bundle to ``folder``."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: exists and is not empty")
    base_config = json.loads(unet.to_json_string())
    manifest = _manifest(router, macs, base_config, info)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        experts = experts_from(router, unet)
        for k, (code, expert) in enumerate(zip(manifest["codes"], experts)):
            code["weights"] = f"expert_{k}.safetensors"
            code["params"] = sum(p.numel() for p in expert.parameters())
            _save_tensors(tmp / code["weights"], expert.state_dict())
        _save_tensors(tmp / ROUTER, router.state_dict())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return experts


@dataclass
class AptpBundle:
    router: AptpRouter
    macs: MacModel
    experts: list[torch.nn.Module]  # empty for a router checkpoint
    manifest: dict[str, Any]

    @property
    def layout(self) -> GateLayout:
        return self.router.layout


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{folder}: not an APTP bundle (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{path}: not an APTP manifest (format {m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("version") != VERSION:
        raise InputError(f"{path}: unsupported APTP manifest version {m.get('version')!r} (expected {VERSION})")
    for key in ("router", "layout", "macs", "codes"):
        if key not in m:
            raise InputError(f"{path}: manifest lacks {key!r}")
    return m


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise InputError(f"{path}: unreadable weights ({type(e).__name__}: {e})") from None


def _strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{what}: weights do not match the manifest ({str(e).splitlines()[0]})") from None


def load_bundle(folder: str | Path, unet: torch.nn.Module | None = None) -> AptpBundle:
    """Reload a bundle. ``unet`` (the base model) is needed only to read a router checkpoint's layout
    when the manifest carries no ``base_config``."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    m = read_manifest(folder)
    if unet is None:
        if not m.get("base_config"):
            raise InputError(f"{folder}: router checkpoint without a base config; pass the base UNet")
        try:
            cfg = {k: v for k, v in m["base_config"].items() if not k.startswith("_")}
            unet = UNet2DConditionModel.from_config(cfg)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{folder / MANIFEST}: base_config does not build a UNet ({type(e).__name__}: {e})") from None
    layout = discover(unet, m.get("ff_chunks", 32))
    if layout.to_json() != m["layout"]:
        raise InputError(f"{folder / MANIFEST}: gate layout does not match the UNet it describes")
    rc = m["router"]
    router = AptpRouter(layout, rc["emb_dim"], rc["n_codes"], rc["temperature"], rc["offset"], rc["sinkhorn_eps"],
                        rc["sinkhorn_iters"], rc.get("eval_noise_seed"))
    _strict_load(router, _load_tensors(folder / ROUTER), folder / ROUTER)
    mc = m["macs"]
    macs = MacModel(mc["total"], mc["fixed"], mc["width"], mc["depth"], layout)
    experts = []
    for code in m["codes"]:
        if "weights" not in code:
            continue
        skeleton = UNet2DConditionModel.from_config(unet.config)
        try:
            expert = apply_spec(skeleton, layout, code["spec"])
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise InputError(f"{folder / MANIFEST}: bad spec for code {code.get('index')} ({type(e).__name__}: {e})") from None
        _strict_load(expert, _load_tensors(folder / code["weights"]), folder / code["weights"])
        experts.append(expert.eval())
    if experts and len(experts) != router.n_codes:
        raise InputError(f"{folder / MANIFEST}: {len(experts)} experts for {router.n_codes} codes")
    return AptpBundle(router.eval(), macs, experts, m)
