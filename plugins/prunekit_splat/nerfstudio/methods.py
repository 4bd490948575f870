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

from prunekit.nerfstudio import method_spec


def build_spec(name: str):
    """The ``MethodSpecification`` of ``name`` (a key of ``config.METHODS``), or a listed stand-in."""
    def build():
        import copy

        from .config import METHODS, trainer_config

        model, description = METHODS[name]
        return trainer_config(name, copy.deepcopy(model)), description

    return method_spec(name, build)


SPLATFACTO_SUNDAE = build_spec("splatfacto-sundae")
SPLATFACTO_RADSPLAT = build_spec("splatfacto-radsplat")
SPLATFACTO_LIGHTGAUSSIAN = build_spec("splatfacto-lightgaussian")
