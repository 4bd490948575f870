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
    (["plugins", "show", "no-such-plugin"], 2, "unknown plugin"),
    (["prune", "x.ply", "-m", "x", "--keep", "1.5"], 2, "keep ratio must be in (0, 1]"),
    (["prune", "x.ply", "-m", "x", "--keep", "0.5", "--count", "3"], 2, "exactly one of"),
    (["prune", "x.ply", "-m", "x", "--keep", "abc"], 2, "Invalid value for '--keep'"),
    (["prune", "x.ply"], 2, "Missing option '-m'"),
    (["prune", "/no/such/file.ply", "-m", "no-such-plugin", "--keep", "0.5"], 1, "no such file"),
    (["info", "/no/such/file.ply"], 1, "no such file"),
    (["-p", "bogus", "plugins"], 2, "expected no:NAME"),
    (["no-such-command"], 2, "No such command 'no-such-command'"),
    (["plugins", "bogus"], 2, "No such command 'bogus'"),
])
def test_exit_codes_and_one_line_errors(args, code, msg):
    r = run(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # click's usage errors too, not typer's box


def test_an_unknown_method_is_a_usage_error(tmp_path):
    f = tmp_path / "scene.ply"
    f.write_text("anything")
    r = run("prune", str(f), "-m", "no-such-plugin", "--keep", "0.5")
    assert r.returncode == 2 and r.stderr.startswith("prunekit: error: unknown plugin 'no-such-plugin'"), r.stderr


def test_strict_json_writes_null_for_non_finite_numbers():
    from prunekit.report import Report, strict_json

    assert json.loads(strict_json({"psnr": float("inf"), "x": [float("nan"), 1.5]})) == {"psnr": None, "x": [None, 1.5]}
    rep = Report(method="eval", input="a", output="b")
    rep.metrics["psnr"] = float("inf")
    assert "Infinity" not in rep.to_json() and json.loads(rep.to_json())["metrics"]["psnr"] is None


def test_warnings_print_as_one_line_and_run_restores_the_format(monkeypatch):
    import warnings

    from prunekit.cli import _one_line_warning, run

    assert _one_line_warning(UserWarning("a.ply: repaired"), UserWarning, "/x/y.py", 3, "code()") == \
        "prunekit: warning: a.ply: repaired\n"
    before = warnings.formatwarning
    monkeypatch.setattr(sys, "argv", ["prunekit", "--version"])
    with pytest.raises(SystemExit) as e:
        run()
    assert e.value.code == 0 and warnings.formatwarning is before  # in-process calls leave the host's format alone
