"""Entry-point target of ``nerfacto-hollow`` in the ``nerfstudio.method_configs`` group.

nerfstudio's ``discover_methods()`` loads every entry point of the group when ``ns-train`` starts and
does not catch errors, so this module never raises: if the spec cannot be built, the method is listed
with the reason in its description, and choosing it exits with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro
from nerfstudio.plugins.types import MethodSpecification

_building = False


@dataclass
class UnavailableMethod:
    """Stand-in trainer config of a method whose spec could not be built."""

    method_name: tyro.conf.Suppress[str]
    reason: tyro.conf.Suppress[str]

    def __post_init__(self) -> None:
        if not _building:  # tyro re-creates the config when the user picks the method
            raise SystemExit(f"ns-train {self.method_name}: unavailable: {self.reason}")


def build_spec() -> MethodSpecification:
    global _building
    try:
        from .config import DESCRIPTION, trainer_config

        return MethodSpecification(config=trainer_config(), description=DESCRIPTION)
    except Exception as e:  # noqa: BLE001 - must not escape into nerfstudio's method discovery
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        _building = True
        try:
            stand_in = UnavailableMethod("nerfacto-hollow", reason)
        finally:
            _building = False
        return MethodSpecification(config=stand_in, description=f"[prunekit: unavailable: {reason}]")  # type: ignore[arg-type]


NERFACTO_HOLLOW = build_spec()
