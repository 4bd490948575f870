"""A real localhost deployment: SuperLink + 2 SuperNodes (insecure, loopback ports),
`flwr run . <connection> --stream` from a temp app dir with its own pyproject, two
FedMef rounds, then every process this test started is stopped by PID.

Runtime dependency installation is disabled (no uv, no network) and the connection
is named explicitly (never the default ``:local:``, which spawns a detached SuperLink).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunekit_federated.procs import ChildWatch

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "pkfedtest"
version = "1.0.0"
description = "prunekit federated pruning test app"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "prunekit"

[tool.flwr.app.components]
serverapp = "prunekit_federated.server_app:app"
clientapp = "prunekit_federated.client_app:app"

[tool.flwr.app.config]
method = "fedmef"
rounds = 2
clients = 2
min-clients = 2
dataset = "digits"
client-samples = 64
prune-every = 1
prune-end = 2
timeout = 180.0
results-path = "{result}"
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:  # held open together, so the n ports differ
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_port(port: int, proc, timeout: float = 90.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.mark.skipif(not (BIN / "flower-superlink").exists(), reason="Flower CLIs not installed")
def test_superlink_supernodes_two_rounds(tmp_path):
    home, app = tmp_path / "flwr-home", tmp_path / "app"
    home.mkdir()
    app.mkdir()
    result = tmp_path / "result.json"
    link_port, *node_ports = _free_ports(3)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "pktest"\n\n[superlink.pktest]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n')
    (app / "pyproject.toml").write_text(APP_TOML.format(result=result))
    (app / "README.md").write_text("test app\n")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PRUNEKIT_FED_THREADS": "1"}
    procs: list[subprocess.Popen] = []
    logs = []

    def start(name, args):
        log = open(tmp_path / f"{name}.log", "w")
        logs.append(log)
        p = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT, env=env,
                             cwd=tmp_path, start_new_session=True)
        procs.append(p)
        return p

    watch = ChildWatch()  # every process started below, children of children included
    try:
        watch.__enter__()
        link = start("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(link_port),
                                   "--disable-runtime-dependency-installation"])
        _wait_port(link_port, link)
        nodes = []
        for i, port in enumerate(node_ports):  # both start at once, then both are waited for
            nodes.append((port, start(f"node{i}", ["flower-supernode", "--insecure", "--superlink",
                                                   f"127.0.0.1:{link_port}", "--port", str(port),
                                                   "--node-config", f"partition-id={i} num-partitions=2"])))
        for port, node in nodes:
            _wait_port(port, node)
        r = subprocess.run([str(BIN / "flwr"), "run", ".", "pktest", "--stream"], cwd=app, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        deadline = time.time() + 30
        while not result.exists() and time.time() < deadline:
            time.sleep(0.5)
        summary = json.loads(result.read_text())
        hist = summary["history"]
        assert [h["round"] for h in hist] == [0, 1, 2]
        assert all(h["accepted"] == 2 and h["up_bytes"] > 0 for h in hist[1:])
        assert summary["density"] == pytest.approx(0.1, abs=0.002)
        assert hist[1]["regrow_fraction"] > 0 and hist[1]["grown"] > 0  # server prune/grow happened
    finally:
        watch.__exit__(None, None, None)
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        watch.reap(grace=2.0)  # children in their own sessions (flower-superexec, app processes)
        for log in logs:
            log.close()
    assert not any(p.poll() is None for p in procs)
    assert len(watch.seen) >= 3 and watch.left() == []
