"""Shared sampling for the synthetic writers (issue 3): seeds, identities, poses, expressions, renders.

Every sample draws from its own generator, seeded by (CLI seed, dataset, sample key), so a file's
bytes do not depend on the order or the process in which samples are rendered.
"""
import functools
import zlib
from dataclasses import dataclass

import numpy as np

from common.synthetic import emotion, face_model
from common.synthetic.render import render_face
from common.synthetic.writers.canvas import place

# The face model is fixed (seed 0) for every dataset and CLI seed: one "population" with one mesh
# topology, which the 3D sets store in face_model/mesh_topology.mat.
MODEL_SEED = 0


def rng_for(seed, *keys):
    """A generator seeded by ``seed`` and the CRC-32 of each key (ints and strings alike)."""
    entropy = [int(seed)] + [zlib.crc32(str(key).encode("utf-8")) for key in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclass(frozen=True)
class Context:
    """What a worker needs to render: the face model, the render size and the CLI seed."""
    model: object
    size: int
    seed: int


@functools.lru_cache(maxsize=1)
def shared_model():
    """The face model, built once per process."""
    return face_model.FaceModel(seed=MODEL_SEED)


def context(seed, size):
    """The rendering context of a worker: the shared face model, the render size and the CLI seed."""
    return Context(model=shared_model(), size=int(size), seed=int(seed))


def identity(ctx, namespace, index):
    """Identity ``index`` of ``namespace``; distinct namespaces give disjoint identities."""
    return ctx.model.sample_identity(rng_for(ctx.seed, "identity", namespace, index))


def draw_pose(rng, max_yaw=40.0, pitch_sd=8.0, roll_sd=6.0, min_yaw=0.0):
    """(yaw, pitch, roll) in degrees: |yaw| uniform in [min_yaw, max_yaw], random sign; pitch, roll normal."""
    yaw = float(rng.uniform(min_yaw, max_yaw) * rng.choice([-1.0, 1.0]))
    pitch = float(np.clip(rng.normal(0.0, pitch_sd), -3 * pitch_sd, 3 * pitch_sd))
    roll = float(np.clip(rng.normal(0.0, roll_sd), -3 * roll_sd, 3 * roll_sd))
    return yaw, pitch, roll


def draw_expression(rng, neutral_prob=0.25, intensity=(1.5, 5.0), expression=None):
    """(AffectNet class, intensity on the 0-5 AU scale, AU dict) from ``emotion.prototype_aus``; class 0 has no AU."""
    if expression is None:
        expression = 0 if rng.random() < neutral_prob else int(rng.integers(1, 8))
    strength = float(rng.uniform(*intensity))
    aus = emotion.prototype_aus(int(expression), strength, rng)
    return int(expression), strength, dict(aus)


def render_inside(ctx, ident, aus, pose, rng, *, size=None, scale=1.0, margin=2.0, **kwargs):
    """``render_face`` whose 68 landmarks and face box lie ``margin`` px inside the render.

    If a pose/scale puts a landmark outside, the face is shrunk by 15 % and rendered again with the
    same generator state sequence (deterministic); after 6 tries a ValueError names the pose.
    """
    size = int(size or ctx.size)
    yaw, pitch, roll = pose
    for _ in range(6):
        result = render_face(ctx.model, ident, aus, yaw=yaw, pitch=pitch, roll=roll, size=size,
                             rng=rng, scale=scale, **kwargs)
        points = np.concatenate([result.landmarks, np.reshape(result.box, (2, 2))], axis=0)
        if np.all(points >= margin) and np.all(points <= size - 1 - margin):
            return result
        scale *= 0.85
    raise ValueError(f"could not keep the face inside a {size}px render at pose {pose}")


def template_landmarks(ctx, size):
    """The 68 mean-shape landmarks, frontal, scaled into a ``size`` px square (no render needed)."""
    points = ctx.model.vertices[ctx.model.landmark_ids][:, :2].astype(np.float64)
    points[:, 1] *= -1.0                                                     # model +y up -> image y down
    lo, hi = points.min(0), points.max(0)
    return (points - (lo + hi) / 2) * (0.5 * size / (hi - lo).max()) + (size - 1) / 2


def canvas_shape(rng, base_hw, size, jitter=(0.9, 1.25)):
    """A photo size around ``base_hw`` (H, W), never smaller than the ``size`` px render plus 8 px."""
    factor = rng.uniform(*jitter, size=2)
    return tuple(int(max(size + 8, round(b * f))) for b, f in zip(base_hw, factor))


def render_in_canvas(ctx, ident, aus, pose, rng, canvas_hw, **kwargs):
    """Render a face (``render_inside``) and paste it at a random place of a cluttered photo.

    Returns (photo, result, offset); image points of the render map to the photo as point + offset.
    """
    result = render_inside(ctx, ident, aus, pose, rng, **kwargs)
    photo, offset = place(rng, canvas_hw, result.image)
    return photo, result, np.asarray(offset, dtype=np.float64)
