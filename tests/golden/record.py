"""Record (or check) the golden values of a seeded 20-round run of each preset.

    python -m tests.golden.record            # rewrite tests/golden/<preset>.json from the current code
    python -m tests.golden.record --check    # compare, print the largest relative difference per preset

A golden file holds what a refactor must not change: every per-round statistic the run logs (rounds.csv, wall
time excluded), every curve evaluation (evals.csv), the start and final evaluation values (summary.json), and a
fingerprint of the final weights (sum, sum of squares and 8 strided entries of every tensor of G, its EMA and the
aux net). Recording is a behaviour change: do it only in a commit that says why the numbers moved.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PRESETS = ("reference-onestep", "reference-gan", "seed-report", "toy")
# Small evaluations (the metrics' code path, not their precision, is what is pinned), one thread (a fixed
# summation order), a checkpoint only at the end.
COMMON = ["rounds=20", "seed=0", "threads=1", "eval_every=10", "ckpt_every_s=1e9"]
SCALE = {"toy": ["eval_n=300", "final_eval_n=300"],
         "reference-onestep": ["batch_size=16", "eval_n=100", "final_eval_n=100"],
         "reference-gan": ["batch_size=32", "eval_n=100", "final_eval_n=100"],
         "seed-report": ["batch_size=32", "eval_n=100", "final_eval_n=100"]}
IGNORED_COLUMNS = {"wall_s"}


def golden_config(name: str):
    from harness.method.overrides import apply_overrides
    from harness.method.presets import preset

    return apply_overrides(preset(name), [*COMMON, *SCALE[name]])


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: _number(v) for k, v in row.items() if k not in IGNORED_COLUMNS and v != ""}
                for row in csv.DictReader(f)]


def fingerprint(state_dict: dict) -> dict:
    out = {}
    for k, v in state_dict.items():
        if not torch.is_tensor(v) or not v.is_floating_point():
            continue
        flat = v.detach().double().flatten()
        idx = torch.linspace(0, len(flat) - 1, min(8, len(flat))).long()
        out[k] = [flat.sum().item(), flat.pow(2).sum().item(), *flat[idx].tolist()]
    return out


def run_golden(name: str, out_dir: Path) -> dict:
    from harness.method.loop import train

    torch.set_num_threads(1)
    summary = train(golden_config(name), out_dir)
    ckpt = torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {
        "preset": name,
        "overrides": [*COMMON, *SCALE[name]],
        "status": summary["status"],
        "rounds": _csv(out_dir / "rounds.csv"),
        "evals": _csv(out_dir / "evals.csv"),
        "start": summary["start"]["values"],
        "final": summary["final"]["values"],
        "weights": {net: fingerprint(ckpt[net]) for net in ("G", "G_ema", "aux")},
    }


def differences(expected, actual, path: str = "") -> list[tuple[float, str]]:
    """(relative difference, where) for every number; inf where a key, a string or a length differs."""
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return [(math.inf, f"{path}: keys {sorted(set(expected) ^ set(actual))}")]
        return [d for k in expected for d in differences(expected[k], actual[k], f"{path}.{k}")]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [(math.inf, f"{path}: length {len(expected)} != {len(actual)}")]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{path}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if math.isnan(expected) and math.isnan(actual):
            return [(0.0, path)]
        return [(abs(expected - actual) / max(abs(expected), 1e-12) if expected != actual else 0.0, path)]
    return [(0.0 if expected == actual else math.inf, f"{path}: {expected!r} != {actual!r}")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.golden.record", description=__doc__.split("\n\n")[0])
    p.add_argument("presets", nargs="*", default=list(PRESETS))
    p.add_argument("--check", action="store_true", help="compare with the stored files instead of writing them")
    args = p.parse_args(argv)
    worst = 0.0
    for name in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            got = json.loads(json.dumps(run_golden(name, Path(tmp))))
        path = HERE / f"{name}.json"
        if args.check:
            diff = max(differences(json.loads(path.read_text()), got), default=(0.0, ""))
            worst = max(worst, diff[0])
            print(f"{name}: largest relative difference {diff[0]:.3g} at {diff[1]}")
        else:
            path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
            print(f"{name}: wrote {path} ({path.stat().st_size // 1024} KB)")
    sys.exit(1 if worst > 1e-6 else 0)


if __name__ == "__main__":
    main()
