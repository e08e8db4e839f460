"""Self-distillation for semi-supervised facial landmarks (paper §3.5; §4 "Self-distillation ...", Figs. 3-4).

    python -m distill.train --config distill/configs/300w.yaml --teacher runs/landmarks/300w_0.02_ours_vggf/last.pth \
        --student-init runs/swav_vggface2/backbone.pth --unlabeled runs/distill/pool.txt --steps 3 \
        data.root=DIR data.fraction=0.02 out=runs/NAME
    torchrun --nproc_per_node=N -m distill.train ...            # optim.batch_size stays global

The fine-tuned landmark model is the first teacher. A *step* trains one student to the end of
the optim schedule (optim.epochs epochs over the labelled subset + the unlabelled images), the
student initialised from the pre-trained backbone (``model.init``: SwAV by default; scratch or a
supervised backbone for Fig. 4) with a fresh head, and its targets are the teacher's heatmaps of
the same augmented crops (pixel-wise l2). After each step the student becomes the teacher, for
``distill.steps`` = T steps. Each student is scored on the test splits (Fig. 3 right).
Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, step_<t>.pth, steps.json, last.pth,
metrics.json}; resumes from last.pth, also in the middle of a step.
"""
import json
import os
import time

import torch
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from common import distributed, finetune
from common.checkpoint import load_checkpoint, make_state, restore, save_checkpoint
from common.config import cli
from common.files import write_json
from common.landmark_schemes import flip_permutation
from common.logger import log
from common.optim import param_groups
from distill import leakage, pool
from distill.data import UnlabelledDataset
from distill.teacher import check_teacher, load_landmark_model, teacher_targets
from landmarks import formats, scores
from landmarks.data import LandmarkDataset, few_shot, train_augment
from landmarks.engine import evaluate, train_one_epoch
from landmarks.train import build_model, eval_loader, lr_schedule, test_splits

EXTRA_ARGS = [
    ("--teacher", dict(help="the fine-tuned landmark checkpoint, the first teacher (config key: teacher)")),
    ("--student-init", dict(help="student backbone: scratch | imagenet | checkpoint (config key: model.init)")),
    ("--unlabeled", dict(help="unlabelled pool list from python -m distill.pool (config key: unlabeled.list)")),
    ("--steps", dict(type=int, help="number of self-distillation steps T (config key: distill.steps)")),
]


def apply_flags(cfg, args):
    """Command-line flags win over their config keys."""
    if args.teacher:
        cfg["teacher"] = args.teacher
    if args.student_init:
        cfg.model["init"] = args.student_init
    if args.unlabeled:
        cfg.unlabeled["list"] = args.unlabeled
    if args.steps is not None:
        cfg.distill["steps"] = args.steps
    return cfg


def make_student(*, arch, init, n_points, head_width, seed):
    """A fresh student: the pre-trained backbone + a head drawn from ``seed`` (same on resume)."""
    torch.manual_seed(seed)
    return build_model(arch=arch, init=init, n_points=n_points, head_width=head_width, linear=False)


def checked_pool(*, list_path, dataset, root, exclude):
    """The pool list, after checking that no test image of ``dataset`` (and of ``exclude``:
    "dataset=root" strings) is in it, by resolved path and by content."""
    entries = pool.read_pool(list_path)
    roots = {dataset: root}
    for item in exclude:
        name, _, other = item.partition("=")
        if not other:
            raise ValueError(f"unlabeled.exclude entry {item!r}: expected DATASET=ROOT")
        roots[name] = other
    leakage.assert_no_leak(entries.paths, leakage.ExcludedImages.build(roots), where=list_path)
    return entries


