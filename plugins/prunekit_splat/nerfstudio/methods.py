"""Entry-point targets of the ``nerfstudio.method_configs`` group.

nerfstudio's ``discover_methods()`` loads every entry point of that group when ``ns-train``,
``ns-export`` or ``ns-viewer`` starts, without catching errors: an exception here would break
those commands for every method. So this module never raises at import. It imports nerfstudio's
config classes (already imported by nerfstudio at that point) and ``.config``; the model, the
scorers and gsplat's strategy code load only when a model is built. If building a spec fails
(e.g. a broken prunekit install), the method is still listed, with the reason in its
description, and choosing it exits with that reason instead of training something else.
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
        if not _building:  # tyro re-creates the config when the user picks this method
            raise SystemExit(f"ns-train {self.method_name}: unavailable: {self.reason}")


def build_spec(name: str) -> MethodSpecification:
    """The ``MethodSpecification`` of ``name`` (a key of ``config.METHODS``), or a stand-in."""
    try:
        import copy

        from .config import METHODS, trainer_config

        model, description = METHODS[name]
        return MethodSpecification(config=trainer_config(name, copy.deepcopy(model)), description=description)
    except Exception as e:  # noqa: BLE001 - must not escape into nerfstudio's method discovery
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        return MethodSpecification(config=_stand_in(name, reason),  # type: ignore[arg-type]
                                   description=f"[prunekit: unavailable: {reason}]")


def _stand_in(name: str, reason: str) -> UnavailableMethod:
    global _building
    _building = True
    try:
        return UnavailableMethod(name, reason)
    finally:
        _building = False


SPLATFACTO_SUNDAE = build_spec("splatfacto-sundae")
SPLATFACTO_RADSPLAT = build_spec("splatfacto-radsplat")
SPLATFACTO_LIGHTGAUSSIAN = build_spec("splatfacto-lightgaussian")
