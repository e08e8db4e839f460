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

import torch

from common import distributed, engine, finetune
from common.checkpoint import load_checkpoint, make_state, save_checkpoint
from common.config import cli
from common.files import write_json
from common.landmark_schemes import flip_permutation
from common.logger import log
from distill import leakage, pool
from distill.data import distillation_set
from distill.teacher import check_teacher, load_landmark_model, teacher_targets
from landmarks import formats, scores
from landmarks.engine import eval_loader, evaluate, heatmap_loss, test_splits
from landmarks.train import build_model

FLAGS = {"teacher": "teacher", "student_init": "model.init", "unlabeled": "unlabeled.list", "steps": "distill.steps"}
EXTRA_ARGS = [
    ("--teacher", dict(help="the fine-tuned landmark checkpoint, the first teacher (config key: teacher)")),
    ("--student-init", dict(help="student backbone: scratch | imagenet | checkpoint (config key: model.init)")),
    ("--unlabeled", dict(help="unlabelled pool list from python -m distill.pool (config key: unlabeled.list)")),
    ("--steps", dict(type=int, help="number of self-distillation steps T (config key: distill.steps)")),
]


def apply_flags(cfg, args):
    """Command-line flags (``FLAGS``) win over their config keys."""
    for flag, key in FLAGS.items():
        if getattr(args, flag) not in (None, ""):
            *section, name = key.split(".")
            (cfg[section[0]] if section else cfg)[name] = getattr(args, flag)
    return cfg


def make_student(*, arch, init, n_points, head_width, seed):
    """A fresh student: the pre-trained backbone + a head drawn from ``seed`` (same on resume)."""
    torch.manual_seed(seed)
    return build_model(arch=arch, init=init, n_points=n_points, head_width=head_width)


def main(cfg):
    info = distributed.init()
    device, out, data, optim = info.device, cfg.out, cfg.data, cfg.optim
    steps, primary = cfg.distill.steps, scores.PRIMARY[data.dataset]
    if steps < 1 or not cfg.teacher or not cfg.unlabeled.list:
        raise ValueError(f"distill.steps={steps} must be >= 1; give the first teacher (--teacher / teacher=) and "
                         f"the pool (--unlabeled / unlabeled.list=)")
    writer = finetune.start_run(cfg, "distill.train", info)

    n_points = formats.N_POINTS[data.dataset]
    full, labelled, unlabelled, train_set = distillation_set(cfg, out_dir=out)
    per_rank = optim.batch_size // info.world_size
    loader = engine.make_loader(train_set, batch_size=per_rank, train=True, workers=data.num_workers, seed=cfg.seed)
    log(f"{len(labelled)} labelled faces ({data.fraction:.3g} of {len(full)} in {data.dataset}/{data.train_split}) "
        f"+ {len(unlabelled)} unlabelled ({cfg.unlabeled.list}); {steps} step(s) of {optim.epochs} epochs, "
        f"{len(loader)} iterations/epoch, global batch {optim.batch_size}, student init {cfg.model.init}")

    teacher, teacher_cfg = load_landmark_model(cfg.teacher)
    check_teacher(cfg.teacher, teacher_cfg, teacher.head.out.out_channels, arch=cfg.model.arch,
                  input_size=data.input_size, n_points=n_points, labelled_keys=labelled.keys, fraction=data.fraction)
    loaders = dict(input_size=data.input_size, box_scale=data.box_scale, batch_size=per_rank,
                   workers=data.num_workers)
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
    records = json.load(open(steps_path)) if os.path.isfile(steps_path) else {}
    start_step, resume_step = 1, None
    if os.path.isfile(last_path):
        resume = load_checkpoint(last_path)
        resume_step = resume["step"]
        start_step = resume_step + (resume["epoch"] >= optim.epochs and str(resume_step) in records)
    if "0" not in records:
        records["0"] = score(teacher.to(device))
    lrs = engine.lr_values(optim.schedule, base_lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                           milestones=optim.milestones, gamma=optim.gamma)
    for step in range(start_step, steps + 1):
        if step > 1:
            teacher, _ = load_landmark_model(step_path(step - 1))
        teacher.to(device).eval()
        student = make_student(arch=cfg.model.arch, init=cfg.model.init, n_points=n_points,
                               head_width=cfg.model.head_width, seed=cfg.seed * 1000 + step)
        student = engine.prepare_model(student, mode="finetune", device=device)
        targets = teacher_targets(teacher, input_size=data.input_size, heatmap_size=data.heatmap_size,
                                  sigma=data.sigma, labelled=cfg.distill.labelled_targets,
                                  flip_perm=flip_perm if cfg.distill.teacher_flip else None, amp=amp)

        def loss_fn(heatmaps, batch):
            """Pixel-wise l2 against the teacher's heatmaps of the same augmented crops (§3.5)."""
            return heatmap_loss(heatmaps, targets(batch, device), batch["valid"]), {}

        fitted = engine.fit(student, loader, engine.build_optimizer(student, optim), lrs, loss_fn, info=info,
                            out_dir=out, epochs=optim.epochs, mode="finetune", amp=amp, seed=cfg.seed, config=cfg,
                            writer=writer, log_every=cfg.train.log_every, identity={"step": step},
                            tags={"step": step}, stream=step * 10007, resume=resume_step == step)
        if fitted.skipped_images is not None:
            records["unreadable_images"] = fitted.skipped_images                  # per pass over the set
        if distributed.is_main():
            save_checkpoint(step_path(step), make_state(student, epoch=optim.epochs, config=cfg, step=step))
        records[str(step)] = score(student)
        if distributed.is_main():
            write_json(steps_path, records)
        writer.write({"step": step, "test": records[str(step)]})
        log(f"step {step} {primary}: " + ", ".join(f"{k} {v[primary]:.4f}" for k, v in records[str(step)].items()))
        distributed.barrier()
        del teacher, student

    results = {"kind": "distill", "dataset": data.dataset, "label": cfg.label, "init": cfg.model.init,
               "teacher_checkpoint": os.path.abspath(cfg.teacher), "fraction": data.fraction,
               "n_labelled": len(labelled), "reference_size": len(full), "amount": cfg.unlabeled.amount,
               "n_unlabelled": len(unlabelled), "unreadable_images": records.get("unreadable_images", 0),
               "primary": primary, "steps_total": steps, "teacher": {"splits": records["0"]},
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
