"""Benchmark of SwAV multi-crop augmentation (issue 12; paper App. A.1 recipe): images/s per CPU core
of the PIL reference and of the fast path, on the same images, in one run.

    python bench/multicrop.py [--root DIR] [--n 32] [--rounds 3] [--device cuda] [--json out.json]

Pipelines, each 2 x 224 (scale 0.14-1) + 6 x 96 (0.05-0.14) crops with SwAV's colour distortion
(flip, ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8 in random order, grey 0.2, blur p 0.5, normalise):

- reference: pretrain.data.load_rgb + MultiCropTransform (PIL + torchvision v1, SwAV's code path);
- ours, colour in the worker: FastMultiCrop (uint8 decode by libjpeg-turbo via simplejpeg, tensor
  crops, batched float colour ops on the image's crops), the whole augmentation on the CPU;
- ours, colour on the device: the worker part of FastMultiCrop(defer_color=True) (decode, crops,
  parameters; uint8 out), with DeviceAugment finishing batches on ``--device`` (timed separately:
  device images/s, and the host CPU time it costs per image).

One torch / BLAS thread. CPU time per image (time.process_time) is what one core delivers, even on a
shared machine; the rounds are interleaved and the median is kept. Input: ``--root`` images, or
``--n`` synthetic faces rendered at 256 x 256 (common.synthetic) and saved as JPEG (quality 95).
"""
import argparse
import glob
import os
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.files import write_json  # noqa: E402
from pretrain.data import IMAGE_EXTENSIONS, MultiCropTransform, collate_skip_bad, load_rgb  # noqa: E402
from pretrain.fast_multicrop import DeviceAugment, FastMultiCrop  # noqa: E402

RECIPE = dict(sizes=[224, 96], counts=[2, 6], scales=[(0.14, 1.0), (0.05, 0.14)])


def render_faces(n: int, out: str, size: int = 256, seed: int = 0) -> list:
    """``n`` synthetic faces (random identity, expression, pose) saved as JPEGs in ``out``."""
    from PIL import Image
    from common.synthetic import emotion
    from common.synthetic.face_model import FaceModel
    from common.synthetic.render import render_face
    model, rng, paths = FaceModel(seed=0), np.random.default_rng(seed), []
    for i in range(n):
        aus = emotion.prototype_aus(int(rng.integers(8)), float(rng.uniform(1, 5)), rng)
        res = render_face(model, model.sample_identity(rng), aus, yaw=rng.uniform(-60, 60), pitch=rng.uniform(-20, 20),
                          roll=rng.uniform(-15, 15), size=size, rng=rng, occluder=i % 3 == 0)
        paths.append(os.path.join(out, f"{i:05d}.jpg"))
        Image.fromarray(res.image).save(paths[-1], quality=95)
    return paths


def time_pipeline(paths: list, load, transform) -> tuple:
    """(CPU s, wall s) per image of load + transform over ``paths``, each image seeded by its index."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i, path in enumerate(paths):
        torch.manual_seed(i)
        transform(load(path))
    return (time.process_time() - cpu) / len(paths), (time.perf_counter() - wall) / len(paths)


def time_device(paths: list, transform, device, batch_size: int, rounds: int) -> dict:
    """Device images/s of DeviceAugment on batches of deferred samples, and its host CPU s per image."""
    samples = []
    for i, path in enumerate(paths):
        torch.manual_seed(i)
        samples.append(transform(transform.load(path)))
    batches = [collate_skip_bad((samples * (batch_size // len(samples) + 1))[:batch_size])[0]]
    if device.type == "cuda":
        batches = [[c.pin_memory() for c in b] for b in batches]
    aug = DeviceAugment()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    aug(batches[0], device, torch.channels_last)  # warm-up (kernels, allocator)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        out = aug(batches[0], device, torch.channels_last)
    sync()
    n = rounds * batch_size
    wall, cpu = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
    assert all(torch.isfinite(c).all() for c in out)
    return {"device_images_per_s": 1.0 / wall, "host_cpu_ms_per_image": 1000 * cpu, "batch": batch_size}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="folder of images (default: render --n synthetic faces)")
    parser.add_argument("--n", type=int, default=32, help="images (rendered, or the first N of --root)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median kept)")
    parser.add_argument("--device", default="", help="also time DeviceAugment on this device (cuda, cpu)")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the device timing")
    parser.add_argument("--save-dir", default="", help="keep the rendered faces in this folder")
    parser.add_argument("--json", default="", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.root:
            paths = sorted(p for p in glob.glob(os.path.join(args.root, "**", "*"), recursive=True)
                           if p.lower().endswith(IMAGE_EXTENSIONS))[: args.n]
            if not paths:
                raise SystemExit(f"bench/multicrop.py: no images under {args.root}")
        else:
            out = args.save_dir or tmp
            os.makedirs(out, exist_ok=True)
            paths = render_faces(args.n, out)
        ref = MultiCropTransform(**RECIPE)
        fast, deferred = FastMultiCrop(**RECIPE), FastMultiCrop(**RECIPE, defer_color=True)
        pipelines = {"reference (PIL + torchvision v1)": (load_rgb, ref),
                     "ours, colour in the worker": (fast.load, fast),
                     "ours, colour on the device (worker part)": (deferred.load, deferred)}
        for load, transform in pipelines.values():  # warm-up: file cache, first-call costs
            time_pipeline(paths[:4], load, transform)
        times = {name: [] for name in pipelines}
        for _ in range(args.rounds):
            for name, (load, transform) in pipelines.items():
                times[name].append(time_pipeline(paths, load, transform))
        device = time_device(paths, deferred, torch.device(args.device), args.batch, 10) if args.device else None
    load1 = os.getloadavg()
    cpu = {name: float(np.median([t[0] for t in v])) for name, v in times.items()}
    wall = {name: float(np.median([t[1] for t in v])) for name, v in times.items()}
    ref_cpu = cpu["reference (PIL + torchvision v1)"]
    print(f"{len(paths)} images ({'--root ' + args.root if args.root else '256 x 256 synthetic faces'}), "
          f"2x224 + 6x96 crops, 1 thread, median of {args.rounds} rounds; "
          f"load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"| pipeline | CPU ms / image | images/s per core | wall ms / image | vs reference |")
    print(f"|---|---:|---:|---:|---:|")
    rows = []
    for name in pipelines:
        rows.append({"pipeline": name, "cpu_ms": 1000 * cpu[name], "images_per_s_per_core": 1.0 / cpu[name],
                     "wall_ms": 1000 * wall[name], "ratio": ref_cpu / cpu[name]})
        r = rows[-1]
        print(f"| {name} | {r['cpu_ms']:.2f} | {r['images_per_s_per_core']:.1f} | {r['wall_ms']:.2f} | "
              f"{r['ratio']:.2f}x |")
    if device:
        print(f"DeviceAugment on {args.device} (batch {device['batch']}, 8 crops each): "
              f"{device['device_images_per_s']:.0f} images/s, host CPU {device['host_cpu_ms_per_image']:.3f} ms/image")
    if args.json:
        write_json(args.json, {"rows": rows, "device": device, "device_name": args.device, "images": len(paths),
                               "loadavg": [load0[0], load1[0]], "cpus": os.cpu_count()})
    return rows


if __name__ == "__main__":
    main()
