"""Regenerate the shipped pretrained assets.

    python -m harness.pretrain teacher edm|ddpm-huber|ddpm-mse [--kimg K] ...
    python -m harness.pretrain gan weak|strong|wide [--epochs E] ...
    python -m harness.pretrain evaluator [vgg|resnet] [--epochs E] ...   (default: every feature space)
    python -m harness.pretrain all

Every job trains with one resumable loop: a checkpoint (networks, optimisers, EMA, data-stream and RNG
state, elapsed time) is written atomically to ``--run-dir`` every ``--ckpt-every`` seconds and on
SIGINT/SIGTERM; running the same command again continues where it stopped (``--restart`` discards it).
At the end the asset (EMA weights + config) and its manifest entry are written to ``--asset-dir``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.testbed import assets as assets_mod
from harness.evaluation import feature_spaces
from harness.testbed.data import BatchStream, data_checksum, find_data_root, load_split
from harness.common.manifest import git_commit, make_manifest
from harness.method.networks import build, count_parameters
from harness.common.checkpoint import Checkpoint, Interrupted, run_resumable
from harness.method.ema import ema_beta, update_ema
from harness.method.teachers import build_teacher, default_sampler_kwargs

# UNet shared by the three teachers. Seed 000 used 4 levels x 128 channels; this one is sized to train
# on 2 CPU cores in well under an hour (~0.6M parameters) and the manifests say so.
TEACHER_UNET = {"base_channels": 16, "channel_mult": [1, 2, 4], "blocks_per_level": 1, "dropout": 0.1, "attention": True}
SEED000_UNET_NOTE = "seed 000: UNet with 4 levels, 128 hidden channels; ours: 3 levels (28/14/7), 16/32/64 channels"

TEACHER_PRESETS = {
    "edm": {"kind": "edm", "unet": TEACHER_UNET},
    "ddpm-huber": {"kind": "ddpm", "unet": TEACHER_UNET, "num_steps": 2000, "beta_start": 1e-4, "beta_end": 0.02, "loss_type": "huber"},
    "ddpm-mse": {"kind": "ddpm", "unet": TEACHER_UNET, "num_steps": 2000, "beta_start": 1e-4, "beta_end": 0.02, "loss_type": "mse"},
}
# Training lengths of the shipped teachers (thousands of images), chosen to fit one 2-core CPU session:
# about 35-50 minutes each on one contended core. Seed 000 trained ~110 epochs (6,600 kimg) on a GPU.
TEACHER_KIMG = {"edm": 400, "ddpm-huber": 250, "ddpm-mse": 250}
# GAN presets: epochs and the DCGAN's width. Seed 000 trained theirs 3 epochs on purpose (weak); ~15 matched their
# DM. Our strong reference uses 10 to fit the session's CPU budget (~3 min per epoch on one contended core);
# `--epochs 15` gives their longer run. `wide` is the weak GAN's 3 epochs at twice the width (4x the parameters):
# seed 000 suspected DI needs a much stronger model, and this separates capacity from training length.
GAN_PRESETS = {"weak": {"epochs": 3, "width": 64}, "strong": {"epochs": 10, "width": 64},
               "wide": {"epochs": 3, "width": 128}}


@dataclass(frozen=True)
class TrainConfig:
    job: str  # teacher-edm, gan-weak, evaluator, ...
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    ema_halflife_kimg: float = 0.0  # 0 = no EMA
    ema_rampup: float = 0.05
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _cap(steps: int, args) -> int:
    return min(steps, args.max_steps) if args.max_steps else steps


def lr_at(step: int, base_lr: float, warmup_steps: int) -> float:
    return base_lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else base_lr


# ----------------------------------------------------------------------------------------------
# Jobs


def train_teacher(name: str, args) -> dict:
    spec = TEACHER_PRESETS[name]
    torch.manual_seed(args.seed)
    images, labels = load_split("train", args.data_root)
    kimg = args.kimg if args.kimg is not None else TEACHER_KIMG[name]
    steps = _cap(int(kimg * 1000) // args.batch_size, args)
    cfg = TrainConfig(job=f"teacher-{name}", steps=steps, batch_size=args.batch_size, lr=args.lr, betas=(0.9, 0.999),
                      warmup_steps=min(200, steps // 10), ema_halflife_kimg=args.ema_halflife_kimg, seed=args.seed,
                      extra={"teacher": spec, "kimg": kimg})
    teacher = build_teacher(spec).train()
    ema = copy.deepcopy(teacher).eval().requires_grad_(False)
    opt = torch.optim.Adam(teacher.net.parameters(), lr=cfg.lr, betas=cfg.betas)
    stream = BatchStream(images, labels, cfg.batch_size, seed=cfg.seed)
    ckpt = Checkpoint(Path(args.run_dir) / f"teacher-{name}.ckpt", {"net": teacher.net, "ema": ema.net, "opt": opt, "stream": stream})
    running = {"loss": None}

    def step_fn(step: int) -> dict:
        x0, _ = stream.next()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps)
        loss = teacher.loss(x0).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(ema, teacher, ema_beta(cfg.batch_size, (step + 1) * cfg.batch_size, cfg.ema_halflife_kimg, cfg.ema_rampup))
        running["loss"] = loss.item() if running["loss"] is None else 0.98 * running["loss"] + 0.02 * loss.item()
        return {"loss": running["loss"]}

    wall = run_resumable(cfg.steps, step_fn, ckpt, args.ckpt_every, f"teacher {name}")
    metrics = {"train_loss_ema": running["loss"]}
    metrics.update(_quick_sample_metrics(lambda z: ema.sample(z, **default_sampler_kwargs(ema)), args.eval_n, args))
    return _save(f"teacher-{name}", "unet", {"teacher": spec, "net": spec["unet"]}, ema.net.state_dict(), cfg, wall, args,
                 params=count_parameters(ema.net), metrics=metrics, notes={"architecture_vs_seed000": SEED000_UNET_NOTE,
                 "sampler": default_sampler_kwargs(ema)})


def train_gan(name: str, args) -> dict:
    torch.manual_seed(args.seed)
    images, labels = load_split("train", args.data_root)
    preset = GAN_PRESETS[name]
    epochs = args.epochs if args.epochs is not None else preset["epochs"]
    steps = _cap(epochs * (len(images) // args.batch_size), args)
    g_cfg, d_cfg = {"latent_dim": 128, "width": preset["width"]}, {"width": preset["width"]}
    cfg = TrainConfig(job=f"gan-{name}", steps=steps, batch_size=args.batch_size, lr=2e-4, betas=(0.5, 0.999),
                      seed=args.seed, extra={"epochs": epochs, "generator": g_cfg, "discriminator": d_cfg, "loss": "non-saturating BCE"})
    G, D = build("dcgan-g", **g_cfg).train(), build("dcgan-d", **d_cfg).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    stream = BatchStream(images, labels, cfg.batch_size, seed=cfg.seed)
    ckpt = Checkpoint(Path(args.run_dir) / f"gan-{name}.ckpt", {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d, "stream": stream})

    def step_fn(step: int) -> dict:
        real, _ = stream.next()
        z = torch.randn(real.shape[0], g_cfg["latent_dim"])
        fake = G(z)
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()  # -log s(D(x)) - log(1 - s(D(G(z))))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(fake)).mean()  # non-saturating generator loss
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d": d_loss.item(), "g": g_loss.item(), "epoch": stream.epoch}

    wall = run_resumable(cfg.steps, step_fn, ckpt, args.ckpt_every, f"gan {name}")
    G.eval()
    metrics = _quick_sample_metrics(G, args.eval_n, args, latent=g_cfg["latent_dim"])
    return _save(f"gan-{name}", "dcgan-g", {"net": g_cfg}, G.state_dict(), cfg, wall, args,
                 params=count_parameters(G), metrics=metrics)


def train_evaluator(space_name: str, args) -> dict:
    """Train one feature space's classifier (``harness.evaluation.feature_spaces``) and write it with its test feature bank."""
    space = feature_spaces.get(space_name)
    seed = space.seed + args.seed
    torch.manual_seed(seed)
    images, labels = load_split("train", args.data_root)
    test_x, test_y = load_split("test", args.data_root)
    epochs = args.epochs if args.epochs is not None else space.epochs
    steps = _cap(epochs * (len(images) // args.batch_size), args)
    cfg = TrainConfig(job=space.network_asset, steps=steps, batch_size=args.batch_size, lr=1e-3, seed=seed,
                      extra={"epochs": epochs, "net": space.net, "feature_space": space.name,
                             "augment": "random horizontal flip" if space.flip_augment else "none"})
    net = build(space.kind, **space.net).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr * 3, total_steps=steps)
    stream = BatchStream(images, labels, cfg.batch_size, seed=cfg.seed)
    ckpt = Checkpoint(Path(args.run_dir) / f"{space.network_asset}.ckpt", {"net": net, "opt": opt, "sched": sched, "stream": stream})

    def step_fn(step: int) -> dict:
        x, y = stream.next()
        if space.flip_augment:
            flip = torch.rand(x.shape[0]) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "epoch": stream.epoch}

    wall = run_resumable(cfg.steps, step_fn, ckpt, args.ckpt_every, space.network_asset)
    net.eval()
    from harness.evaluation.sampling import featurise

    feats, preds = featurise(net, test_x)
    accuracy = (preds == test_y).float().mean().item()
    entry = _save(space.network_asset, space.kind, {"net": space.net, "feature_space": space.name}, net.state_dict(), cfg,
                  wall, args, params=count_parameters(net), metrics={"test_accuracy": accuracy, "n_test": len(test_y)},
                  notes={"feature_space": space.name, "description": space.description})
    bank_cfg = {"split": "test", "n": len(test_y), "feature_dim": feats.shape[1], "feature_space": space.name}
    _save(space.bank_asset, "feature-bank", bank_cfg, {"features": feats, "labels": test_y}, cfg, 0.0, args,
          params=0, metrics={"n": len(test_y)},
          notes={"made_by": f"evaluator job ({space.name}): penultimate features of the test split"})
    print(f"[{space.network_asset}] test accuracy {accuracy:.4f} on {len(test_y)} images", flush=True)
    return entry


