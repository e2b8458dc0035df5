"""Run one Diff-Instruct configuration.

    python -m harness.run --preset NAME [--set key=value ...] [--rounds N] [--seed S] [--out DIR]

Writes DIR/config.json, rounds.csv, evals.csv, grids/, log.txt, checkpoint.pt and summary.json (see
harness/method/loop.py). Running the same command again after a kill resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from harness.method.config import ConfigError
from harness.method.overrides import apply_overrides, documented_fields, field_docs
from harness.method.presets import PRESETS, preset


def fields_help(width: int = 110) -> str:
    """One line per config field (a group's fields under dotted names): name = default, then the first sentence of
    its docstring. The defaults are read from the fields, not from a built DIConfig, whose validation would import
    torch (for the registries' names)."""
    docs, lines = field_docs(), []
    for name, default in documented_fields():
        doc = docs.get(name, "").split(". ")[0]
        line = f"  {name} = {default!r}" + (f"  -- {doc}" if doc else "")
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"presets: {', '.join(PRESETS)}\n\nfields (--set key=value; nested: "
                                       f"--set gen_sigma.sigma_max=10; reference defaults):\n" + fields_help())
    p.add_argument("--preset", default="reference-onestep", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--rounds", type=int, default=None, help="number of DI rounds (aux + generator updates)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="run directory (default runs/di/<preset>-seed<seed>)")
    p.add_argument("--asset-dir", default=None, help="pretrained assets (default: shipped)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    try:
        cfg = apply_overrides(preset(args.preset), args.overrides)
        extra = {k: v for k, v in (("rounds", args.rounds), ("seed", args.seed)) if v is not None}
        if extra:
            cfg = dataclasses.replace(cfg, **extra)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return
    from harness.testbed import assets
    from harness.common.checkpoint import Interrupted
    from harness.method.loop import train

    out = args.out or f"runs/di/{cfg.preset}-seed{cfg.seed}"
    command = " ".join(["python -m harness.run"] + (argv if argv is not None else sys.argv[1:]))
    try:
        summary = train(cfg, out, asset_dir=args.asset_dir, command=command)
    except (assets.AssetNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        raise SystemExit(130) from None
    start = (summary.get("start") or {}).get("values", {})
    final = (summary.get("final") or {}).get("values", {})
    keys = ["mmd2"] if "mmd2" in final else ["fid_vgg", "kid_vgg", "recall_vgg", "fid_resnet", "recall_resnet"]
    changes = " ".join(f"{k} {start.get(k, float('nan')):.4g}->{final.get(k, float('nan')):.4g}" for k in keys)
    print(f"{summary['status']}{': ' + summary['reason'] if summary['reason'] else ''} | {changes} | "
          f"verdict: {summary.get('verdict', 'n/a')} | {out}")


if __name__ == "__main__":
    main()
