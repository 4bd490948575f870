"""Example third-party plugin: scores the units of a 1-D weight vector by magnitude."""

from dataclasses import dataclass

import prunekit


@dataclass
class MagnitudeConfig:
    power: float = prunekit.option(1.0, "score = |w| ** power")


def score(weights, context, config: MagnitudeConfig):
    import torch

    return prunekit.Scores.single(torch.as_tensor(weights).abs() ** config.power)


PLUGIN = prunekit.Plugin(
    name="magnitude",
    domain="weights",
    description="Magnitude scores for a flat weight vector (example plugin)",
    config=MagnitudeConfig,
    scorer="prunekit_example_plugin:score",
    requires=("torch",),
    commands={"magnitude-demo": "prunekit_example_plugin.cli:app"},
)
