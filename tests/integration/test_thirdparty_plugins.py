"""A real pip install of two third-party plugin distributions (tests/thirdparty/*):
the good one is listed and loadable with its version; the broken ones are listed as
failed with the reason; `prunekit plugins` still exits 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "thirdparty"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    for name in ("good", "broken"):
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(HERE / name)], capture_output=True, text=True)
        if r.returncode != 0:  # no setuptools in this interpreter: let pip build in isolation
            r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                str(HERE / name)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return target


def cli(site, *args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(site), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "prunekit", *args], capture_output=True, text=True, env=env)


def by_name(r):
    assert r.returncode == 0, r.stderr
    return {row["name"]: row for row in json.loads(r.stdout)}


def test_good_plugin_listed_and_loadable(site):
    rows = by_name(cli(site, "plugins", "--json"))
    good = rows["magnitude"]
    assert good["status"] == "ok"
    assert good["package"] == "prunekit-example-plugin" and good["version"] == "1.2.3"
    assert good["operations"] == ["score", "command:magnitude-demo"]
    r = cli(site, "plugins", "show", "magnitude", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["options"][0]["name"] == "power" and d["options"][0]["default"] == 1.0


def test_broken_plugins_reported_not_fatal(site):
    r = cli(site, "plugins", "--json")
    rows = by_name(r)
    assert rows["broken"]["status"] == "failed"
    assert "this_module_does_not_exist" in rows["broken"]["reason"]
    assert rows["too-new"]["status"] == "failed"
    assert "plugin API 99" in rows["too-new"]["reason"]
    # the human table also exits 0 and names the failure
    t = cli(site, "plugins")
    assert t.returncode == 0 and "failed" in t.stdout
    # asking for the broken plugin itself is a one-line error with exit 1
    s = cli(site, "plugins", "show", "broken")
    assert s.returncode == 1 and "Traceback" not in s.stderr and "this_module_does_not_exist" in s.stderr


def test_disable_switches(site):
    rows = by_name(cli(site, "plugins", "--json", env_extra={"PRUNEKIT_DISABLE_PLUGINS": "magnitude,broken"}))
    assert rows["magnitude"]["status"] == "disabled" and rows["broken"]["status"] == "disabled"
    rows = by_name(cli(site, "-p", "no:magnitude", "plugins", "--json"))
    assert rows["magnitude"]["status"] == "disabled" and rows["too-new"]["status"] == "failed"
    rows = by_name(cli(site, "plugins", "--json", env_extra={"PRUNEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    assert "magnitude" not in rows and "broken" not in rows


def test_good_plugin_scores_through_core_select(site):
    code = ("import prunekit, torch; p = prunekit.load('magnitude'); "
            "s = p.get_scorer()(torch.tensor([0.1, -3.0, 2.0, 0.0]), None, p.make_config(power=2.0)); "
            "print(prunekit.select(s, prunekit.Budget(keep_count=2)).only.tolist())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(site)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[False, True, True, False]"


def test_plugin_contributed_command(site):
    r = cli(site, "magnitude-demo", "top", "--keep", "2", "--", "0.1", "-3", "2", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "2"]
    # listed in the top-level help next to the built-in commands, without being imported
    h = cli(site, "--help")
    assert h.returncode == 0 and "magnitude-demo" in h.stdout and "From plugin magnitude:" in h.stdout
    assert "magnitude-demo" not in cli(site, "-p", "no:magnitude", "--help").stdout
    # disabled plugin: its command is gone (usage error), the rest of the CLI works
    r = cli(site, "-p", "no:magnitude", "magnitude-demo", "top", "1")
    assert r.returncode == 2