def _quick_sample_metrics(sample_fn, n: int, args, latent: int | None = None) -> dict:
    """Metrics of a freshly trained model on n samples (n=0 skips); the baseline table is the real evaluation."""
    if n <= 0:
        return {}
    from harness.evaluation.sampling import evaluate_sampler

    try:
        result = evaluate_sampler(sample_fn, n=n, latent_dim=latent, seed=args.seed + 12345, asset_dir=args.asset_dir)
    except assets_mod.AssetNotFoundError as err:
        print(f"(skipping quick metrics: {err})", flush=True)
        return {}
    return {f"quick_{k}": v for k, v in result.items() if k in ("precision", "recall", "kid", "kid_std", "fid", "n_samples")}


def _save(name, kind, config, state_dict, cfg: TrainConfig, wall, args, params, metrics, notes=None) -> dict:
    root = find_data_root(args.data_root)
    entry = make_manifest(command=" ".join(["python -m harness.pretrain"] + sys.argv[1:]), config=asdict(cfg), seed=cfg.seed,
                          wall_s=wall, data_checksum=data_checksum(root), parameter_count=params, metrics=metrics,
                          **({"notes": notes} if notes else {}))
    path = assets_mod.save_asset(name, kind, config, state_dict, entry, args.asset_dir)
    print(f"[{name}] saved {path} ({path.stat().st_size / 1e6:.2f} MB) metrics={metrics}", flush=True)
    return entry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.pretrain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("job", choices=["teacher", "gan", "evaluator", "all"], help="what to (re)train")
    p.add_argument("name", nargs="?", help="teacher: edm | ddpm-huber | ddpm-mse; gan: weak | strong | wide; "
                                           f"evaluator: {' | '.join(feature_spaces.FEATURE_SPACES)} (default: all)")
    p.add_argument("--kimg", type=float, default=None, help=f"teacher training length in thousands of images (default {TEACHER_KIMG})")
    p.add_argument("--epochs", type=int, default=None, help="GAN / evaluator epochs (default: weak 3, strong 10, wide 3, evaluator 4)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="teacher learning rate (Adam, linear warm-up)")
    p.add_argument("--ema-halflife-kimg", type=float, default=10.0, help="teacher EMA half-life")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="directory with the FashionMNIST IDX files (else HARNESS_DATA, Debian, cache, download)")
    p.add_argument("--asset-dir", default=None, help="where assets are written (default: the shipped harness/assets)")
    p.add_argument("--run-dir", default="runs/pretrain", help="resumable training checkpoints")
    p.add_argument("--ckpt-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--eval-n", type=int, default=1000, help="samples for the quick metrics stored in the manifest (0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--restart", action="store_true", help="discard an existing checkpoint and start over")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimisation steps (smoke tests / debugging)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    git_commit()  # pin the commit of the code that runs, before anyone edits the tree
    if args.threads:
        torch.set_num_threads(args.threads)
    jobs = []
    if args.job == "teacher":
        if args.name not in TEACHER_PRESETS:
            raise SystemExit(f"error: teacher name must be one of {', '.join(TEACHER_PRESETS)} (got {args.name!r})")
        jobs = [("teacher", args.name)]
    elif args.job == "gan":
        if args.name not in GAN_PRESETS:
            raise SystemExit(f"error: gan name must be one of {', '.join(GAN_PRESETS)} (got {args.name!r})")
        jobs = [("gan", args.name)]
    elif args.job == "evaluator":
        if args.name is not None and args.name not in feature_spaces.FEATURE_SPACES:
            raise SystemExit(f"error: evaluator name must be one of {', '.join(feature_spaces.FEATURE_SPACES)} (got {args.name!r})")
        jobs = [("evaluator", n) for n in ([args.name] if args.name else feature_spaces.FEATURE_SPACES)]
    else:
        jobs = ([("evaluator", n) for n in feature_spaces.FEATURE_SPACES] + [("gan", n) for n in GAN_PRESETS]
                + [("teacher", n) for n in TEACHER_PRESETS])
    from harness.testbed.data import DataNotFoundError

    for job, name in jobs:
        ckpt_name = feature_spaces.get(name).network_asset if job == "evaluator" else f"{job}-{name}"
        if args.restart:
            (Path(args.run_dir) / f"{ckpt_name}.ckpt").unlink(missing_ok=True)
        try:
            if job == "teacher":
                train_teacher(name, args)
            elif job == "gan":
                train_gan(name, args)
            else:
                train_evaluator(name, args)
        except DataNotFoundError as err:
            raise SystemExit(f"error: {err}") from None
        except Interrupted as stop:
            print(stop, flush=True)
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
