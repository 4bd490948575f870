"""Fixtures for the federated plugin tests.

``LocalGrid`` delivers Flower Messages to a real ClientApp in this process (node
contexts persist across rounds like SuperNodes' ``context.state``; exceptions become
Flower error replies; a node listed in ``silent`` never answers). It drives the real
ServerApp logic quickly; the Ray simulation engine and a real SuperLink are exercised
in test_simulation.py and test_deployment.py.
"""

from __future__ import annotations

import os
import tempfile

import pytest

pytest.importorskip("flwr")
pytest.importorskip("sklearn")

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="flwr-home-test-"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared machine
    yield
    torch.set_num_threads(n)


class LocalGrid:
    def __init__(self, client_app, num_nodes: int, silent: set[int] | None = None, node_config: dict | None = None):
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # this process is the server
        self.app = client_app
        self.nodes = [101 + i for i in range(num_nodes)]
        self.silent = set(silent or ())
        self.contexts = {
            nid: Context(run_id=1, node_id=nid,
                         node_config={"partition-id": i, "num-partitions": num_nodes, **(node_config or {}).get(i, {})},
                         state=RecordDict(), run_config={})
            for i, nid in enumerate(self.nodes)
        }
        self.log: list[tuple[int, str]] = []

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            self.log.append((node, str(msg.content["config"].get("stage", ""))))
            if node in self.silent:
                continue
            try:
                out.append(self.app(msg, self.contexts[node]))
            except Exception as e:  # noqa: BLE001 - what the Flower runtime does with ClientApp exceptions
                out.append(Message(Error(code=1, reason=f"{type(e).__name__}: {e}"), reply_to=msg))
        return out


def tiny_cfg(method: str, **kw):
    import dataclasses

    from prunekit_federated.config import CONFIGS

    base = dict(clients=3, rounds=2, dataset="digits", min_clients=1, local_epochs=1, batch_size=32, client_samples=96,
                prune_every=1, prune_end=2, synflow_iters=5, candidates=2, bn_steps=2, timeout=60.0)
    base.update(kw)
    names = {f.name for f in dataclasses.fields(CONFIGS[method])}
    return CONFIGS[method](**{k: v for k, v in base.items() if k in names})


@pytest.fixture
def local_grid():
    return LocalGrid
