"""The Diff-Instruct training loop: one function, every variant (toggles live in ``DIConfig``).

    train(cfg, out_dir) -> summary dict

Run directory (written before work starts, appended as it goes, resumable after a kill):
    config.json    the frozen DIConfig
    rounds.csv     one row per round: aux_loss, teacher_loss, surrogate, grad norms, score gap (mean and per
                   sigma bin), EMA beta, wall time (append-only; rows after the last checkpoint are dropped
                   on resume so nothing is duplicated)
    evals.csv      every ``eval_every`` rounds (and rounds 0 and last): curve metrics of the EMA generator on the
                   first ``eval_n`` evaluation latents, every registered metric in every feature space
    grids/         sample grids of the EMA generator at each evaluation; strip.png: all of them side by side
    log.txt        readable log
    checkpoint.pt  G, EMA of G, aux, both optimisers, RNG, round
    summary.json   status (completed / diverged / pruned), reason, wall time, and the start and final evaluations
                   on ``final_eval_n`` latents (values and half-samples, see harness.scoring) with their paired
                   change and the run's own verdict (one seed: evaluation noise only)
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from . import assets
from .checkpoint import Checkpoint, Interrupted, run_resumable
from .config import DIConfig
from .di import DINets, SIGMA_BIN_NAMES, aux_step, bin_score_gap, generator_step
from .diagnostics import gradient_signal
from .ema import ema_beta, update_ema
from .generators import GENERATORS
from .manifest import git_commit, make_manifest, write_json
from .schedules import lr_decay_factor
from .teachers import TEACHERS

ROUND_COLUMNS = ["round", "kimg", "aux_loss", "teacher_loss", "aux_grad_norm", "surrogate", "gen_grad_norm",
                 "score_gap", *SIGMA_BIN_NAMES, "ema_beta", "lr_aux", "wall_s"]


class Diverged(RuntimeError):
    """A loss, gradient or weight became NaN/inf."""


def required_assets(cfg: DIConfig) -> list[str]:
    """Shipped assets a run needs (none for the toy, which scores without feature spaces)."""
    if cfg.teacher == "toy-gmm":
        return []
    from .scoring import required_assets as scoring_assets

    names = [TEACHERS[cfg.teacher].asset, *scoring_assets(), GENERATORS[cfg.generator].asset]
    return [name for name in names if name]


def check_assets(cfg: DIConfig, asset_dir=None) -> None:
    """Fail fast, with one line, before any work: every asset the run needs is present."""
    for name in required_assets(cfg):
        path = assets.asset_dir(asset_dir) / f"{name}.pt"
        if not path.is_file():
            raise assets.AssetNotFoundError(f"asset {name!r} not found at {path}; regenerate it with "
                                            f"`python -m harness.pretrain` or point HARNESS_ASSETS at a directory that has it")


def build_nets(cfg: DIConfig, asset_dir=None) -> DINets:
    """Teacher (frozen), generator and aux networks as the config asks (registries: harness.teachers.TEACHERS,
    harness.generators.GENERATORS)."""
    teacher, untrained_denoiser = TEACHERS[cfg.teacher].load(cfg, asset_dir)

    def make_aux() -> nn.Module:  # aux_init=scratch: same architecture, fresh weights
        return copy.deepcopy(teacher) if cfg.aux_init == "teacher" else untrained_denoiser()

    build_generator = GENERATORS[cfg.generator].build
    # A fresh network draws its initial weights from the global RNG, so the build order is part of what a seed
    # gives: the toy has always built G before D_q, the image settings D_q before G.
    if cfg.teacher == "toy-gmm":
        generator, latent = build_generator(cfg, teacher, asset_dir)
        aux = make_aux()
    else:
        aux = make_aux()
        generator, latent = build_generator(cfg, teacher, asset_dir)
    teacher.eval().requires_grad_(False)
    aux.train().requires_grad_(True)
    generator.train().requires_grad_(True)
    if cfg.channels_last and cfg.teacher != "toy-gmm":
        for net in (teacher, aux, generator):
            net.to(memory_format=torch.channels_last)
    if cfg.compile:  # compile the forwards, not the modules, so state_dict keys (checkpoints) are unchanged
        for den in (teacher, aux):
            den.net.forward = torch.compile(den.net.forward)
    return DINets(generator=generator, aux=aux, teacher=teacher, latent_shape=latent)


def resolve_device(cfg: DIConfig) -> torch.device:
    """The run's device; on CUDA, TF32 is switched off as the release does (fp32 numerics on every GPU)."""
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda asked for but CUDA is not available")
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return torch.device("cuda")
    return torch.device("cpu")


