import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ...shared_data import DATA


MNIST = DATA / "mnist"


def test_plugin_specs_import_only_prunekit():
    code = ("import sys, prunekit_federated.plugins as p; "
            "bad = [m for m in ('torch', 'flwr', 'ray', 'sklearn') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_entry_points_declared_and_loadable():
    # read pyproject.toml rather than installed metadata: a stale prunekit.egg-info at the
    # repository root can shadow the editable install's entry points when cwd is on sys.path
    import tomllib

    import prunekit
    from prunekit.plugin import resolve

    root = Path(__file__).resolve().parents[3]
    eps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["prunekit.plugins"]
    for name, attr in (("fedtiny", "FEDTINY"), ("fedmef", "FEDMEF"), ("hidenseek", "HIDENSEEK")):
        assert eps[name] == f"prunekit_federated.plugins:{attr}"
        p = resolve(eps[name])
        assert p.name == name and p.domain == "federated" and p.extra == "federated"
        assert "hook:server_app" in p.operations
    prunekit.register(resolve(eps["fedmef"]))
    try:
        assert callable(prunekit.load("fedmef").get_hook("client_app"))
    finally:
        prunekit.unregister("fedmef")


def test_config_parsing_and_validation():
    from prunekit import UsageError, parse_options
    from prunekit_federated.config import FedMefConfig, config_for

    cfg, rest = parse_options(FedMefConfig, ["--activation-prune", "0.25", "--norm", "bn", "--rounds", "3"])
    assert cfg.activation_prune == 0.25 and cfg.norm == "bn" and cfg.rounds == 3 and rest == []
    with pytest.raises(UsageError):
        parse_options(FedMefConfig, ["--sparsity", "1.5"])
    # run_config / ConfigRecord form (dash keys, strings) round-trips
    c2 = config_for("fedmef", {**cfg.to_record(), "method": "fedmef", "rounds": "3"})
    assert c2 == cfg
    with pytest.raises(UsageError):
        config_for("nope")


def test_dirichlet_partition_properties():
    from prunekit_federated.data import dirichlet_partition

    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 8, alpha=0.3, seed=0)
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(1000))  # disjoint and complete
    assert min(len(p) for p in parts) >= 10
    skew = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    iid = [np.bincount(labels[p], minlength=10).max() / len(p) for p in dirichlet_partition(labels, 8, 1000.0, 0)]
    assert np.mean(skew) > np.mean(iid) + 0.1  # small alpha = label-skewed clients
    with pytest.raises(ValueError):
        dirichlet_partition(labels, 200, alpha=0.5, seed=0)


def test_digits_and_client_split_are_deterministic():
    from prunekit_federated.data import client_data, server_test_data

    a = client_data("digits", "", 1, 4, 0.5, 0.2, 0)
    b = client_data("digits", "", 1, 4, 0.5, 0.2, 0)
    assert len(a) > 0 and (a.y == b.y).all()
    test = server_test_data("digits", "", 0.2, 0)
    assert len(test) == pytest.approx(0.2 * 1797, abs=10)
    assert a.x.shape[1:] == (1, 8, 8)


@pytest.mark.skipif(not MNIST.exists(), reason="shared MNIST data absent")
def test_real_mnist_loads():
    from prunekit_federated.data import load_dataset

    ds = load_dataset("mnist", str(MNIST))
    assert len(ds) == 10000 and ds.x.shape[1:] == (1, 28, 28)
    assert sorted(np.unique(ds.y.numpy()).tolist()) == list(range(10))


def test_bad_idx_file_is_an_input_error(tmp_path):
    from prunekit.errors import InputError
    from prunekit_federated.data import load_dataset

    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 5, 28, 28) + b"\0" * 10)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not idx")
    load_dataset.cache_clear()
    with pytest.raises(InputError, match="t10k-images"):
        load_dataset("mnist", str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        load_dataset("mnist", str(tmp_path / "missing"))


def test_cli_errors_are_one_line():
    from typer.testing import CliRunner

    from prunekit_federated.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["run", "bogus"])
    assert r.exit_code == 2 and "unknown method" in r.output
    r = runner.invoke(app, ["run", "fedtiny", "--sparsity", "1.2", "--dataset", "digits"])
    assert r.exit_code == 2 and "sparsity" in r.output
    r = runner.invoke(app, ["run", "fedmef", "--dataset", "digits", "--no-such-option", "3"])
    assert r.exit_code == 2 and "unknown option" in r.output
    r = runner.invoke(app, ["run", "--help"])
    assert r.exit_code == 0 and "--clients" in r.output


def test_cli_passes_settings_to_the_simulation(monkeypatch):
    from typer.testing import CliRunner

    import prunekit_federated.simulation as sim
    from prunekit_federated.cli import app

    seen = {}

    def fake(method, cfg, **kw):
        seen.update(method=method, cfg=cfg)
        return {"history": [{"round": 1, "accuracy": 0.5, "down_bytes": 10, "up_bytes": 5, "accepted": 3,
                             "sent": 3, "rejected": [], "failed": [], "timed_out": []}],
                "final_accuracy": 0.5, "density": 0.2, "seconds": 1.0}
    monkeypatch.setattr(sim, "simulate", fake)
    r = CliRunner().invoke(app, ["run", "fedmef", "--clients", "5", "--rounds", "7", "--sparsity", "0.8",
                                 "--dataset", "digits", "--extrusion-lambda", "0.05"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert seen["method"] == "fedmef" and cfg.clients == 5 and cfg.rounds == 7
    assert cfg.sparsity == 0.8 and cfg.extrusion_lambda == 0.05
    assert "final accuracy 0.5000" in r.output


def test_python_m_entry():
    r = subprocess.run([sys.executable, "-m", "prunekit_federated", "run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--sparsity" in r.stdout


def test_core_cli_mounts_fed_group():
    """`prunekit fed run ...` through the core CLI (plugin-declared sub-command)."""
    r = subprocess.run([sys.executable, "-m", "prunekit", "fed", "run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--sparsity" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "prunekit", "fed", "run", "bogus"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["prunekit: error: unknown method 'bogus' (choose from fedavg, fedtiny, "
                                             "fedmef, hidenseek)"]


def test_width_option_scales_the_cnn():
    from prunekit_federated.config import config_for
    from prunekit_federated.models import build_model

    for method in ("fedavg", "fedmef", "hidenseek"):
        one = build_model("digits", method, config_for(method, {}, dataset="digits"))
        two = build_model("digits", method, config_for(method, {"width": "2"}, dataset="digits"))
        assert (two.conv1.out_channels, two.conv2.out_channels, two.fc1.out_features) == (32, 64, 128)
        assert two.fc1.in_features == 2 * one.fc1.in_features
    with pytest.raises(ValueError, match="width"):
        config_for("fedavg", {}, width=0)
