"""Make the sample scene shipped in scenes/: a Gaussian-splat cow with its cameras.

Source: Keenan Crane's "Spot" cow mesh and texture (public domain), from
../shared/data/meshes/cow.obj. Steps:
1. sample points uniformly by area on the textured mesh, each a flat disc Gaussian
   (tangent scale from the sampling density, thin along the face normal) coloured from the
   texture;
2. the teacher is a dense sampling (``--teacher`` Gaussians), rendered from views spread
   over the sphere (these are the "photos");
3. the shipped scene (``--gaussians``, SH degree 1) starts from a sparser sampling plus a few
   low-opacity floaters and is trained against those renders with the reference renderer
   (prunekit_splat.distill), like a real capture would be.

Writes scenes/cow.ply and scenes/cow_cameras.json (INRIA form). Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prunekit_splat.cameras import synthesize_cameras, write_cameras_json
from prunekit_splat.distill import distill
from prunekit_splat.formats import write_scene
from prunekit_splat.geometry import rotmat_to_quat
from prunekit_splat.scene import SH_C0, GaussianScene

ROOT = Path(__file__).resolve().parents[1]
MESH = ROOT.parent / "shared" / "data" / "meshes"


def load_obj(path: Path):
    v, vt, faces = [], [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            idx = [p.split("/") for p in parts[1:4]]
            faces.append([[int(i[0]) - 1, int(i[1]) - 1] for i in idx])
    f = np.array(faces)
    return np.array(v, np.float64), np.array(vt, np.float64), f[..., 0], f[..., 1]


def sample_surface(n: int, seed: int, opacity: float = 0.9, sh_degree: int = 1) -> GaussianScene:
    v, vt, fv, ft = load_obj(MESH / "cow.obj")
    tex = np.asarray(Image.open(MESH / "cow_texture.png").convert("RGB"), dtype=np.float64) / 255.0
    rng = np.random.default_rng(seed)
    a, b, c = v[fv[:, 0]], v[fv[:, 1]], v[fv[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    face = rng.choice(len(fv), size=n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    pts = (w[:, :, None] * v[fv[face]]).sum(1)
    uv = (w[:, :, None] * vt[ft[face]]).sum(1)
    h, wd = tex.shape[:2]
    px = np.clip((uv[:, 0] % 1.0) * (wd - 1), 0, wd - 1).astype(int)
    py = np.clip((1 - uv[:, 1] % 1.0) * (h - 1), 0, h - 1).astype(int)
    rgb = tex[py, px]
    normal = cross[face] / np.maximum(np.linalg.norm(cross[face], axis=1, keepdims=True), 1e-12)
    # rotation whose third axis is the normal
    helper = np.where(np.abs(normal[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normal, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normal, t1)
    R = torch.from_numpy(np.stack([t1, t2, normal], axis=2))
    spacing = math.sqrt(area.sum() / n)
    k = {0: 0, 1: 3, 2: 8, 3: 15}[sh_degree]
    return GaussianScene(
        means=torch.from_numpy(pts).float(),
        quats=rotmat_to_quat(R).float(),
        scales=torch.log(torch.tensor([0.8 * spacing, 0.8 * spacing, 0.08 * spacing])).repeat(n, 1).float(),
        opacities=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh0=torch.from_numpy((rgb - 0.5) / SH_C0).float(),
        shN=torch.zeros(n, k, 3),
        meta={"format": "ply"},
    )


def add_floaters(scene: GaussianScene, n: int, seed: int) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    lo, hi = scene.bounds()
    centre, half = (lo + hi) / 2, (hi - lo) * 0.75
    means = centre + (torch.rand(n, 3, generator=g) * 2 - 1) * half
    k = scene.shN.shape[1]
    fl = GaussianScene(means, torch.randn(n, 4, generator=g), torch.full((n, 3), math.log(float(half.norm()) * 0.01)),
                       torch.full((n,), -4.0), torch.randn(n, 3, generator=g) * 0.5, torch.zeros(n, k, 3))
    return GaussianScene(**{a: torch.cat([getattr(scene, a), getattr(fl, a)]) for a in GaussianScene.PER_GAUSSIAN},
                         meta=scene.meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussians", type=int, default=30000)
    ap.add_argument("--teacher", type=int, default=120000)
    ap.add_argument("--floaters", type=int, default=600)
    ap.add_argument("--views", type=int, default=48)
    ap.add_argument("--resolution", type=int, default=192)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "scenes")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    teacher = sample_surface(args.teacher, seed=1, opacity=0.95, sh_degree=0)
    student = add_floaters(sample_surface(args.gaussians, seed=2), args.floaters, seed=3)
    cams = synthesize_cameras(teacher, n=args.views, width=args.resolution, height=args.resolution, seed=0)
    teacher_k = teacher.replace(shN=torch.zeros(len(teacher), 3, 3))
    trained = distill(student, teacher_k, cams, steps=args.steps, seed=0, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_scene(trained, args.out / "cow.ply")
    write_cameras_json(cams, args.out / "cow_cameras.json")
    print(f"wrote {args.out / 'cow.ply'} ({len(trained)} Gaussians, "
          f"{(args.out / 'cow.ply').stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