def read_steps(path):
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(cfg):
    info = distributed.init()
    device, out, data, optim, aug = info.device, cfg.out, cfg.data, cfg.optim, cfg.aug
    steps = cfg.distill.steps
    if steps < 1:
        raise ValueError(f"distill.steps must be >= 1, got {steps}")
    if not cfg.teacher or not cfg.unlabeled.list:
        raise ValueError("give the first teacher (--teacher / teacher=) and the pool (--unlabeled / unlabeled.list=)")
    writer = finetune.start_run(cfg, "distill.train", info)

    n_points = formats.N_POINTS[data.dataset]
    full = formats.load_split(data.dataset, data.root, data.train_split, data.box)
    labelled = few_shot(full, fraction=data.fraction, seed=data.subset_seed, subset_file=data.subset_file,
                        save_to=os.path.join(out, "subset_keys.txt") if distributed.is_main() else None)
    entries = checked_pool(list_path=cfg.unlabeled.list, dataset=data.dataset, root=data.root,
                           exclude=cfg.unlabeled.exclude)
    unlabelled, wanted = pool.take(entries, amount=cfg.unlabeled.amount, reference_size=len(full),
                                   seed=cfg.unlabeled.seed)
    if wanted is not None and wanted > len(unlabelled):
        log(f"warning: unlabeled.amount={cfg.unlabeled.amount} asks for {wanted} images; "
            f"the pool has {len(unlabelled)}")
    augment = train_augment(rotation=aug.rotation, scale=aug.scale, flip_prob=aug.flip_prob, n_points=n_points)
    crops = dict(input_size=data.input_size, box_scale=data.box_scale, augment=augment, color_scale=aug.color_scale)
    train_set = ConcatDataset([LandmarkDataset(labelled, **crops),
                               UnlabelledDataset(unlabelled.paths, unlabelled.boxes, n_points=n_points, **crops)])
    per_rank = optim.batch_size // info.world_size
    sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed) if info.world_size > 1 else None
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, shuffle=sampler is None,
                        generator=generator, num_workers=data.num_workers, pin_memory=device.type == "cuda",
                        drop_last=False)
    log(f"{len(labelled)} labelled faces ({data.fraction:.3g} of {len(full)} in {data.dataset}/{data.train_split}) "
        f"+ {len(unlabelled)} unlabelled ({cfg.unlabeled.list}); {steps} step(s) of {optim.epochs} epochs, "
        f"{len(loader)} iterations/epoch, global batch {optim.batch_size}, student init {cfg.model.init}")

    teacher, teacher_cfg = load_landmark_model(cfg.teacher)
    check_teacher(cfg.teacher, teacher_cfg, teacher.head.out.out_channels, arch=cfg.model.arch,
                  input_size=data.input_size, n_points=n_points, labelled_keys=labelled.keys, fraction=data.fraction)
    loaders = dict(input_size=data.input_size, box_scale=data.box_scale, batch_size=per_rank,
                   num_workers=data.num_workers, world_size=info.world_size)
    tests = [(s, eval_loader(s, **loaders)) for s in test_splits(data.dataset, data.root, data.test_splits, data.box)]
    amp = cfg.train.amp and device.type == "cuda"
    flip_perm = flip_permutation(n_points)
    scoring = dict(device=device, input_size=data.input_size, flip_perm=flip_perm if cfg.test.flip_test else None,
                   amp=amp, decode=cfg.test.decode)

    def score(model):
        return {s.split: evaluate(model, test_loader, s, **scoring)[0] for s, test_loader in tests}

    last_path, steps_path = os.path.join(out, "last.pth"), os.path.join(out, "steps.json")

    def step_path(t):
        return os.path.join(out, f"step_{t}.pth")

    records = read_steps(steps_path)
    start_step, resume = 1, None
    if os.path.isfile(last_path):
        resume = load_checkpoint(last_path)
        start_step = resume["step"] + (resume["epoch"] >= optim.epochs and str(resume["step"]) in records)
    if "0" not in records:
        records["0"] = score(teacher.to(device))
    for step in range(start_step, steps + 1):
        if step > 1:
            teacher, _ = load_landmark_model(step_path(step - 1))
        teacher.to(device).eval()
        student = make_student(arch=cfg.model.arch, init=cfg.model.init, n_points=n_points,
                               head_width=cfg.model.head_width, seed=cfg.seed * 1000 + step)
        student = distributed.convert_sync_bn(student).to(device)
        optimizer = torch.optim.Adam(param_groups(student, weight_decay=optim.weight_decay,
                                                  backbone_lr_mult=optim.backbone_lr_mult),
                                     lr=optim.lr, betas=tuple(optim.betas))
        first_epoch = 0
        if resume is not None and resume["step"] == step:
            first_epoch = restore(last_path, student, optimizer)["epoch"]
            log(f"resumed from {last_path} at step {step}, epoch {first_epoch}")
        lr_values = lr_schedule(schedule=optim.schedule, lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                                milestones=optim.milestones, gamma=optim.gamma)
        targets = teacher_targets(teacher, input_size=data.input_size, heatmap_size=data.heatmap_size,
                                  sigma=data.sigma, labelled=cfg.distill.labelled_targets,
                                  flip_perm=flip_perm if cfg.distill.teacher_flip else None, amp=amp)
        ddp_student = distributed.wrap_ddp(student, info)
        for epoch in range(first_epoch, optim.epochs):
            start = time.time()
            stream = cfg.seed * 100003 + step * 10007 + epoch               # same order / augmentation on resume
            generator.manual_seed(stream)
            torch.manual_seed(stream * 1009 + info.rank)
            if sampler is not None:
                sampler.set_epoch(step * 10007 + epoch)
            stats = train_one_epoch(ddp_student, loader, optimizer, lr_values, epoch * len(loader), device=device,
                                    targets=targets, epoch=epoch, amp=amp)
            skipped = records["unreadable_images"] = stats["skipped_images"]   # per pass over the set
            record = {"step": step, "epoch": epoch + 1, **stats, "time_s": time.time() - start}
            writer.write(record)
            log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if skipped:
                log(f"step {step} epoch {epoch + 1}: {skipped} unreadable images skipped")
            if distributed.is_main():
                save_checkpoint(last_path, make_state(student, optimizer, epoch=epoch + 1, config=cfg, step=step,
                                                      iteration=(epoch + 1) * len(loader)))
            distributed.barrier()
        if distributed.is_main():
            save_checkpoint(step_path(step), make_state(student, epoch=optim.epochs, config=cfg, step=step))
        records[str(step)] = score(student)
        if distributed.is_main():
            write_json(steps_path, records)
        writer.write({"step": step, "test": records[str(step)]})
        primary = scores.PRIMARY[data.dataset]
        log(f"step {step} {primary}: " + ", ".join(f"{k} {v[primary]:.4f}" for k, v in records[str(step)].items()))
        distributed.barrier()
        del teacher, student, ddp_student, optimizer

    results = {"kind": "distill", "dataset": data.dataset, "label": cfg.label, "init": cfg.model.init,
               "teacher_checkpoint": os.path.abspath(cfg.teacher), "fraction": data.fraction,
               "n_labelled": len(labelled), "reference_size": len(full), "amount": cfg.unlabeled.amount,
               "n_unlabelled": len(unlabelled), "unreadable_images": records.get("unreadable_images", 0),
               "primary": scores.PRIMARY[data.dataset],
               "steps_total": steps, "teacher": {"splits": records["0"]},
               "steps": [{"step": t, "splits": records[str(t)]} for t in range(1, steps + 1)],
               "splits": records[str(steps)], "checkpoint": last_path}
    if distributed.is_main():
        write_json(os.path.join(out, "metrics.json"), results)
        print(json.dumps({"teacher": records["0"], "student": records[str(steps)]}, sort_keys=True), flush=True)
    distributed.cleanup()
    return results


def parse(argv=None):
    cfg, args = cli("Self-distillation for semi-supervised landmarks (paper §3.5)", extra_args=EXTRA_ARGS, argv=argv)
    return apply_flags(cfg, args)


if __name__ == "__main__":
    try:
        main(parse())
    except (formats.DatasetFormatError, pool.PoolFormatError, leakage.LeakageError, FileNotFoundError) as e:
        raise SystemExit(f"distill.train: {e}")
