"""Testbed throughput benchmark (not a test): teacher training images/s and sampling ms/image.

    python benchmarks/bench_testbed.py [--repeats 5] [--out results/benchmarks] [--device cpu|cuda]

Each figure is the median of ``--repeats`` timed repetitions after one warm-up, on freshly built
networks with the shipped architectures (weights do not affect speed). Writes testbed.json/.md with a
manifest (command, git commit, device, threads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.common import markdown
from harness.common.manifest import make_manifest, write_json
from harness.method.networks import build
from harness.testbed.pretrain import TEACHER_PRESETS
from harness.method.teachers import build_teacher


def timed(fn, repeats: int, device, warmup: bool = True) -> list[float]:
    if warmup:
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=128, help="training batch")
    p.add_argument("--sample-batch", type=int, default=100, help="sampling batch")
    p.add_argument("--ancestral-batch", type=int, default=8, help="batch for the full 2000-step ancestral sampler")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/benchmarks")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.time()
    rows = []

    for name, spec in TEACHER_PRESETS.items():
        teacher = build_teacher(spec).to(device).train()
        opt = torch.optim.Adam(teacher.net.parameters(), 1e-4)
        x0 = torch.rand(args.batch, 1, 28, 28, device=device) * 2 - 1

        def train_step():
            loss = teacher.loss(x0).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        ts = timed(train_step, args.repeats, device)
        rows.append({"what": f"train teacher-{name}", "unit": "images/s", "median": args.batch / statistics.median(ts),
                     "batch": args.batch, "repeats": args.repeats})
        teacher.eval()
        samplers = [{"steps": 18, "sampler": "heun"}] if spec["kind"] == "edm" else [
            {"steps": 50, "sampler": "ddim"}, {"steps": 2000, "sampler": "ancestral"}]
        for kw in samplers:
            b = args.ancestral_batch if kw["steps"] == 2000 else args.sample_batch
            z = torch.randn(b, 1, 28, 28, device=device)
            full = kw["steps"] == 2000  # one timed pass; the DDIM timing above already warmed this network up
            reps = 1 if full else args.repeats
            with torch.inference_mode():
                ts = timed(lambda: teacher.sample(z, **kw), reps, device, warmup=not full)
            rows.append({"what": f"sample teacher-{name} {kw['sampler']} nfe={teacher.nfe(**kw)}", "unit": "ms/image",
                         "median": 1000 * statistics.median(ts) / b, "batch": b, "repeats": reps})

    g = build("dcgan-g", latent_dim=128, width=64).to(device).eval()
    for b in sorted({100, args.sample_batch}):
        z = torch.randn(b, 128, device=device)
        with torch.inference_mode():
            ts = timed(lambda: g(z), args.repeats, device)
        rows.append({"what": f"sample gan (batch {b})", "unit": "ms/image", "median": 1000 * statistics.median(ts) / b,
                     "batch": b, "repeats": args.repeats})
        if b == 100:
            rows.append({"what": "sample gan: 100 images", "unit": "s", "median": statistics.median(ts), "batch": b,
                         "repeats": args.repeats})

    out = Path(args.out)
    suffix = device.type
    write_json(out / f"testbed-{suffix}.json", {"rows": rows, "manifest": make_manifest(
        command=" ".join(["python benchmarks/bench_testbed.py"] + (argv if argv is not None else sys.argv[1:])),
        config=vars(args), seed=None, wall_s=time.time() - t_start, device=device)})
    text = markdown.table(["what", "median", "unit", "batch", "repeats"],
                          [[r["what"], f"{r['median']:.4g}", r["unit"], str(r["batch"]), str(r["repeats"])] for r in rows])
    (out / f"testbed-{suffix}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
