"""DI round throughput (not a test): rounds/s and images/s at batch 128 for the onestep and GAN settings,
and the ratio of one round's time to the sum of its network passes timed alone (goal <= 1.15).

    python benchmarks/bench_di.py [--repeats 5] [--batch 128] [--out results/benchmarks]

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

from harness.config import preset
from harness.di import DINets, aux_step, edm_denoising_loss, generator_step
from harness.loop import OneStepGenerator, make_optimisers
from harness.manifest import make_manifest, write_json
from harness.networks import build
from harness.pretrain import TEACHER_PRESETS
from harness.teachers import build_teacher


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def make(setting: str, batch: int):
    teacher = build_teacher(TEACHER_PRESETS["edm"]).eval().requires_grad_(False)
    aux = copy.deepcopy(teacher).train().requires_grad_(True)
    if setting == "onestep":
        gen, latent = OneStepGenerator(copy.deepcopy(teacher), 1.0).train().requires_grad_(True), (1, 28, 28)
    else:
        gen, latent = build("dcgan-g", latent_dim=128, width=64).train(), (128,)
    nets = DINets(generator=gen, aux=aux, teacher=teacher, latent_shape=latent)
    cfg = preset("reference-onestep" if setting == "onestep" else "reference-gan", batch_size=batch)
    return cfg, nets


def passes_alone(cfg, nets, batch: int, repeats: int) -> dict:
    """Each network pass of a reference round, timed on its own."""
    z = nets.sample_latent(batch)
    sigma = torch.full((batch,), 0.5)
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

    return {"G forward (aux batch)": median_time(g_fwd_nograd, repeats),
            "aux forward+backward": median_time(aux_fwd_bwd, repeats),
            "teacher forward (diagnostic)": median_time(score_fwd(nets.teacher), repeats),
            "G forward+backward": median_time(g_fwd_bwd, repeats),
            "teacher forward (score)": median_time(score_fwd(nets.teacher), repeats),
            "aux forward (score)": median_time(score_fwd(nets.aux), repeats)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast (meant for GPUs)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (meant for GPUs)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start, rows = time.time(), []
    for setting in ("onestep", "gan"):
        cfg, nets = make(setting, args.batch)
        opt_aux, opt_gen = make_optimisers(cfg, nets)

        def one_round():
            aux_step(cfg, nets, opt_aux, nets.sample_latent(args.batch))
            generator_step(cfg, nets, opt_gen, nets.sample_latent(args.batch))

        t_round = median_time(one_round, args.repeats)
        parts = passes_alone(cfg, nets, args.batch, args.repeats)
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
    for setting in ("onestep", "gan"):
        for label, flags in variants.items():
            cfg, nets = make(setting, args.batch)
            cfg = dataclasses.replace(cfg, **flags)
            if cfg.channels_last:
                for net in (nets.teacher, nets.aux, nets.generator):
                    net.to(memory_format=torch.channels_last)
            if cfg.compile:
                for den in (nets.teacher, nets.aux):
                    den.net.forward = torch.compile(den.net.forward)
            opt_aux, opt_gen = make_optimisers(cfg, nets)

            def one_round():
                aux_step(cfg, nets, opt_aux, nets.sample_latent(args.batch))
                generator_step(cfg, nets, opt_gen, nets.sample_latent(args.batch))

            optimised.append({"setting": setting, "path": label, "round_s": median_time(one_round, args.repeats)})
    for r in optimised:
        base = next(o["round_s"] for o in optimised if o["setting"] == r["setting"] and o["path"] == "eager fp32")
        r["speedup_vs_eager"] = base / r["round_s"]

    out = Path(args.out)
    write_json(out / "di-rounds-cpu.json", {"rows": rows, "optimised": optimised, "manifest": make_manifest(
        command=" ".join(["python benchmarks/bench_di.py"] + (argv if argv is not None else sys.argv[1:])),
        config=vars(args), seed=None, wall_s=time.time() - t_start)})
    lines = ["| setting | batch | rounds/s | images/s | round (s) | sum of passes (s) | round / passes |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['batch']} | {r['rounds_per_s']:.3g} | {r['images_per_s']:.3g} | {r['round_s']:.3g} | "
              f"{r['sum_of_passes_s']:.3g} | {r['round_over_passes']:.3f} |" for r in rows]
    lines += ["", "| setting | path | round (s) | speed-up vs eager fp32 |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['path']} | {r['round_s']:.3g} | {r['speedup_vs_eager']:.3f} |" for r in optimised]
    (out / "di-rounds-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
