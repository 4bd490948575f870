"""Entry-point target of ``nerfacto-hollow`` in the ``nerfstudio.method_configs`` group.

nerfstudio's ``discover_methods()`` loads every entry point of the group when ``ns-train`` starts and
does not catch errors, so this module never raises: if the spec cannot be built, the method is listed
with the reason in its description, and choosing it exits with that reason.
"""

from __future__ import annotations

from prunekit.nerfstudio import method_spec


def build_spec():
    def build():
        from .config import DESCRIPTION, trainer_config

        return trainer_config(), DESCRIPTION

    return method_spec("nerfacto-hollow", build)


NERFACTO_HOLLOW = build_spec()
