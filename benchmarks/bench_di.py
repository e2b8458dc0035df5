"""DI round throughput (not a test): rounds/s and images/s at batch 128 for the one-step, GAN and seed 000
(DDPM teacher + DCGAN) settings on CPU or GPU, the ratio of one round's time to the sum of its network passes
timed alone (goal <= 1.15), and what the optimised paths (inference mode, channels_last, bf16, compile) save.

    python benchmarks/bench_di.py [--settings onestep,gan,seed-report] [--device auto] [--repeats 5] [--batch 128] [--bf16] [--compile]

Networks are freshly built with the shipped architectures (weights do not change speed), so no assets are
needed. Each figure is the median over ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.common import markdown
from harness.method.presets import preset
from harness.method.steps import DINets, aux_step, generator_step
from harness.method.generators import OneStepGenerator
from harness.method.build import make_optimisers
from harness.common.manifest import make_manifest, write_json
from harness.method.networks import build
from harness.testbed.pretrain import TEACHER_PRESETS
from harness.method.teachers import build_teacher, edm_denoising_loss


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# setting -> (teacher architecture, preset): the paper's one-step setting, the GAN adaptation, seed 000's setting
SETTINGS = {"onestep": ("edm", "reference-onestep"), "gan": ("edm", "reference-gan"), "seed-report": ("ddpm-huber", "seed-report")}


def make(setting: str, batch: int, device: torch.device):
    teacher_kind, preset_name = SETTINGS[setting]
    teacher = build_teacher(TEACHER_PRESETS[teacher_kind]).eval().requires_grad_(False)
    aux = copy.deepcopy(teacher).train().requires_grad_(True)
    if setting == "onestep":
        gen, latent = OneStepGenerator(copy.deepcopy(teacher), 1.0).train().requires_grad_(True), (1, 28, 28)
    else:
        gen, latent = build("dcgan-g", latent_dim=128, width=64).train(), (128,)
    for net in (teacher, aux, gen):
        net.to(device)
    nets = DINets(generator=gen, aux=aux, teacher=teacher, latent_shape=latent)
    cfg = preset(preset_name, batch_size=batch, device=device.type)
    return cfg, nets


def synchronised(fn, device: torch.device):
    """fn, then wait for the device: GPU kernels run asynchronously, so a timing must include their end."""
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run


def round_fn(cfg, nets: DINets, batch: int, device: torch.device):
    """One DI round as the loop runs it (an aux step, then a generator step, on fresh latents), with new optimisers."""
    opt_aux, opt_gen = make_optimisers(cfg, nets)

    def one_round():
        aux_step(cfg, nets, opt_aux, nets.sample_latent(batch, device))
        generator_step(cfg, nets, opt_gen, nets.sample_latent(batch, device))

    return one_round


def passes_alone(cfg, nets, batch: int, repeats: int, device: torch.device) -> dict:
    """Each network pass of a reference round, timed on its own."""
    z = nets.sample_latent(batch, device)
    sigma = torch.full((batch,), 0.5, device=device)
    with torch.no_grad():
        x0 = nets.generator(z)
    noise = torch.randn_like(x0)

    def g_fwd_nograd():
        with torch.no_grad():
            nets.generator(z)

    def aux_fwd_bwd():
        edm_denoising_loss(nets.aux, x0, sigma, noise).sum().backward()

    def score_fwd(net):
        def f():
            with torch.no_grad():
                net.denoise(x0 + noise, sigma)
        return f

    def g_fwd_bwd():
        (nets.generator(z) * x0).sum().backward()

    t = lambda fn: median_time(synchronised(fn, device), repeats)  # noqa: E731
    return {"G forward (aux batch)": t(g_fwd_nograd), "aux forward+backward": t(aux_fwd_bwd),
            "teacher forward (diagnostic)": t(score_fwd(nets.teacher)), "G forward+backward": t(g_fwd_bwd),
            "teacher forward (score)": t(score_fwd(nets.teacher)), "aux forward (score)": t(score_fwd(nets.aux))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast (meant for GPUs)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (meant for GPUs)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    settings = [x for x in args.settings.split(",") if x]
    unknown = [x for x in settings if x not in SETTINGS]
    if unknown:
        raise SystemExit(f"error: unknown setting(s) {', '.join(unknown)}; available: {', '.join(SETTINGS)}")
    t_start, rows = time.time(), []
    for setting in settings:
        cfg, nets = make(setting, args.batch, device)
        t_round = median_time(synchronised(round_fn(cfg, nets, args.batch, device), device), args.repeats)
        parts = passes_alone(cfg, nets, args.batch, args.repeats, device)
        rows.append({"setting": setting, "batch": args.batch, "round_s": t_round, "rounds_per_s": 1 / t_round,
                     "images_per_s": args.batch / t_round, "sum_of_passes_s": sum(parts.values()),
                     "round_over_passes": t_round / sum(parts.values()), "passes": parts})
    # Optimised path vs plain eager fp32 (same math; equality of the gradient is asserted in tests/test_di.py).
    variants = {"eager fp32": {}, "inference_mode + channels_last": {"inference_frozen": True, "channels_last": True}}
    if args.bf16:
        variants["+ bf16 autocast"] = {"inference_frozen": True, "channels_last": True, "autocast_bf16": True}
    if args.compile:
        variants["+ torch.compile"] = {"inference_frozen": True, "channels_last": True, "autocast_bf16": args.bf16, "compile": True}
    optimised = []
    for setting in settings:
        for label, flags in variants.items():
            cfg, nets = make(setting, args.batch, device)
            cfg = dataclasses.replace(cfg, **flags)
            if cfg.channels_last:
                for net in (nets.teacher, nets.aux, nets.generator):
                    net.to(memory_format=torch.channels_last)
            if cfg.compile:
                for den in (nets.teacher, nets.aux):
                    den.net.forward = torch.compile(den.net.forward)
            optimised.append({"setting": setting, "path": label,
                              "round_s": median_time(synchronised(round_fn(cfg, nets, args.batch, device), device),
                                                     args.repeats)})
    for r in optimised:
        base = next(o["round_s"] for o in optimised if o["setting"] == r["setting"] and o["path"] == "eager fp32")
        r["speedup_vs_eager"] = base / r["round_s"]

    out = Path(args.out)
    write_json(out / f"di-rounds-{device.type}.json", {"rows": rows, "optimised": optimised, "manifest": make_manifest(
        command=" ".join(["python benchmarks/bench_di.py"] + (argv if argv is not None else sys.argv[1:])),
        config=vars(args), seed=None, wall_s=time.time() - t_start, device=device)})
    rounds = markdown.table(
        ["setting", "batch", "rounds/s", "images/s", "round (s)", "sum of passes (s)", "round / passes"],
        [[r["setting"], str(r["batch"]), f"{r['rounds_per_s']:.3g}", f"{r['images_per_s']:.3g}", f"{r['round_s']:.3g}",
          f"{r['sum_of_passes_s']:.3g}", f"{r['round_over_passes']:.3f}"] for r in rows])
    paths = markdown.table(["setting", "path", "round (s)", "speed-up vs eager fp32"],
                           [[r["setting"], r["path"], f"{r['round_s']:.3g}", f"{r['speedup_vs_eager']:.3f}"] for r in optimised])
    text = rounds + "\n\n" + paths
    (out / f"di-rounds-{device.type}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
