from dataclasses import dataclass

import pytest
import torch

import prunekit
from prunekit import Plugin, PluginError, option, registry


@dataclass
class Cfg:
    k: int = option(2, "a number")


def score(target, context, config):
    return prunekit.Scores.single(torch.as_tensor(target, dtype=torch.float32) * config.k)


@pytest.fixture
def plugin():
    p = prunekit.register(Plugin("toy", "weights", "toy scorer", config=Cfg, scorer=f"{__name__}:score"))
    yield p
    prunekit.unregister("toy")
    registry.enable("toy")


def test_register_load_and_score(plugin):
    p = prunekit.load("toy")
    assert p is plugin and p.operations == ["score"]
    s = p.get_scorer()([1.0, 3.0, 2.0], None, p.make_config(k=3))
    assert prunekit.select(s, prunekit.Budget(keep_count=1)).only.tolist() == [False, True, False]
    names = [i.name for i in prunekit.discover()]
    assert "toy" in names
    st = {s.name: s for s in prunekit.status()}["toy"]
    assert st.status == "ok" and st.package == "<in-process>"


def test_disable_in_process_and_env(plugin, monkeypatch):
    registry.disable("toy")
    with pytest.raises(PluginError, match="disabled"):
        prunekit.load("toy")
    assert {s.name: s for s in prunekit.status()}["toy"].status == "disabled"
    registry.enable("toy")
    monkeypatch.setenv("PRUNEKIT_DISABLE_PLUGINS", "other, toy")
    with pytest.raises(PluginError, match="disabled"):
        prunekit.load("toy")


def test_unknown_plugin_names_installed_ones(plugin):
    with pytest.raises(PluginError, match="unknown plugin 'nope'.*toy"):
        prunekit.load("nope")


def test_incompatible_api_version_refused():
    with pytest.raises(PluginError, match="plugin API 7"):
        prunekit.register(Plugin("future", "x", "y", api_version=7))


def test_missing_requirement_reported_not_raised():
    prunekit.register(Plugin("needs", "x", "y", scorer="somewhere:f", requires=("no_such_module_xyz",), extra="splat"))
    try:
        st = {s.name: s for s in prunekit.status()}["needs"]
        assert st.status == "unavailable" and "install prunekit[splat]" in st.reason
        with pytest.raises(PluginError, match="no_such_module_xyz"):
            prunekit.load("needs").get_scorer()
    finally:
        prunekit.unregister("needs")


def test_bad_reference_is_plugin_error():
    prunekit.register(Plugin("badref", "x", "y", scorer="prunekit:no_such_attr"))
    try:
        with pytest.raises(PluginError, match="no attribute"):
            prunekit.load("badref").get_scorer()
        with pytest.raises(PluginError, match="does not prune files"):
            prunekit.load("badref").get_target()
    finally:
        prunekit.unregister("badref")
