"""The plugin spec: light import, entry point, config parsing, selection helper."""

import subprocess
import sys

import pytest
import torch

from prunekit import parse_options
from prunekit.errors import UsageError
from prunekit_tokens.config import CroprConfig
from prunekit_tokens.selection import keep_mask, split_indices


def test_spec_module_imports_no_torch():
    code = ("import sys, prunekit_tokens.plugins as p; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules); "
            "print(p.TOKEN_CROPR.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "token-cropr"


def test_entry_point_declared_and_loadable():
    import tomllib
    from pathlib import Path

    from prunekit.plugin import resolve

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    value = pyproject["project"]["entry-points"]["prunekit.plugins"]["token-cropr"]
    assert value == "prunekit_tokens.plugins:TOKEN_CROPR"
    plugin = resolve(value)
    assert plugin.name == "token-cropr" and plugin.extra == "tokens"
    assert plugin.missing_requirements() == []


def test_hooks_resolve_and_config_parses():
    from prunekit_tokens.plugins import TOKEN_CROPR

    assert TOKEN_CROPR.get_hook("transformers").__name__ == "attach_cropr"
    cfg, rest = parse_options(CroprConfig, ["--prune-counts", "4,2", "--llf", "--num-queries=16"])
    assert cfg.prune_counts == (4, 2) and cfg.llf and cfg.num_queries == 16 and rest == []
    with pytest.raises(UsageError):
        parse_options(CroprConfig, ["--train-mode", "sometimes"])


def test_keep_mask_exact_count_and_prefix():
    s = torch.tensor([[-5.0, 1, 2, 3, 0], [9.0, -1, 7, 7, 7]])
    m = keep_mask(s, 3, num_prefix=1)
    assert m.sum(1).tolist() == [3, 3]
    assert m[:, 0].all()
    assert m[0].tolist() == [True, False, True, True, False]
    assert m[1].tolist() == [True, False, True, True, False]  # ties break by index
    kept, dropped = split_indices(m)
    assert kept.tolist() == [[0, 2, 3], [0, 2, 3]] and dropped.tolist() == [[1, 4], [1, 4]]
    with pytest.raises(ValueError):
        keep_mask(s, 0, num_prefix=1)


def test_schedule_names_round_trip():
    from prunekit_tokens.experiment import parse_schedule, schedule_name

    for opts in ({"prune_count": 16, "prune_counts": (), "prune_after": ()},
                 {"prune_count": 0, "prune_counts": (96, 16, 8, 4), "prune_after": (1, 2, 3, 4)},
                 {"prune_count": 0, "prune_counts": (64, 32), "prune_after": ()}):
        name = schedule_name(**opts)
        assert parse_schedule(name) == opts
        CroprConfig(**parse_schedule(name))
    assert schedule_name(0, (96, 16, 8, 4), (1, 2, 3, 4)) == "s96-16-8-4-a1-2-3-4"
    for bad in ("x16", "r", "s1-b", "s4-a"):
        with pytest.raises(UsageError, match="schedule"):
            parse_schedule(bad)
