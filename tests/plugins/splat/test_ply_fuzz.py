"""Fuzzing the PLY reader: every mutated file either reads as a valid scene or raises InputError."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekit.errors import InputError
from prunekit_splat.formats import read_scene
from prunekit_splat.scene import GaussianScene
from .splat_ply_builder import inria_columns, make_ply

TOKENS = ["ply", "format", "ascii", "binary_little_endian", "binary_big_endian", "1.0", "element", "vertex",
          "face", "chunk", "property", "list", "uchar", "int", "float", "double", "short", "half", "x", "opacity",
          "f_rest_3", "f_rest_99", "scale_7", "rot_0", "nx", "normals", "packed_position", "0", "1", "3", "-1",
          "999999999999", "end_header", "comment", "", "\xff", "\x00"]


def base_files() -> list[bytes]:
    cols = inria_columns(4, degree=1, normals=True, seed=11)
    cols["label"] = np.arange(4, dtype=np.uint8)
    types = {"label": "uchar"}
    return [make_ply(cols, types, comments=("fuzz",)),
            make_ply(cols, types, encoding="binary_big_endian"),
            make_ply(cols, types, encoding="ascii"),
            make_ply(inria_columns(3, degree=0, seed=2),
                     after_header="element face 1\nproperty list uchar int vertex_indices",
                     after=bytes([3]) + np.arange(3, dtype="<i4").tobytes())]


BASES = base_files()


def check(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.ply"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scene = read_scene(path)
    except InputError as e:
        msg = str(e)
        assert msg.startswith(str(path)) and "\n" not in msg, msg
        return
    assert isinstance(scene, GaussianScene)
    for name in ("means", "scales", "quats", "sh0", "opacities"):
        assert bool(torch.isfinite(getattr(scene, name)).all()), name
    assert bool(torch.isfinite(scene.shN).all())
    assert not bool((scene.quats == 0).all(dim=1).any())
    assert scene.means.dtype == torch.float32 and scene.shN.shape[1:] in ((0, 3), (3, 3), (8, 3), (15, 3))


def _body_start(data: bytes) -> int:
    at = data.find(b"end_header\n")
    return len(data) if at < 0 else at + len(b"end_header\n")


def mutate_header(data: bytes, rnd: random.Random) -> bytes:
    end = _body_start(data)
    lines = data[:end].decode("latin-1").split("\n")[:-1] or [""]
    op = rnd.randrange(5)
    i = rnd.randrange(len(lines))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[rnd.randrange(len(lines))])
    elif op == 2:
        j = rnd.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        toks = lines[i].split(" ")
        toks[rnd.randrange(len(toks))] = rnd.choice(TOKENS) if op == 3 else str(rnd.randrange(-2, 10**7))
        lines[i] = " ".join(toks)
    return ("\n".join(lines) + "\n").encode("latin-1") + data[end:]


def mutate_body(data: bytes, rnd: random.Random) -> bytes:
    op = rnd.randrange(4)
    b = bytearray(data)
    if not b:
        return data
    if op == 0:
        return bytes(b[: rnd.randrange(len(b))])
    if op == 1:
        for _ in range(rnd.randrange(1, 20)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        return bytes(b)
    if op == 2:
        return bytes(b + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64))))
    start = _body_start(data)
    for _ in range(rnd.randrange(1, 6)):  # NaN / inf / zero / huge floats in the vertex data
        at = rnd.randrange(start, max(start + 1, len(b) - 4))
        b[at: at + 4] = rnd.choice([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff", bytes(4),
                                    b"\xff\xff\x7f\x7f"])
    return bytes(b[: len(data)])


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(range(len(BASES))), seed=st.integers(0, 2**32 - 1),
       n_header=st.integers(0, 3), n_body=st.integers(0, 2))
def test_mutated_ply_is_scene_or_input_error(tmp_path, base, seed, n_header, n_body):
    rnd = random.Random(seed)
    data = BASES[base]
    for _ in range(n_header):
        data = mutate_header(data, rnd)
    for _ in range(n_body):
        data = mutate_body(data, rnd)
    check(tmp_path, data)


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes_and_prefix_cuts(tmp_path, seed):
    rnd = random.Random(seed)
    for base in BASES:
        for cut in sorted(rnd.sample(range(len(base)), 40)):
            check(tmp_path, base[:cut])
    for _ in range(50):
        check(tmp_path, b"ply\n" + bytes(rnd.randrange(256) for _ in range(rnd.randrange(200))))
