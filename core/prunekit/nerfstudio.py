"""Method specs for nerfstudio's ``nerfstudio.method_configs`` entry-point group that never raise.

nerfstudio's ``discover_methods()`` loads every entry point of that group when ``ns-train``,
``ns-export`` or ``ns-viewer`` starts, without catching errors, so an exception in one plugin's
entry-point module would break those commands for every method. :func:`method_spec` builds the
spec and, if anything fails (a broken install, a missing dependency), returns a stand-in that is
still listed, with the reason in its description; choosing it exits with that reason instead of
training something else. nerfstudio and tyro are imported only when it is called (by a plugin's
entry-point module, which nerfstudio itself imports).
"""

from dataclasses import make_dataclass
from typing import Any, Callable

_building = False
_stand_in_class = None


def method_spec(name: str, build: Callable[[], tuple[Any, str]]):
    """``MethodSpecification`` from ``build() -> (trainer_config, description)``, or the stand-in."""
    from nerfstudio.plugins.types import MethodSpecification

    try:
        config, description = build()
        return MethodSpecification(config=config, description=description)
    except Exception as e:  # noqa: BLE001 - must not escape into nerfstudio's method discovery
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        return MethodSpecification(config=unavailable(name, reason), description=f"[prunekit: unavailable: {reason}]")


def unavailable(name: str, reason: str):
    """Stand-in trainer config: creating it exits with the reason, except here (tyro re-creates the
    config when the user picks the method, and that is when it must stop)."""
    global _building, _stand_in_class
    if _stand_in_class is None:
        import tyro

        def exit_unless_building(self) -> None:
            if not _building:
                raise SystemExit(f"ns-train {self.method_name}: unavailable: {self.reason}")

        _stand_in_class = make_dataclass(
            "UnavailableMethod", [("method_name", tyro.conf.Suppress[str]), ("reason", tyro.conf.Suppress[str])],
            namespace={"__post_init__": exit_unless_building, "__module__": __name__})
    _building = True
    try:
        return _stand_in_class(name, reason)
    finally:
        _building = False
