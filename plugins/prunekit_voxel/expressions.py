"""Referring expressions generated from labelled boxes, each naming exactly one object.

Used for the ScanNet evaluation scan (its NYU40 labels) and, later, procedurally generated
rooms. An expression is emitted only when it is unambiguous in the scene:

- ``unique``: the only object of its class ("the bed");
- ``colour``: the only object of its class with that colour name ("the white cabinet"),
  colour = nearest of a small named palette to the object's mean point colour;
- ``size``: the largest / smallest of >= 2 same-class objects, by box volume, with a
  ``size_ratio`` margin over the runner-up;
- ``closest`` / ``farthest``: among >= 2 same-class objects, the one whose box centre is
  nearest to / farthest from an anchor whose class is unique, by a ``margin`` (metres)
  over the runner-up ("the chair closest to the table").

Phrasing frames (``"find the ..."``, ``"this is the ..."``) follow the openings of the real
human-written ScanRefer-style expressions in ``../shared/data/grounding`` (vigil3d), which
:func:`real_phrasings` reads.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prunekit import InputError

PALETTE = {"white": (0.9, 0.9, 0.9), "black": (0.1, 0.1, 0.1), "gray": (0.5, 0.5, 0.5), "brown": (0.45, 0.3, 0.2),
           "beige": (0.8, 0.72, 0.55), "red": (0.75, 0.15, 0.15), "green": (0.2, 0.55, 0.25),
           "blue": (0.2, 0.3, 0.7), "yellow": (0.85, 0.8, 0.2)}
#: display names for NYU40 catch-all classes; None = never used as an anchor
DISPLAY = {"otherfurniture": "piece of furniture", "otherprop": "object", "otherstructure": "structure"}
FRAMES = ("the {np}.", "find the {np}.", "this is the {np}.")


@dataclass(frozen=True)
class Expression:
    target: int
    text: str
    kind: str
    anchor: int | None = None


def colour_name(rgb) -> str:
    """Nearest palette colour (Euclidean in RGB, components in [0, 1])."""
    names = list(PALETTE)
    d = np.linalg.norm(np.array([PALETTE[n] for n in names]) - np.asarray(rgb, float)[None], axis=1)
    return names[int(d.argmin())]


def _runner_up_gap(values: np.ndarray, best: int, largest: bool) -> float:
    others = np.delete(values, best)
    return float(values[best] - others.max()) if largest else float(others.min() - values[best])


def generate(names: list[str], boxes: np.ndarray, colours: np.ndarray | None = None, *, margin: float = 0.3,
             size_ratio: float = 1.25, seed: int = 0) -> list[Expression]:
    """All unambiguous expressions for objects ``names[k]`` with boxes ``[cx, cy, cz, dx, dy, dz]``."""
    rng = np.random.default_rng(seed)
    names = [DISPLAY.get(n, n) for n in names]
    boxes = np.asarray(boxes, float)
    by_class: dict[str, list[int]] = {}
    for k, n in enumerate(names):
        by_class.setdefault(n, []).append(k)
    anchors = [ks[0] for n, ks in by_class.items() if len(ks) == 1 and n not in DISPLAY.values()]
    out: list[Expression] = []

    def emit(target: int, phrase: str, kind: str, anchor: int | None = None) -> None:
        text = FRAMES[int(rng.integers(len(FRAMES)))].format(np=phrase)
        out.append(Expression(target, text[0].upper() + text[1:], kind, anchor))

    for name, ks in by_class.items():
        if len(ks) == 1:
            emit(ks[0], name, "unique")
            continue
        if colours is not None:
            cn = [colour_name(colours[k]) for k in ks]
            for k, c in zip(ks, cn):
                if cn.count(c) == 1:
                    emit(k, f"{c} {name}", "colour")
        vol = np.prod(boxes[ks, 3:6], axis=1)
        for largest, word in ((True, "largest"), (False, "smallest")):
            best = int(vol.argmax() if largest else vol.argmin())
            big, small = (vol[best], np.delete(vol, best).max()) if largest else (np.delete(vol, best).min(), vol[best])
            if big >= size_ratio * small:
                emit(ks[best], f"{word} {name}", "size")
        for a in anchors:
            dist = np.linalg.norm(boxes[ks, :3] - boxes[a, :3], axis=1)
            for nearest, word in ((True, "closest to"), (False, "farthest from")):
                best = int(dist.argmin() if nearest else dist.argmax())
                if _runner_up_gap(-dist if nearest else dist, best, True) >= margin:
                    emit(ks[best], f"{name} {word} the {names[a]}", "closest" if nearest else "farthest", a)
    return out


def real_phrasings(path: str | os.PathLike) -> list[dict]:
    """Rows of a ScanRefer-style CSV (``scene_id, object_id, object_name, description``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"scene_id", "object_id", "object_name", "description"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{path}: expected ScanRefer-style columns {sorted(need)}")
    return [{k: r[k] for k in need} for r in rows]
