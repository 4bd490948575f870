"""scripts/bench/hollownerf_occupancy.py: the scene's occupied cells and the per-level vertex counts."""

import importlib.util
from pathlib import Path

import pytest
import torch

from prunekit_hashgrid.compact import kept_vertices
from prunekit_hashgrid.saliency import cell_index


@pytest.fixture(scope="module")
def occ_script():
    path = Path(__file__).resolve().parents[3] / "scripts" / "bench" / "hollownerf_occupancy.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _in_solid(x):
    from prunekit_hashgrid.data import _BOX, _SPHERES

    hit = ((x >= torch.tensor(_BOX[0])) & (x <= torch.tensor(_BOX[1]))).all(-1)
    for cx, cy, cz, r, _ in _SPHERES:
        hit |= (x - torch.tensor([cx, cy, cz])).norm(dim=-1) <= r
    return hit


def test_occupied_cells_cover_the_solids_and_inner_cells_are_solid(occ_script):
    G = 16
    occ, surf = occ_script.solid_masks(G)
    assert bool((surf & ~occ).sum() == 0) and 0 < int(surf.sum()) < int(occ.sum()) < G**3
    x = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(0))
    solid = _in_solid(x)
    assert bool(occ[cell_index(x[solid], G)].all())  # every solid point lies in an occupied cell
    inner = (occ & ~surf)[cell_index(x, G)]
    assert int(inner.sum()) > 100 and bool(solid[inner].all())  # cells flagged fully inside are solid
    vol, se = occ_script.solid_volume(100_000)
    assert abs(vol - float(solid.float().mean())) < 5 * se + 0.003


def test_vertex_counts_exact_and_all_cells_give_the_whole_lattice(occ_script):
    G, R = 4, 8
    one = torch.zeros(G**3, dtype=torch.bool)
    one[(1 * G + 1) * G + 1] = True  # cell (1,1,1) spans vertices 2..4 on each axis at R = 8
    (v,) = list(kept_vertices(one, G, R, margin=0.0))
    assert v.shape[0] == 27 and int(v.min()) == 2 and int(v.max()) == 4
    assert sum(x.shape[0] for x in kept_vertices(one, G, R)) == 125  # compaction's safety margin: one more each side
    rows = occ_script.level_table(torch.ones(G**3, dtype=torch.bool), G, [R], [64, 1 << 12])[0]
    assert rows["vertices"] == (R + 1) ** 3 == rows["lattice_vertices"]
    assert rows["T64"]["rows_reached"] == 1.0 and rows["T64"]["load"] == 729 / 64
    assert rows["T4096"]["rows_reached"] <= 729 / 4096
