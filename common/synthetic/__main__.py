"""CLI of the built-in synthetic face benchmark (issue 3; DESIGN.md "Data").

    python -m common.synthetic --out DIR --preset {tiny,demo} --seed S [--only NAME ...] [--workers N]
"""
import argparse
import os
import sys
import time


def main(argv=None):
    from common.synthetic.writers import WRITERS
    from common.synthetic.writers.generate import generate
    from common.synthetic.writers.presets import PRESETS

    parser = argparse.ArgumentParser(prog="python -m common.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per dataset)")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS),
                        help="tiny: seconds, for tests; demo: minutes, for `make demo`")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> same bytes")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(WRITERS),
                        help=f"datasets to write (default all): {' '.join(WRITERS)}")
    parser.add_argument("--workers", type=int, default=None,
                        help="render processes (default: the preset's; 1 = in this process)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    import torch
    torch.set_num_threads(1)      # small renders: one thread per process (workers add parallelism)
    workers = args.workers if args.workers is not None else PRESETS[args.preset]["workers"]
    workers = max(1, min(workers, os.cpu_count() or 1))
    start = time.time()
    try:
        manifest = generate(args.out, args.preset, args.seed, only=args.only, workers=workers)
    except (FileExistsError, ValueError) as error:                           # a wrong --out folder: one line
        print(f"python -m common.synthetic: error: {error}", file=sys.stderr)
        return 2
    total = sum(d.get("images", 0) for d in manifest["datasets"].values())
    print(f"wrote {len(manifest['datasets'])} datasets, {total} images, to {args.out} "
          f"in {time.time() - start:.1f} s (preset {args.preset}, seed {args.seed}, {workers} worker(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
