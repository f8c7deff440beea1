"""Synthetic product photos for the quality-control example: ``frames/part_NNNN.jpg``,
96x96 grayscale-ish surfaces (a base tone, a gentle gradient, sensor noise), about one in
four with a thin dark scratch drawn at a random angle; the truth in ``frames_truth.csv``.

    python make_data.py [--count 400] [--seed 1] [--out frames]
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np
from PIL import Image, ImageDraw

SIZE = 96


def surface(rng: np.random.Generator) -> np.ndarray:
    """A brushed-metal-like surface: base tone, a linear gradient, per-pixel noise."""
    base = rng.uniform(110, 190)
    gy, gx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    tilt = rng.uniform(-20, 20) * gx + rng.uniform(-20, 20) * gy
    noise = rng.normal(0, 5, size=(SIZE, SIZE))
    return np.clip(base + tilt + noise, 0, 255)


def product(rng: np.random.Generator, scratched: bool) -> Image.Image:
    pixels = surface(rng)
    tint = rng.uniform(0.95, 1.05, size=3)  # a slightly coloured light
    image = Image.fromarray(np.clip(pixels[..., None] * tint, 0, 255).astype(np.uint8), "RGB")
    if scratched:
        draw = ImageDraw.Draw(image)
        x0, y0 = rng.uniform(10, SIZE - 10, size=2)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(25, 60)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        shade = int(rng.uniform(20, 60))
        draw.line([(x0, y0), (x1, y1)], fill=(shade, shade, shade), width=int(rng.integers(1, 3)))
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="frames")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(f"{args.out}_truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for i in range(args.count):
            scratched = rng.random() < 0.25
            name = f"part_{i:04d}.jpg"
            product(rng, scratched).save(os.path.join(args.out, name), quality=92)
            writer.writerow([name, "scratch" if scratched else "ok"])
    print(f"{args.count} images in {args.out}/, truth in {args.out}_truth.csv")


if __name__ == "__main__":
    main()
