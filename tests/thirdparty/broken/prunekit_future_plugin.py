"""A plugin written for a future plugin API: prunekit must refuse it with the reason."""

import prunekit

PLUGIN = prunekit.Plugin(name="too-new", domain="weights", description="declares API 99", api_version=99)
