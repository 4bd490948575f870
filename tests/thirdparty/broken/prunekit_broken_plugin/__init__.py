"""A plugin whose import fails: prunekit must report it and carry on."""

import this_module_does_not_exist  # noqa: F401

PLUGIN = None
