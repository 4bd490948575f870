"""Splat scene IO: INRIA PLY (byte-exact round trips, layouts, repairs, bad files), .splat,
gsplat .pt and nerfstudio .ckpt."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from prunekit.errors import InputError, UsageError
from prunekit_splat.formats import SUFFIXES, WRITE_SUFFIXES, read_scene, write_scene
from prunekit_splat.scene import SH_C0, GaussianScene
from .splat_ply_builder import inria_columns, make_ply
from ...shared_data import DATA

SPLATS = DATA / "splats"
K_OF = {0: 0, 1: 3, 2: 8, 3: 15}


def random_scene(n: int = 50, degree: int = 3, normals: bool = False, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    extra = {"normals": torch.zeros(n, 3)} if normals else {}
    return GaussianScene(r(n, 3), r(n, 4), r(n, 3) - 3, r(n), r(n, 3), r(n, K_OF[degree], 3), extra=extra)


def assert_same(a: GaussianScene, b: GaussianScene) -> None:
    for name in GaussianScene.PER_GAUSSIAN:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# ------------------------------------------------------------------------------ PLY round trips
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("normals", [False, True])
def test_ply_round_trip_is_byte_exact(tmp_path, degree, normals):
    scene = random_scene(40, degree, normals, seed=degree)
    write_scene(scene, tmp_path / "a.ply")
    first = (tmp_path / "a.ply").read_bytes()
    per_vertex = 4 * (14 + 3 * K_OF[degree] + (3 if normals else 0))
    assert len(first) == first.index(b"end_header\n") + len(b"end_header\n") + 40 * per_vertex
    back = read_scene(tmp_path / "a.ply")
    assert_same(back, scene)
    assert back.sh_degree == degree and ("normals" in back.extra) == normals
    write_scene(back, tmp_path / "b.ply")
    assert (tmp_path / "b.ply").read_bytes() == first


@pytest.mark.parametrize("encoding", ["binary_big_endian", "ascii"])
def test_ply_other_encodings_read_and_rewrite_exactly(tmp_path, encoding):
    cols = inria_columns(7, degree=2, normals=True, seed=3)
    data = make_ply(cols, encoding=encoding, comments=("made by hand",))
    (tmp_path / "in.ply").write_bytes(data)
    s = read_scene(tmp_path / "in.ply")
    assert torch.equal(s.means[:, 1], torch.from_numpy(cols["y"]))
    assert torch.equal(s.shN[:, 7, 2], torch.from_numpy(cols["f_rest_23"]))  # B of coefficient 8 (K=8)
    write_scene(s, tmp_path / "out.ply")
    again = read_scene(tmp_path / "out.ply")
    assert_same(again, s)
    if encoding != "ascii":  # ASCII number formatting is ours, not the hand-made file's
        assert (tmp_path / "out.ply").read_bytes() == data
    write_scene(again, tmp_path / "out2.ply")
    assert (tmp_path / "out2.ply").read_bytes() == (tmp_path / "out.ply").read_bytes()


def test_crlf_header_reads_and_round_trips(tmp_path):
    head, body = make_ply(inria_columns(3, degree=1)).split(b"end_header\n")
    data = head.replace(b"\n", b"\r\n") + b"end_header\r\n" + body
    (tmp_path / "w.ply").write_bytes(data)
    s = read_scene(tmp_path / "w.ply")
    assert len(s) == 3 and s.sh_degree == 1
    write_scene(s, tmp_path / "w2.ply")
    assert (tmp_path / "w2.ply").read_bytes() == data


def test_f_rest_channel_major_to_coefficient_major(tmp_path):
    cols = inria_columns(2, degree=3)
    for i in range(45):
        cols[f"f_rest_{i}"] = np.array([100 + i, 200 + i], np.float32)
    (tmp_path / "f.ply").write_bytes(make_ply(cols))
    s = read_scene(tmp_path / "f.ply")
    assert s.shN.shape == (2, 15, 3)
    for k in range(15):
        for c in range(3):
            assert s.shN[0, k, c] == 100 + c * 15 + k
            assert s.shN[1, k, c] == 200 + c * 15 + k


def test_properties_sorted_by_numeric_suffix_and_order_kept(tmp_path):
    cols = inria_columns(5, degree=1, seed=1)
    names = list(cols)
    shuffled = {n: cols[n] for n in reversed(names)}  # rot_3 first ... x last; f_rest_8 before f_rest_0
    shuffled = {"f_rest_8": shuffled.pop("f_rest_8"), **shuffled}
    data = make_ply(shuffled)
    (tmp_path / "s.ply").write_bytes(data)
    s = read_scene(tmp_path / "s.ply")
    assert torch.equal(s.quats, torch.from_numpy(np.stack([cols[f"rot_{i}"] for i in range(4)], 1)))
    assert torch.equal(s.scales[:, 2], torch.from_numpy(cols["scale_2"]))
    assert torch.equal(s.shN[:, 2, 1], torch.from_numpy(cols["f_rest_5"]))  # G (c=1) of coefficient 2 (K=3)
    write_scene(s, tmp_path / "t.ply")
    assert (tmp_path / "t.ply").read_bytes() == data


def test_extra_properties_mixed_types_comments_and_other_elements_round_trip(tmp_path):
    cols = inria_columns(6, degree=0, seed=2)
    cols["label"] = np.arange(6, dtype=np.uint8)
    cols["weight"] = np.linspace(0, 1, 6)
    cols["x"] = np.linspace(-1, 1, 6).astype(np.float32).astype(np.float64)  # core fields are float32 in memory
    types = {"label": "uchar", "weight": "double", "x": "double", "scale_1": "short"}
    cols["scale_1"] = np.array([-3, -2, -1, 0, 1, 2], np.int16)
    data = make_ply(cols, types, comments=("Generated by Nerfstudio!", "Vertical Axis: z"),
                    after_header="element face 1\nproperty list uchar int vertex_indices",
                    after=bytes([3]) + np.array([0, 1, 2], "<i4").tobytes())
    (tmp_path / "m.ply").write_bytes(data)
    s = read_scene(tmp_path / "m.ply")
    assert s.extra["label"].dtype == torch.uint8 and s.extra["label"].tolist() == list(range(6))
    assert s.extra["weight"].dtype == torch.float64
    assert s.scales[:, 1].tolist() == [-3, -2, -1, 0, 1, 2] and s.scales.dtype == torch.float32
    assert s.meta["comments"] == ["comment Generated by Nerfstudio!", "comment Vertical Axis: z"]
    write_scene(s, tmp_path / "n.ply")
    assert (tmp_path / "n.ply").read_bytes() == data
    sub = s.subset(torch.tensor([True, False, True, False, True, False]))
    write_scene(sub, tmp_path / "sub.ply")
    back = read_scene(tmp_path / "sub.ply")
    assert len(back) == 3 and back.extra["label"].tolist() == [0, 2, 4]
    assert_same(back, sub)


def test_changed_sh_degree_gets_fresh_header_keeping_comments(tmp_path):
    cols = inria_columns(4, degree=3, normals=True)
    (tmp_path / "d3.ply").write_bytes(make_ply(cols, comments=("keep me",)))
    s = read_scene(tmp_path / "d3.ply")
    d1 = s.replace(shN=s.shN[:, :3])
    write_scene(d1, tmp_path / "d1.ply")
    back = read_scene(tmp_path / "d1.ply")
    assert back.sh_degree == 1 and back.meta["comments"] == ["comment keep me"]
    assert_same(back, d1)
    assert torch.equal(back.extra["normals"], s.extra["normals"])


def test_gsplat_style_ply_without_normals_is_59_floats(tmp_path):
    scene = random_scene(10, 3)
    write_scene(scene, tmp_path / "g.ply")
    header = (tmp_path / "g.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert header.count("property float") == 59 and "nx" not in header


def test_empty_scene_round_trip(tmp_path):
    write_scene(GaussianScene.empty(2), tmp_path / "e.ply")
    back = read_scene(tmp_path / "e.ply")
    assert len(back) == 0 and back.sh_degree == 2


# ------------------------------------------------------------------------------ real files
@pytest.mark.skipif(not (SPLATS / "donut.ply").exists(), reason="shared data absent")
def test_real_donut(tmp_path):
    s = read_scene(SPLATS / "donut.ply")
    assert len(s) == 45_624 and s.sh_degree == 0 and not s.extra and s.meta["repairs"] == {}
    assert bool((s.quats.norm(dim=1) > 0).all()) and 0.0 < float(s.opacity.mean()) < 1.0
    write_scene(s, tmp_path / "d.ply")
    assert (tmp_path / "d.ply").read_bytes() == (SPLATS / "donut.ply").read_bytes()


@pytest.mark.skipif(not (SPLATS / "train-1000.ply").exists(), reason="shared data absent")
def test_real_train_1000(tmp_path):
    s = read_scene(SPLATS / "train-1000.ply")
    assert len(s) == 1000 and s.sh_degree == 3 and s.extra["normals"].shape == (1000, 3)
    write_scene(s, tmp_path / "t.ply")
    assert (tmp_path / "t.ply").read_bytes() == (SPLATS / "train-1000.ply").read_bytes()
    write_scene(s, tmp_path / "t.pt")
    assert_same(read_scene(tmp_path / "t.pt"), s)


# ------------------------------------------------------------------------------ messy content
def test_messy_values_are_repaired_and_counted(tmp_path):
    cols = inria_columns(10, degree=1)
    cols["opacity"][0], cols["opacity"][1] = np.inf, -np.inf
    cols["x"][2] = np.nan
    cols["f_rest_4"][3] = np.inf
    cols["opacity"][4] = np.nan
    for i in range(4):
        cols[f"rot_{i}"][5] = 0.0
    (tmp_path / "messy.ply").write_bytes(make_ply(cols))
    with pytest.warns(UserWarning, match="repaired"):
        s = read_scene(tmp_path / "messy.ply")
    assert s.meta["repairs"] == {"clamped_inf_opacity": 2, "dropped_nan_rows": 3, "fixed_zero_quats": 1}
    assert len(s) == 7
    assert s.opacities[0] == 20.0 and s.opacities[1] == -20.0
    assert s.quats[2].tolist() == [1.0, 0.0, 0.0, 0.0]  # row 5 is third after dropping rows 2-4
    assert torch.equal(s.means[3:, 0], torch.from_numpy(cols["x"][6:]))


# ------------------------------------------------------------------------------ bad files
def _bad(tmp_path, data: bytes, *expect: str, name: str = "bad.ply") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(InputError) as e:
        read_scene(p)
    msg = str(e.value)
    assert name in msg and "\n" not in msg
    for word in expect:
        assert word in msg, (word, msg)
    return msg


def test_truncated_body(tmp_path):
    data = make_ply(inria_columns(20, degree=2))
    _bad(tmp_path, data[:-5], "truncated", "20 vertices")


def test_vertex_count_larger_than_data(tmp_path):
    _bad(tmp_path, make_ply(inria_columns(5), count=6), "truncated", "6 vertices")
    _bad(tmp_path, make_ply(inria_columns(5), count=10**15), "truncated")


def test_missing_required_property(tmp_path):
    cols = inria_columns(3)
    del cols["opacity"]
    _bad(tmp_path, make_ply(cols), "'opacity'", "missing")


def test_list_property_rejected(tmp_path):
    data = make_ply(inria_columns(2)).replace(b"property float scale_0", b"property list uchar float scale_0")
    _bad(tmp_path, data, "'scale_0'", "list")


def test_not_a_ply_and_header_problems(tmp_path):
    _bad(tmp_path, b"\x89PNG\r\n\x1a\nxxxx", "not a PLY")
    _bad(tmp_path, b"", "not a PLY")
    _bad(tmp_path, b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", "end_header")
    _bad(tmp_path, make_ply(inria_columns(2), encoding="binary_middle_endian"), "format")
    _bad(tmp_path, make_ply(inria_columns(2)).replace(b"property float x", b"property half x"), "'x'", "type")
    _bad(tmp_path, make_ply(inria_columns(2)).replace(b"element vertex 2", b"element vertex two"), "element")
    _bad(tmp_path, make_ply(inria_columns(2)).replace(b"element vertex", b"element splat"), "vertex")


def test_wrong_f_rest_count(tmp_path):
    cols = inria_columns(2, degree=1)
    cols["f_rest_9"] = cols["f_rest_0"].copy()
    _bad(tmp_path, make_ply(cols), "f_rest", "0, 9, 24, 45")


def test_compressed_ply_rejected_with_hint(tmp_path):
    data = (b"ply\nformat binary_little_endian 1.0\nelement chunk 1\nproperty float min_x\n"
            b"element vertex 1\nproperty uint packed_position\nend_header\n" + bytes(8))
    _bad(tmp_path, data, "compressed")


def test_ascii_malformed(tmp_path):
    data = make_ply(inria_columns(3), encoding="ascii")
    _bad(tmp_path, data[:-20], "ASCII")
    lines = data.split(b"\n")
    lines[-2] = b" ".join([b"abc"] + lines[-2].split()[1:])
    _bad(tmp_path, b"\n".join(lines), "ASCII", "expected numbers")


def test_missing_file_directory_and_unknown_suffix(tmp_path):
    _bad(tmp_path, b"x", "unsupported", name="scene.xyz")
    with pytest.raises(InputError, match="not found"):
        read_scene(tmp_path / "nope.ply")
    (tmp_path / "dir.ply").mkdir()
    with pytest.raises(InputError, match="directory"):
        read_scene(tmp_path / "dir.ply")
    with pytest.raises(UsageError, match="cannot write"):
        write_scene(random_scene(2), tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()
    assert set(WRITE_SUFFIXES) <= set(SUFFIXES)


# ------------------------------------------------------------------------------ .splat
def test_splat_round_trip_within_quantisation(tmp_path):
    s = random_scene(200, 2, seed=5)
    s = s.replace(sh0=(torch.rand(200, 3) - 0.5) / SH_C0 * 0.9)  # colours inside [0, 1]
    write_scene(s, tmp_path / "a.splat")
    assert (tmp_path / "a.splat").stat().st_size == 200 * 32
    b = read_scene(tmp_path / "a.splat")
    assert b.sh_degree == 0 and len(b) == 200
    assert torch.equal(b.means, s.means)
    assert torch.allclose(b.scales, s.scales, atol=1e-5)
    assert (b.rgb - s.rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert (b.opacity - s.opacity).abs().max() <= 0.5 / 255 + 1e-4
    dots = (b.rotation * s.rotation).sum(1).abs()
    assert dots.min() > 1 - 1e-3
    write_scene(b, tmp_path / "b.splat")  # re-quantising does not drift
    c = read_scene(tmp_path / "b.splat")
    assert torch.equal(c.means, s.means) and torch.equal(c.sh0, b.sh0) and torch.equal(c.opacities, b.opacities)
    assert (c.rotation * s.rotation).sum(1).abs().min() > 1 - 1e-3


def test_splat_sort_and_bad_size(tmp_path):
    s = random_scene(30, 0, seed=2)
    write_scene(s, tmp_path / "s.splat", sort=True)
    b = read_scene(tmp_path / "s.splat")
    key = torch.exp(b.scales.sum(1)) * b.opacity
    assert bool((key[:-1] >= key[1:] - 1e-3 * key[:-1]).all())
    _bad(tmp_path, (tmp_path / "s.splat").read_bytes()[:-3], "multiple of 32", name="cut.splat")


# ------------------------------------------------------------------------------ checkpoints
def test_gsplat_checkpoint_exact_round_trip(tmp_path):
    s = random_scene(25, 3, seed=7)
    s.meta["step"] = 29_999
    write_scene(s, tmp_path / "ckpt_29999_rank0.pt")
    raw = torch.load(tmp_path / "ckpt_29999_rank0.pt", weights_only=True)
    assert raw["step"] == 29_999 and raw["splats"]["sh0"].shape == (25, 1, 3)
    assert raw["splats"]["opacities"].shape == (25,)
    b = read_scene(tmp_path / "ckpt_29999_rank0.pt")
    assert_same(b, s)
    assert b.meta["step"] == 29_999


def test_gsplat_checkpoint_bad_content(tmp_path):
    torch.save({"step": 1, "model": {}}, tmp_path / "a.pt")
    with pytest.raises(InputError, match="splats"):
        read_scene(tmp_path / "a.pt")
    s = random_scene(4)
    torch.save({"step": 1, "splats": {"means": s.means, "scales": s.scales, "quats": s.quats[:3],
                                      "opacities": s.opacities, "sh0": s.sh0[:, None]}}, tmp_path / "b.pt")
    with pytest.raises(InputError, match=r"quats has shape \[3, 4\]"):
        read_scene(tmp_path / "b.pt")
    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="weights_only"):
        read_scene(tmp_path / "c.pt")


class Payload:  # an arbitrary pickled object: weights_only loading must refuse it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoint_never_unpickles_arbitrary_objects(tmp_path, capsys):
    torch.save({"step": 0, "splats": {"means": torch.zeros(1, 3)}, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="weights_only"):
        read_scene(tmp_path / "evil.pt")
    assert "unpickled!" not in capsys.readouterr().out


def test_nerfstudio_checkpoint(tmp_path):
    s = random_scene(12, 3, seed=9)
    p = "_model.gauss_params."
    pipe = {p + "means": s.means, p + "scales": s.scales, p + "quats": s.quats, p + "features_dc": s.sh0,
            p + "features_rest": s.shN, p + "opacities": s.opacities[:, None], "_model.other": torch.ones(2)}
    # stock nerfstudio schedulers store numpy scalars (nerfstudio issue #3683): still readable
    sched = {"means": {"base_lrs": [np.float64(1.6e-4)], "_last_lr": [np.float32(1e-5)], "last_epoch": np.int64(7)}}
    torch.save({"step": 30000, "pipeline": pipe, "optimizers": {"means": {"state": {}}}, "schedulers": sched,
                "scalers": {}}, tmp_path / "step-000030000.ckpt")
    b = read_scene(tmp_path / "step-000030000.ckpt")
    assert_same(b, s)
    assert b.meta["format"] == "nerfstudio_ckpt" and b.meta["step"] == 30000
    pipe[p + "features_rest"] = torch.zeros(12, 7, 3)
    torch.save({"pipeline": pipe}, tmp_path / "bad.ckpt")
    with pytest.raises(InputError, match="7 coefficients"):
        read_scene(tmp_path / "bad.ckpt")
    torch.save({"pipeline": {"_model.field.weight": torch.ones(1)}}, tmp_path / "nerfacto.ckpt")
    with pytest.raises(InputError, match="gauss_params"):
        read_scene(tmp_path / "nerfacto.ckpt")


def test_inf_opacity_in_checkpoint_is_clamped(tmp_path):
    s = random_scene(3, 0)
    s.opacities[1] = math.inf
    write_scene(s, tmp_path / "c.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = read_scene(tmp_path / "c.pt")
    assert b.meta["repairs"] == {"clamped_inf_opacity": 1} and float(b.opacity[1]) > 0.999
