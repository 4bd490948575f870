"""The plugin spec: light import, entry point, listing by the CLI, config parsing, hooks."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prunekit import parse_options
from prunekit.errors import UsageError

from prunekit_voxel.config import Tsp3dConfig

ROOT = Path(__file__).resolve().parents[3]


def _entry_value() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["prunekit.plugins"]["tsp3d"]


def test_spec_module_imports_no_torch():
    code = ("import sys, prunekit_voxel.plugins as p; "
            "assert 'torch' not in sys.modules and 'open3d' not in sys.modules, sorted(sys.modules); "
            "print(p.TSP3D.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tsp3d"


def test_cli_lists_the_declared_entry_point(tmp_path):
    """The pyproject entry point, installed as package metadata, is listed by `prunekit plugins`."""
    dist = tmp_path / "tsp3d_check-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tsp3d-check\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[prunekit.plugins]\ntsp3d = {_entry_value()}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "prunekit", "plugins", "--json"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["tsp3d"]["status"] == "ok", rows["tsp3d"]
    assert rows["tsp3d"]["domain"] == "sparse-voxels"


def test_hooks_resolve_and_config_parses():
    from prunekit.plugin import resolve

    plugin = resolve(_entry_value())
    assert plugin.name == "tsp3d" and plugin.extra == "voxel" and plugin.missing_requirements() == []
    from prunekit_voxel.cba import CBA
    from prunekit_voxel.tgp import TGP

    assert plugin.get_hook("tgp") is TGP and plugin.get_hook("cba") is CBA
    cfg, rest = parse_options(Tsp3dConfig, ["--scene-threshold", "0.6", "--no-cba", "--extra"], allow_unknown=True)
    assert cfg.scene_threshold == 0.6 and cfg.cba is False and cfg.target_threshold == 0.3 and rest == ["--extra"]
    with pytest.raises(UsageError):
        parse_options(Tsp3dConfig, ["--scene-threshold", "1.5"])
