"""All four methods in Flower's simulation engine (Ray backend), one start-up, with faults."""

import math

import pytest

from .conftest import tiny_cfg

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def sim():
    from prunekit_federated.procs import ChildWatch
    from prunekit_federated.simulation import simulate

    # generous round timeout: Ray workers import torch on first use, slowly on a loaded machine
    runs = [(m, tiny_cfg(m, clients=4, rounds=2, min_clients=4, timeout=600.0))
            for m in ("fedavg", "fedtiny", "fedmef", "hidenseek")]
    # partition 1 sends NaN in round 1; partition 2 dies mid-round in round 2 (every method)
    with ChildWatch() as watch:  # a second, independent record of what the run started
        out = simulate("fedavg", runs=runs, faults={1: "nan@1", 2: "crash@2"}, num_cpus=2)
    return out, watch


def test_no_ray_process_left_behind(sim):
    _, watch = sim
    assert len(watch.seen) >= 3  # gcs_server, raylet, workers were seen while it ran
    assert watch.left() == []  # all gone when simulate() returned


def test_every_method_ran_in_the_simulation_engine(sim):
    sim, _ = sim
    assert sorted(sim) == ["0:fedavg", "1:fedtiny", "2:fedmef", "3:hidenseek"]
    for key, s in sim.items():
        rounds = [h["round"] for h in s["history"]]
        assert rounds == [0, 1, 2], key
        assert all(math.isfinite(h["accuracy"]) for h in s["history"]), key
        assert s["density"] == (1.0 if key.endswith("fedavg") else pytest.approx(0.1, abs=0.002))


def test_faults_handled_by_the_real_runtime(sim):
    sim, _ = sim
    for key, s in sim.items():
        h1, h2 = s["history"][1], s["history"][2]
        assert h1["accepted"] == 3 and len(h1["rejected"]) == 1, key
        assert "non-finite" in h1["rejected"][0]["reason"]
        assert h2["accepted"] == 3 and len(h2["failed"]) == 1, key
        assert "dropped out mid-round" in h2["failed"][0]["reason"]
        # the faulty nodes are two different SuperNodes
        assert h1["rejected"][0]["node"] != h2["failed"][0]["node"]


def test_bytes_counted_per_round(sim):
    sim, _ = sim
    dense = sim["0:fedavg"]["history"][1]
    for key in ("1:fedtiny", "2:fedmef", "3:hidenseek"):
        h = sim[key]["history"][2]
        assert 0 < h["up_bytes"] / h["accepted"] < 0.35 * dense["up_bytes"] / dense["accepted"], key
        assert 0 < h["down_bytes"] < dense["down_bytes"], key


def test_hidenseek_bn_statistics_re_estimated_through_the_runtime(sim):
    sim, _ = sim
    h = sim["3:hidenseek"]["history"]
    # round 1: the node whose update was rejected holds no frozen weights yet, so 3 nodes are
    # asked; round 2: all 4 (the node that died mid-training still answers the evaluate phase)
    assert [h[r]["bn_calibration"]["accepted"] for r in (1, 2)] == [3, 4]
    assert all(h[r]["bn_calibration"]["up_bytes"] > 0 and "accuracy_before_calibration" in h[r] for r in (1, 2))
