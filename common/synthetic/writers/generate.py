"""Driver of the synthetic benchmark (issue 3): plans every sample, renders them (optionally in worker
processes) and lets each dataset writer write its annotation files, then a ``manifest.json``.
"""
import contextlib
import json
import multiprocessing
import os
import shutil

from common.logger import progress
from common.synthetic.writers import WRITERS
from common.files import write_json
from common.synthetic.writers.presets import PRESETS
from common.synthetic.writers.sampling import context


def render_size(cfg, name):
    """Render size of dataset ``name`` in preset ``cfg``: its own ``render_size`` or the preset's."""
    return cfg[name].get("render_size", cfg["render_size"])


def _make(task):
    """Render and write one sample (runs in a worker); returns the writer's label record."""
    name, out, preset, seed, job = task
    cfg = PRESETS[preset]
    try:
        return WRITERS[name].make(context(seed, render_size(cfg, name)), out, cfg[name], job)
    except Exception as error:
        raise RuntimeError(f"synthetic {name}: sample {job['key']!r} (seed {seed}) failed: {error}") from error


@contextlib.contextmanager
def _single_threaded_children():
    """Spawned workers inherit one BLAS/OpenMP thread each (restored afterwards)."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker():
    """One torch thread per worker: renders are small, and oversubscribed threads are many times slower."""
    import torch
    torch.set_num_threads(1)


def _run(tasks, workers):
    """Records of ``tasks`` in order, with a progress bar; ``workers`` <= 1 renders in this process."""
    bar = progress(None, desc="synthetic", total=len(tasks))       # None when progress bars are off
    if workers <= 1:
        results = map(_make, tasks)
        pool = contextlib.nullcontext()
    else:
        with _single_threaded_children():
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
        results = pool.imap(_make, tasks, chunksize=4)
    records = []
    with pool:
        for record in results:
            records.append(record)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return records


def _prepare(out, names, preset, seed, merge):
    """Empty the folders about to be written and return the manifest to extend.

    Only an output folder this tool wrote (it has ``manifest.json``) is cleared; a dataset folder in
    any other folder is never touched: that raises, so a real dataset cannot be overwritten. Adding
    datasets (``--only``) to a folder written with another preset or seed raises too.
    """
    path = os.path.join(out, "manifest.json")
    folders = [os.path.join(out, WRITERS[name].folder) for name in names]
    if not os.path.exists(path):
        taken = [f for f in folders if os.path.isdir(f) and os.listdir(f)]
        if taken:
            raise FileExistsError(f"{taken[0]} exists and {out} has no manifest.json from common.synthetic; "
                                  "refusing to overwrite it: choose an empty --out folder")
        return {"datasets": {}}
    with open(path) as f:                                                    # ours, maybe from an interrupted run
        manifest = json.load(f)
    if merge and (manifest.get("preset"), manifest.get("seed")) != (preset, seed):
        raise ValueError(f"{out} holds preset {manifest.get('preset')!r} seed {manifest.get('seed')}; "
                         f"--only cannot add preset {preset!r} seed {seed} to it: use another --out folder")
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return manifest if merge else {"datasets": {}}


def _write_manifest(out, manifest):
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "manifest.json"), manifest)


def generate(out, preset, seed, only=None, workers=1):
    """Write the ``preset`` copies of the datasets ``only`` (default all) under ``out``; returns the manifest.

    Deterministic given ``seed``: every sample has its own generator, so ``workers`` does not change
    any byte. ``out/manifest.json`` (``complete`` once every file is written) is extended when ``only``
    is used.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    names = list(only) if only else list(WRITERS)
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {list(WRITERS)}")
    cfg = PRESETS[preset]
    out = os.path.abspath(out)
    manifest = _prepare(out, names, preset, seed, merge=bool(only))
    manifest.update({"preset": preset, "seed": seed, "render_size": cfg["render_size"], "complete": False})
    _write_manifest(out, manifest)                                           # marks the folder as ours
    plans = {name: WRITERS[name].plan(cfg[name], seed) for name in names}
    tasks = [(name, out, preset, seed, job) for name in names for job in plans[name]]
    records = _run(tasks, workers)
    start = 0
    for name in names:
        mine = records[start:start + len(plans[name])]
        start += len(plans[name])
        info = WRITERS[name].finish(out, cfg[name], plans[name], mine, seed)
        manifest["datasets"][name] = {"folder": WRITERS[name].folder, "render_size": render_size(cfg, name), **info}
    manifest["complete"] = True
    _write_manifest(out, manifest)
    return manifest
