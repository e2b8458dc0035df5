"""The Diff-Instruct training loop: one function, every variant (toggles live in ``DIConfig``).

    train(cfg, out_dir) -> summary dict

Each round: ``aux_steps`` fake-score updates (harness.method.steps.aux_step), then ``gen_steps`` generator updates on the
configured objective (harness.method.steps.generator_step), then the EMA of G. The run directory (harness.common.run_dir) is
written before work starts and appended as it goes, and a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch

from harness.method.build import build_nets, make_optimisers, resolve_device
from harness.common.checkpoint import Checkpoint, Interrupted, run_resumable
from harness.method.config import DIConfig
from harness.method.ema import ema_beta, update_ema
from harness.evaluation.run_evaluator import EVAL_GENERATORS, Evaluator, save_samples_figure
from harness.method.gradient_signal import gradient_signal
from harness.common.manifest import git_commit
from harness.method.objectives import OBJECTIVES
from harness.common.run_dir import RunDir, append_row, truncate_rows
from harness.method.run_summary import write_summary
from harness.method.schedules import lr_decay_factor
from harness.method.steps import aux_step, generator_step, round_statistics
from harness.method.teachers import TEACHERS


class Diverged(RuntimeError):
    """A loss, gradient or weight became NaN/inf."""


# Statistics whose non-finite value stops a run (stop_on_divergence), in the order the message names them.
DIVERGENCE_KEYS = ("aux_loss", "surrogate", "gen_grad_norm")


def _claim(run: RunDir, cfg: DIConfig) -> None:
    """Write config.json, or check that the one there describes this run (resuming, or recording a run trained
    elsewhere: its config.json stays as written)."""
    run.path.mkdir(parents=True, exist_ok=True)
    if run.config.is_file():
        if not DIConfig.load(run.config).same_run(cfg):
            raise ValueError(f"{run.path} holds a run with a different config; pick another --out (or delete it)")
    else:
        cfg.save(run.config)


def _diverged(row: dict, generator: torch.nn.Module) -> str | None:
    """What went non-finite this round (for the Diverged message), or None."""
    bad = [k for k in DIVERGENCE_KEYS if k in row and not math.isfinite(row[k])]
    if bad:
        return ", ".join(bad)
    if not all(torch.isfinite(p).all() for p in generator.parameters()):
        return "generator weights"
    return None


def train(cfg: DIConfig, out_dir: str | Path, asset_dir=None, on_eval=None, command: str | None = None,
          pruned_by: tuple[type[BaseException], ...] = ()) -> dict:
    """Run (or resume) one DI run into ``out_dir``; returns the summary also written to summary.json.

    ``on_eval(round, metrics)`` is called after every evaluation (Optuna reports and pruning); an exception
    it raises ends the run after the summary is written, then propagates. The summary's status is 'pruned' for
    the exception types in ``pruned_by`` (a study passes Optuna's TrialPruned), 'failed' for any other.
    """
    # --- the run directory: claim it, or return the summary of a run that already ended there ---------------------
    run = RunDir(out_dir)
    _claim(run, cfg)
    done = run.finished_summary()
    if done is not None:  # e.g. trained elsewhere (study --run-cells on a lent GPU), recorded here
        return done
    commit = git_commit()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # --- networks, EMA, optimisers, evaluator and checkpoint (the seed fixes every initial draw) -------------------
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg)
    nets = build_nets(cfg, asset_dir)
    for net in (nets.generator, nets.aux, nets.teacher):
        net.to(device)
    g_ema = copy.deepcopy(nets.generator).eval().requires_grad_(False)
    opt_aux, opt_gen = make_optimisers(cfg, nets)
    evaluator = Evaluator(cfg, nets, asset_dir)
    ckpt = Checkpoint(run.checkpoint, {"G": nets.generator, "G_ema": g_ema, "aux": nets.aux,
                                       "opt_aux": opt_aux, "opt_gen": opt_gen})
    summarise = OBJECTIVES[cfg.objective].summarise
    log = run.log.open("a")
    evaluations = {"start": None, "final": None}  # the start and final evaluations (kept in the checkpoint)

    def say(msg: str) -> None:
        log.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        log.flush()

    def evaluate(round_idx: int, full: bool = False) -> dict:
        """Curve evaluation (eval.n samples) into evals.csv and a grid; ``full``: also the start or final
        evaluation on eval.final_n samples."""
        scored = EVAL_GENERATORS[cfg.eval.generator](g_ema, nets.generator)
        if full:
            evaluation, metrics, x = evaluator.full(scored)
            evaluations["start" if round_idx == 0 else "final"] = evaluation.to_dict()
        else:
            metrics, x = evaluator.curve(scored)
        signal = gradient_signal(cfg, nets, cfg.eval.grad_signal_batches) if cfg.eval.grad_signal_batches > 1 and cfg.gen_steps else {}
        append_row(run.evals, {"round": round_idx, "kimg": round_idx * cfg.batch_size * cfg.gen_steps / 1000,
                               "n": cfg.eval.n, **metrics, **signal})
        analytic = TEACHERS[cfg.teacher].analytic
        save_samples_figure(x[:64] if x.dim() == 4 else x[: cfg.eval.n], run.grid(round_idx),
                            f"{cfg.preset} round {round_idx}", nets.teacher if analytic else None)
        say(f"eval round {round_idx} (n={cfg.eval.n}): " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def on_start(start_round: int) -> None:
        truncate_rows(run.rounds, start_round)
        # The final evaluation happens after the last checkpoint: redo it when resuming a finished run.
        truncate_rows(run.evals, start_round - 1 if start_round == cfg.rounds else start_round)
        evaluations.update(ckpt.extra or {})
        if start_round == 0:
            evaluate(0, full=True)
            say(f"start {cfg.preset}: {json.dumps(cfg.to_dict(), default=str)}")
        else:
            say(f"resumed at round {start_round}")

    def one_round(r: int) -> dict:
        t0 = time.time()
        # 1. The aux learning rate of this round (a function of the round: nothing to checkpoint).
        for group in opt_aux.param_groups:
            group["lr"] = cfg.lr_aux * lr_decay_factor(cfg.aux_lr_decay, r, cfg.rounds)
        # 2. Fit the fake score to the current generator (an aux-only warm-up before the first generator step).
        if r == 0:
            for _ in range(cfg.aux_warmup_steps):
                aux_step(cfg, nets, opt_aux, nets.sample_latent(cfg.batch_size, device))
        aux_stats = [aux_step(cfg, nets, opt_aux, nets.sample_latent(cfg.batch_size, device)) for _ in range(cfg.aux_steps)]
        # 3. Move the generator on the objective.
        gen_stats = [generator_step(cfg, nets, opt_gen, nets.sample_latent(cfg.batch_size, device)) for _ in range(cfg.gen_steps)]
        # 4. The EMA of G; beta from the images seen *before* this round, as the release does (the first update
        #    copies G).
        batch_imgs = cfg.batch_size * max(cfg.gen_steps, 1)
        beta = cfg.ema_mu if cfg.ema_mu > 0 else ema_beta(batch_imgs, r * batch_imgs, cfg.ema_halflife_kimg, cfg.ema_rampup)
        update_ema(g_ema, nets.generator, beta, copy_buffers=cfg.ema_copy_buffers)
        # 5. Log whatever the steps returned (scalars averaged over the round's steps).
        row = {"round": r + 1, "kimg": (r + 1) * batch_imgs / 1000, **round_statistics(aux_stats, summarise),
               **round_statistics(gen_stats, summarise), "ema_beta": beta, "lr_aux": opt_aux.param_groups[0]["lr"],
               "wall_s": time.time() - t0}
        append_row(run.rounds, row)
        # 6. Stop on a non-finite loss, gradient or weight.
        what = _diverged(row, nets.generator) if cfg.stop_on_divergence else None
        if what:
            raise Diverged(f"non-finite {what} at round {r + 1}")
        # 7. A curve evaluation every eval.every rounds (the last round's is the final evaluation).
        if cfg.eval.every and (r + 1) % cfg.eval.every == 0 and (r + 1) < cfg.rounds:
            metrics = evaluate(r + 1)
            if on_eval is not None:
                on_eval(r + 1, metrics)
        return {"aux": row.get("aux_loss", float("nan")), "gap": row.get("score_gap", float("nan"))}

    # --- the rounds, resumable; then the final evaluation and the summary, whatever ended the run -----------------
    status, reason, t_start = "completed", "", time.time()
    wall = 0.0

    def summarise_run() -> dict:
        return write_summary(run.path, cfg, status, reason, evaluations, wall or time.time() - t_start, commit,
                             command, device)

    try:
        wall = run_resumable(cfg.rounds, one_round, ckpt, cfg.ckpt_every_s, f"DI {cfg.preset}", on_start=on_start,
                             extra_fn=lambda: {"start": evaluations["start"]})
        final = evaluate(cfg.rounds, full=True)
        if on_eval is not None:
            on_eval(cfg.rounds, final)
    except Diverged as err:
        status, reason = "diverged", str(err)
        say(f"DIVERGED: {err}")
    except Interrupted:
        log.close()
        raise
    except Exception as err:  # pruning (from on_eval) and anything else: record, then re-raise
        status, reason = ("pruned" if isinstance(err, pruned_by) else "failed"), f"{type(err).__name__}: {err}"
        summarise_run()
        log.close()
        raise
    summary = summarise_run()
    log.close()
    return summary
