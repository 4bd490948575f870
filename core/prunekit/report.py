"""Report: before/after counts, bytes, parameters, MACs, wall time and quality metrics.

Printed as a table (rich), written as JSON. Every figure that a report shows is a
measured value handed to it; nothing is filled in by default.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .fileio import atomic_write_text


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def strict_json(obj: Any, indent: int = 2) -> str:
    """Standard JSON: NaN and +-inf (e.g. the PSNR of identical renders) become ``null``, which every JSON
    parser reads (Python's ``json`` would write ``Infinity``, which most do not); other objects go through
    ``float`` (numpy and torch scalars) or ``str``."""
    def default(o):
        try:
            return _finite(float(o))
        except (TypeError, ValueError):
            return str(o)

    return json.dumps(_finite(obj), indent=indent, default=default, allow_nan=False)


def machine_info() -> dict[str, Any]:
    """The machine a figure was measured on (for benchmark JSON)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


@dataclass
class Report:
    method: str
    input: str = ""
    output: str = ""
    budget: str = ""
    before: dict[str, float] = field(default_factory=dict)  # e.g. {"units": 45624, "bytes": 2.5e6}
    after: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    metrics: dict[str, float] = field(default_factory=dict)  # quality figures
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def time(self, stage: str):
        """Context manager adding the wall time of a block to ``timings[stage]``."""
        report = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.perf_counter()
                return self

            def __exit__(self, *exc):
                report.timings[stage] = report.timings.get(stage, 0.0) + time.perf_counter() - self.t0
                return False

        return _Timer()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["machine"] = machine_info()
        return d

    def to_json(self) -> str:
        return strict_json(self.to_dict())

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    def rows(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for k in list(dict.fromkeys([*self.before, *self.after])):
            b, a = self.before.get(k), self.after.get(k)
            ratio = f"{a / b:.3f}" if (a is not None and b) else ""
            rows.append((k, _fmt(b), _fmt(a), ratio))
        return rows

    def table(self) -> str:
        """Plain-text table (also what the rich console prints)."""
        lines = [f"prunekit {self.method}: {self.input} -> {self.output or '(dry run)'}  [{self.budget}]"]
        lines.append(f"{'':14}{'before':>14}{'after':>14}{'ratio':>9}")
        for k, b, a, r in self.rows():
            lines.append(f"{k:14}{b:>14}{a:>14}{r:>9}")
        for k, v in self.metrics.items():
            lines.append(f"{k:14}{_fmt(v):>28}")
        if self.timings:
            lines.append("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        lines.extend(self.notes)
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    v = int(v)
    return f"{v:,}"