def make_optimisers(cfg: DIConfig, nets: DINets):
    opt_aux = torch.optim.Adam(nets.aux.parameters(), lr=cfg.lr_aux, betas=cfg.betas_aux, eps=1e-8)
    opt_gen = torch.optim.Adam(nets.generator.parameters(), lr=cfg.lr_gen, betas=cfg.betas_gen, eps=1e-8)
    return opt_aux, opt_gen


# ----------------------------------------------------------------------------------------------
# Evaluation of the EMA generator


class Evaluator:
    """Scores a generator on a fixed latent batch (the same z at every evaluation and, for one seed, in every
    variant, so changes are the generator's, not the sampling noise's).

    ``curve(G)``: the first ``eval_n`` latents, values only (curves, pruning). ``full(G)``: all ``final_eval_n``
    latents, every metric in every feature space with half-samples (the start and final evaluations), plus the
    curve values of its first ``eval_n`` samples, so every point of a curve has the same n."""

    def __init__(self, cfg: DIConfig, nets: DINets, asset_dir=None):
        self.cfg, self.toy = cfg, cfg.teacher == "toy-gmm"
        g = torch.Generator().manual_seed(10_000 + cfg.seed)
        self.z = torch.randn((max(cfg.eval_n, cfg.final_eval_n), *nets.latent_shape), generator=g)
        self.teacher = nets.teacher
        if not self.toy:
            from .scoring import references

            self.refs = references(asset_dir)

    @torch.no_grad()
    def samples(self, generator: nn.Module, n: int, batch: int = 500) -> torch.Tensor:
        was = generator.training
        generator.eval()
        device = next(generator.parameters()).device
        out = torch.cat([generator(self.z[i : min(i + batch, n)].to(device)).cpu() for i in range(0, n, batch)])
        generator.train(was)
        return out

    def _score(self, x: torch.Tensor, half_samples: int):
        from .scoring import Evaluation, evaluate_features, featurise_all

        if self.toy:
            from .toy import toy_metrics

            values = {k: float(v) for k, v in toy_metrics(x, self.teacher, seed=self.cfg.seed).items()}
            return Evaluation(n=len(x), values=values), None
        feats = featurise_all(x.clamp(-1, 1), self.refs)
        return evaluate_features(feats, self.refs, half_samples), feats

    def curve(self, generator: nn.Module) -> tuple[dict, torch.Tensor]:
        x = self.samples(generator, self.cfg.eval_n)
        return self._score(x, 0)[0].values, x

    def full(self, generator: nn.Module):
        """(Evaluation on final_eval_n samples with half-samples, curve values on the first eval_n, samples)."""
        from .scoring import HALF_SAMPLES, evaluate_features

        x = self.samples(generator, self.cfg.final_eval_n)
        evaluation, feats = self._score(x, 0 if self.toy else HALF_SAMPLES)
        n = self.cfg.eval_n
        if self.toy:
            curve = self._score(x[:n], 0)[0].values if n != len(x) else evaluation.values
        else:
            curve = evaluate_features({s: (f[:n], p[:n]) for s, (f, p) in feats.items()}, self.refs, 0).values
        return evaluation, curve, x


def save_samples_figure(x: torch.Tensor, path: Path, title: str, teacher=None) -> None:
    """Images as a grid; the toy's 2-D points as a scatter over the teacher's modes."""
    from .plots import save_grid, save_points

    if x.dim() == 4:
        save_grid(x[:64], path, title=title)
    else:
        save_points(x[:2000], path, title, modes=teacher.means if teacher is not None else None)


# ----------------------------------------------------------------------------------------------
# Logs


def _truncate_csv(path: Path, last_round: int) -> None:
    """Drop rows written after the checkpoint we resume from (they will be recomputed)."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], [r for r in rows[1:] if r and int(r[0]) <= last_round]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header] + body)


def _append_csv(path: Path, row: dict, columns: list[str]) -> None:
    new = not path.is_file()
    if not new:  # a run resumed under newer code keeps its file's columns (a column added since is left out)
        with path.open(newline="") as f:
            columns = next(csv.reader(f), None) or columns
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def _finite(*values) -> bool:
    return all(math.isfinite(v) for v in values)


# ----------------------------------------------------------------------------------------------
# The loop


def finished_summary(run_dir: str | Path) -> dict | None:
    """The summary of a run that ended (completed, or diverged: training it again repeats it), else None."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") in ("completed", "diverged") else None


