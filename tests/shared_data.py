"""Where the real captures live: ``$PRUNEKIT_DATA``, else ``../shared/data`` beside the repository
(the same rule as ``scripts/bench/common.py``). Tests that need them skip when they are absent."""

import os
from pathlib import Path

DATA = Path(os.environ.get("PRUNEKIT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
