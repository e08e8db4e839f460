"""Render 16 sample faces of the built-in synthetic benchmark into docs/synthetic_grid.png (README figure, issue 3).

    python scripts/make_readme_grid.py [--out docs/synthetic_grid.png] [--seed 0]

Two faces per AffectNet class (0-7), each a new identity, pose and scene; the second of each pair has
its 68 landmarks drawn (visible ones green, self-occluded or covered ones red) and some an occluder.
"""
import argparse
import os
import sys

from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.synthetic.emotion import CLASSES, aus_to_emotion  # noqa: E402
from common.synthetic.writers.sampling import (context, draw_expression, draw_pose, identity,  # noqa: E402
                                               render_inside, rng_for)

TILE = 256


def sample_tile(ctx, k):
    """Face ``k`` of the grid: class k // 2, landmarks drawn on odd k."""
    rng = rng_for(ctx.seed, "readme_grid", k)
    _, _, aus = draw_expression(rng, expression=k // 2, intensity=(3.5, 5.0))
    res = render_inside(ctx, identity(ctx, "readme_grid", k), aus, draw_pose(rng, max_yaw=45.0), rng,
                        scale=0.9, occluder=k in (5, 12))
    tile = Image.fromarray(res.image)
    draw = ImageDraw.Draw(tile)
    if k % 2:
        for (x, y), visible in zip(res.landmarks, res.visible):
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(40, 230, 60) if visible else (230, 40, 40))
    expression, valence, arousal = aus_to_emotion(aus)
    caption = f"{CLASSES[expression]}  v {valence:+.2f} a {arousal:+.2f}  yaw {res.pose[0]:+.0f}"
    draw.rectangle([0, TILE - 14, TILE, TILE], fill=(0, 0, 0))
    draw.text((3, TILE - 13), caption, fill=(255, 255, 255))
    return tile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "synthetic_grid.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    ctx = context(args.seed, TILE)
    grid = Image.new("RGB", (4 * TILE, 4 * TILE))
    for k in range(16):
        grid.paste(sample_tile(ctx, k), ((k % 4) * TILE, (k // 4) * TILE))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    grid.resize((3 * TILE, 3 * TILE), Image.LANCZOS).save(args.out, optimize=True)   # 768 px keeps the PNG small
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
