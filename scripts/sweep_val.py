"""Score one sweep run on its validation set (paper §3.3): held-out training keys or a validation split.

    python scripts/sweep_val.py --task landmarks --config C --checkpoint RUN/last.pth \
        (--keys SWEEP/split/val_keys.txt | --split val) [--out RUN/val.json] [key=value ...]

The overrides are the run's own (the sweep passes them), so data root, crop size and data point
match training. Writes ``--out`` atomically and prints ``{"metric", "value", "lower_is_better", ...}``
as JSON on the last stdout line, as every eval.py does.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.config import cli  # noqa: E402
from common.files import write_json  # noqa: E402
from common.subsample import load_keys  # noqa: E402
from sweep_tasks import TASKS  # noqa: E402


def main(argv=None):
    cfg, args = cli("Validation score of one sweep run (paper §3.3)", argv=argv, extra_args=[
        ("--task", dict(required=True, choices=sorted(TASKS))),
        ("--checkpoint", dict(required=True, help="the run's last.pth")),
        ("--keys", dict(help="key file of held-out training samples (common.subsample.save_keys)")),
        ("--split", dict(help="a validation split the task ships (DISFA: val)")),
        ("--out", dict(help="write the result here too (JSON)")),
    ])
    if bool(args.keys) == bool(args.split):
        raise SystemExit("sweep_val: give exactly one of --keys FILE or --split NAME")
    keys = load_keys(args.keys) if args.keys else None
    value, metric, lower = TASKS[args.task]["score"](cfg, args.checkpoint, keys=keys, split=args.split)
    result = {"task": args.task, "checkpoint": os.path.abspath(args.checkpoint), "metric": metric,
              "value": float(value), "lower_is_better": lower,
              "validation": f"{len(keys)} held-out training keys" if keys is not None else f"split {args.split}"}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, sort_keys=True), flush=True)
    return result


if __name__ == "__main__":
    main()
