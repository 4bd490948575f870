import json
import os
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "prunekit", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("prunekit ")


def test_plugins_json_parses():
    r = run("plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert {"name", "domain", "package", "version", "status"} <= set(row)


@pytest.mark.parametrize("args,code,msg", [
    (["plugins", "show", "no-such-plugin"], 1, "unknown plugin"),
    (["prune", "x.ply", "-m", "x", "--keep", "1.5"], 2, "keep ratio must be in (0, 1]"),
    (["prune", "x.ply", "-m", "x", "--keep", "0.5", "--count", "3"], 2, "exactly one of"),
    (["prune", "x.ply", "-m", "x", "--keep", "abc"], 2, ""),
    (["prune", "/no/such/file.ply", "-m", "no-such-plugin", "--keep", "0.5"], 1, "no such file"),
    (["info", "/no/such/file.ply"], 1, "no such file"),
    (["-p", "bogus", "plugins"], 2, "expected no:NAME"),
    (["no-such-command"], 2, ""),
])
def test_exit_codes_and_one_line_errors(args, code, msg):
    r = run(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert msg in r.stderr
