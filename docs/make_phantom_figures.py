"""Regenerate the phantom figures shown in the README (docs/images/phantoms-*.png).

Run from the repository root: ``python docs/make_phantom_figures.py [--size 128]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen.data.phantoms import generate, volume_seed
from medgen.viz.mosaic import save_mosaic

# lung window for CT, with the sagittal plane through the left lung; brain: midline sagittal
WINDOWS = {"thorax-ct": {"vmin": -1000.0, "vmax": 250.0}, "brain-mri": {"vmin": 0.0}}
SAGITTAL_AT = {"thorax-ct": 0.36, "brain-mri": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128, help="voxels per side (default 128)")
    parser.add_argument("--n", type=int, default=3, help="phantoms per figure (default 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    args = parser.parse_args()
    for kind in ("thorax-ct", "brain-mri"):
        phantoms = [generate(kind, args.size, volume_seed(0, i)) for i in range(args.n)]
        titles = [f"{kind}-{i:04d}  label {p.factors['label']}" for i, p in enumerate(phantoms)]
        index = [None, None, int(SAGITTAL_AT[kind] * args.size)]
        path = args.out / f"phantoms-{kind}.png"
        save_mosaic([p.array for p in phantoms], path, titles=titles, slice_index=index, **WINDOWS[kind])
        print(path)


if __name__ == "__main__":
    main()