def train(cfg: DIConfig, out_dir: str | Path, asset_dir=None, on_eval=None, command: str | None = None,
          pruned_by: tuple[type[BaseException], ...] = ()) -> dict:
    """Run (or resume) one DI run into ``out_dir``; returns the summary also written to summary.json.

    ``on_eval(round, metrics)`` is called after every evaluation (Optuna reports and pruning); an exception
    it raises ends the run after the summary is written, then propagates. The summary's status is 'pruned' for
    the exception types in ``pruned_by`` (a study passes Optuna's TrialPruned), 'failed' for any other.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    if config_path.is_file():  # resuming, or recording a run trained elsewhere: its config.json stays as written
        if not DIConfig.load(config_path).same_run(cfg):
            raise ValueError(f"{out} holds a run with a different config; pick another --out (or delete it)")
    else:
        cfg.save(config_path)
    done = finished_summary(out)
    if done is not None:  # e.g. trained elsewhere (study --run-cells on a lent GPU), recorded here
        return done
    commit = git_commit()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    device = resolve_device(cfg)
    nets = build_nets(cfg, asset_dir)
    for net in (nets.generator, nets.aux, nets.teacher):
        net.to(device)
    g_ema = copy.deepcopy(nets.generator).eval().requires_grad_(False)
    opt_aux, opt_gen = make_optimisers(cfg, nets)
    evaluate = Evaluator(cfg, nets, asset_dir)
    ckpt = Checkpoint(out / "checkpoint.pt", {"G": nets.generator, "G_ema": g_ema, "aux": nets.aux,
                                              "opt_aux": opt_aux, "opt_gen": opt_gen})
    log = (out / "log.txt").open("a")
    state = {"start": None, "final": None}

    def say(msg: str) -> None:
        log.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        log.flush()

    def run_eval(round_idx: int, full: bool = False) -> dict:
        """Curve evaluation (eval_n samples); ``full``: also the start/final evaluation on final_eval_n."""
        scored = g_ema if cfg.eval_generator == "ema" else nets.generator  # both put in eval mode to sample
        if full:
            evaluation, metrics, x = evaluate.full(scored)
            state["start" if round_idx == 0 else "final"] = evaluation.to_dict()
        else:
            metrics, x = evaluate.curve(scored)
        signal = gradient_signal(cfg, nets, cfg.grad_signal_batches) if cfg.grad_signal_batches > 1 and cfg.gen_steps else {}
        _append_csv(out / "evals.csv", {"round": round_idx, "kimg": round_idx * cfg.batch_size * cfg.gen_steps / 1000,
                                        "n": cfg.eval_n, **metrics, **signal}, ["round", "kimg", "n", *metrics.keys(), *signal])
        save_samples_figure(x[:64] if x.dim() == 4 else x[: cfg.eval_n], out / "grids" / f"round_{round_idx:06d}.png",
                            f"{cfg.preset} round {round_idx}", nets.teacher if cfg.teacher == "toy-gmm" else None)
        say(f"eval round {round_idx} (n={cfg.eval_n}): " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def on_start(start_round: int) -> None:
        _truncate_csv(out / "rounds.csv", start_round)
        # The final evaluation happens after the last checkpoint: redo it when resuming a finished run.
        _truncate_csv(out / "evals.csv", start_round - 1 if start_round == cfg.rounds else start_round)
        state.update(ckpt.extra or {})
        if start_round == 0:
            run_eval(0, full=True)
            say(f"start {cfg.preset}: {json.dumps(cfg.to_dict(), default=str)}")
        else:
            say(f"resumed at round {start_round}")

    def one_round(r: int) -> dict:
        t0 = time.time()
        for group in opt_aux.param_groups:  # a function of the round: nothing to checkpoint
            group["lr"] = cfg.lr_aux * lr_decay_factor(cfg.aux_lr_decay, r, cfg.rounds)
        if r == 0:  # aux-only warm-up before the first generator step
            for _ in range(cfg.aux_warmup_steps):
                aux_step(cfg, nets, opt_aux, nets.sample_latent(cfg.batch_size, device))
        aux_stats = [aux_step(cfg, nets, opt_aux, nets.sample_latent(cfg.batch_size, device)) for _ in range(cfg.aux_steps)]
        gen_stats = [generator_step(cfg, nets, opt_gen, nets.sample_latent(cfg.batch_size, device)) for _ in range(cfg.gen_steps)]
        batch_imgs = cfg.batch_size * max(cfg.gen_steps, 1)
        nimg = (r + 1) * batch_imgs
        # beta from the images seen *before* this round, as the release does (so the first update copies G)
        beta = cfg.ema_mu if cfg.ema_mu > 0 else ema_beta(batch_imgs, r * batch_imgs, cfg.ema_halflife_kimg, cfg.ema_rampup)
        update_ema(g_ema, nets.generator, beta, copy_buffers=cfg.ema_copy_buffers)

        row = {"round": r + 1, "kimg": nimg / 1000, "ema_beta": beta, "lr_aux": opt_aux.param_groups[0]["lr"]}
        for key in ("aux_loss", "teacher_loss", "aux_grad_norm"):
            row[key] = sum(s[key] for s in aux_stats) / len(aux_stats)
        if gen_stats:
            row["surrogate"] = sum(s["surrogate"] for s in gen_stats) / len(gen_stats)
            row["gen_grad_norm"] = sum(s["gen_grad_norm"] for s in gen_stats) / len(gen_stats)
            gap = torch.cat([s["score_gap"] for s in gen_stats])
            sig = torch.cat([s["sigma"] for s in gen_stats])
            row["score_gap"] = gap.mean().item()
            row.update(bin_score_gap(gap, sig))
        row["wall_s"] = time.time() - t0
        _append_csv(out / "rounds.csv", row, ROUND_COLUMNS)

        checks = [row["aux_loss"], row.get("surrogate", 0.0), row.get("gen_grad_norm", 0.0)]
        if cfg.stop_on_divergence and (not _finite(*checks)
                                       or not all(torch.isfinite(p).all() for p in nets.generator.parameters())):
            bad = [k for k in ("aux_loss", "surrogate", "gen_grad_norm") if k in row and not math.isfinite(row[k])]
            raise Diverged(f"non-finite {', '.join(bad) or 'generator weights'} at round {r + 1}")

        if cfg.eval_every and (r + 1) % cfg.eval_every == 0 and (r + 1) < cfg.rounds:
            metrics = run_eval(r + 1)
            if on_eval is not None:
                on_eval(r + 1, metrics)
        return {"aux": row["aux_loss"], "gap": row.get("score_gap", float("nan"))}

    status, reason, t_start = "completed", "", time.time()
    wall = 0.0
    try:
        wall = run_resumable(cfg.rounds, one_round, ckpt, cfg.ckpt_every_s, f"DI {cfg.preset}", on_start=on_start,
                             extra_fn=lambda: {"start": state["start"]})
        final = run_eval(cfg.rounds, full=True)
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
        _write_summary(out, cfg, status, reason, state, wall or time.time() - t_start, commit, command, device)
        log.close()
        raise
    summary = _write_summary(out, cfg, status, reason, state, wall or time.time() - t_start, commit, command, device)
    log.close()
    return summary


def run_verdict(cfg: DIConfig, start: dict | None, final: dict | None) -> dict:
    """The run's own paired change final - start (half-sample intervals) and verdict: one seed, evaluation noise
    only. The toy has no feature spaces or half-samples: its change is reported without an interval."""
    from .scoring import Evaluation, is_metric_key
    from .verdicts import paired_changes, verdict

    a, b = Evaluation.from_dict(final), Evaluation.from_dict(start)
    if a is None or b is None:
        return {}
    if cfg.teacher == "toy-gmm":
        return {"change": {k: [a.values[k] - b.values[k], None, None] for k in a.values if k in b.values}}
    keys = [k for k in a.values if is_metric_key(k)]
    changes = paired_changes([a], [b], keys)
    from .feature_spaces import FEATURE_SPACES

    return {"change": {k: [c.mean, c.lo, c.hi] for k, c in changes.items()},
            "verdict": verdict(changes, list(FEATURE_SPACES)) + " [1 seed: evaluation noise only]"}


def _write_summary(out: Path, cfg: DIConfig, status: str, reason: str, state: dict, wall: float, commit: str,
                   command: str | None, device: torch.device) -> dict:
    rounds_done = 0
    if (out / "rounds.csv").is_file():
        with (out / "rounds.csv").open() as f:
            rounds_done = max(0, sum(1 for _ in f) - 1)
    summary = {"status": status, "reason": reason, "preset": cfg.preset, "seed": cfg.seed, "rounds": cfg.rounds,
               "rounds_done": rounds_done, "start": state.get("start"), "final": state.get("final"),
               "wall_s": round(wall, 2)}
    summary.update(run_verdict(cfg, state.get("start"), state.get("final")))
    summary["manifest"] = make_manifest(command=command or "harness.loop.train", config=cfg.to_dict(), seed=cfg.seed,
                                        wall_s=wall, device=device)
    summary["manifest"]["git_commit"] = commit
    write_json(out / "summary.json", summary)
    grids = sorted((out / "grids").glob("round_*.png"))
    if len(grids) > 1 and cfg.teacher != "toy-gmm":  # the samples over training, left to right (same latents)
        from .plots import grid_strip

        grid_strip(grids, out / "strip.png", f"{cfg.preset} seed {cfg.seed}: EMA generator samples over training ({status})")
    return summary
