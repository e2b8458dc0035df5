"""One frozen, validated configuration per Diff-Instruct run; presets are named configs, ablations are
named deltas (``--set key=value``), never new code paths.

Every field that the reference loop (docs/reference-loop.md) fixes has the
reference value as its default; the docstring of each toggle says what it changes and why anyone would.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# Every choice a field offers is the set of keys of one registry, kept beside the code that implements it (adding
# a choice is one entry there); validation reads them (see ``choice_registries``).


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line naming the field."""


@dataclass(frozen=True)
class NoiseDist:
    """Distribution of the noise level sigma for one of the two losses.

    kind: ``lognormal`` (ln sigma ~ N(p_mean, p_std), the reference for both losses), ``uniform_log``
    (ln sigma uniform in [ln sigma_min, ln sigma_max]), ``uniform_vp_t`` (t uniform on [0, 1] of the
    continuous linear-beta VP SDE, beta 0.1 -> 20, mapped to sigma), ``ddpm_discrete`` (t uniform over the
    ``ddpm_steps`` discrete steps of DDPM's linear beta schedule, 1e-4 -> 0.02, as a DDPM trains: with T = 2000,
    seed 000's, half of the draws have sigma > 12.7, a third sigma > 80 (EDM's largest) and a quarter sigma > 300).
    Any kind can be truncated to [sigma_min, sigma_max] (the "t-range"; the uniform kinds need a finite one):
    the noise-range hypothesis (docs/hypotheses.md): unweighted score gaps explode at tiny sigma and eps-networks
    amplify errors at large sigma.
    The default (0, inf) is untruncated, as in the release.
    """

    kind: str = "lognormal"
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.0
    sigma_max: float = math.inf
    ddpm_steps: int = 2000
    """T of the ``ddpm_discrete`` kind (ignored by the others)."""
    # Defaults: no truncation, i.e. exactly the release's exp(randn * P_std + P_mean).

    @property
    def truncated(self) -> bool:
        return self.sigma_min > 0 or math.isfinite(self.sigma_max)

    def validate(self, name: str) -> None:
        from harness.method.noise_levels import SIGMA_KINDS  # imported here, as in DIConfig.validate

        if self.kind not in SIGMA_KINDS:
            raise ConfigError(f"{name}.kind must be one of {', '.join(SIGMA_KINDS)}, got {self.kind!r}")
        if not (0 <= self.sigma_min < self.sigma_max):
            raise ConfigError(f"{name}: need 0 <= sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.kind == "ddpm_discrete" and self.ddpm_steps < 2:
            raise ConfigError(f"{name}.ddpm_steps must be >= 2, got {self.ddpm_steps}")
        if SIGMA_KINDS[self.kind].needs_finite_range and not (self.sigma_min > 0 and math.isfinite(self.sigma_max)):
            raise ConfigError(f"{name}: kind {self.kind!r} needs a finite range 0 < sigma_min < sigma_max < inf")
        if self.p_std <= 0:
            raise ConfigError(f"{name}.p_std must be > 0, got {self.p_std}")


@dataclass(frozen=True)
class EvalConfig:
    """How a run's generator is evaluated: at the start, every ``every`` rounds (the curve) and at the end."""

    generator: str = "ema"
    """What the evaluations score: ``ema`` (reference: the EMA of G, in eval mode) or ``raw`` (G itself, in eval
    mode). With ema_copy_buffers=False the DCGAN's EMA keeps its pretrained BatchNorm running statistics while
    raw G's follow its train-mode steps (the GAN presets copy them into the EMA)."""
    grad_signal_batches: int = 0
    """At every evaluation, measure the generator gradient on this many independent batches (0: off) and log
    its noise floor (harness.method.gradient_signal); the run trains exactly as without it."""
    every: int = 50
    """Rounds between evaluations of the EMA generator (0: only at start and end)."""
    n: int = 2000
    """Samples per curve evaluation (every ``every`` rounds; curves and pruning only, never a verdict)."""
    final_n: int = 5000
    """Samples of the start and final evaluations that tables and verdicts compare (every feature space, with
    half-sample intervals). 5,000 like every baseline row, so all rows of a table share n."""


@dataclass(frozen=True)
class ToyConfig:
    """The exact-score toy's target: a 2-D Gaussian mixture (harness.testbed.toy)."""

    mode_weights: str = "equal"
    """The toy's target: ``equal`` mode weights or a ``ramp`` (pi_k proportional to k): does DI keep the weights
    of unequal modes, or does its reverse-KL objective starve the small ones?"""
    mode_stds: str = "equal"
    """The toy's mode widths: ``equal``, or a ``ramp`` from half to 1.5x the width at equal mass: does DI move mass
    from broad modes to narrow ones (as FashionMNIST runs move it to the tightest classes)?"""


@dataclass(frozen=True)
class DIConfig:
    """A Diff-Instruct run. Defaults are the official loop's (``reference``)."""

    preset: str = "reference-onestep"
    teacher: str = "edm"
    """Score teacher D_p: ``edm``, ``ddpm-huber`` (seed 000's), ``ddpm-mse``, or ``toy-gmm`` (analytic)."""
    generator: str = "onestep"
    """``onestep`` = copy of the teacher called as G(init_sigma * z, init_sigma) (the paper's main setting);
    ``gan-weak`` / ``gan-strong`` / ``gan-wide`` = shipped DCGAN, x0 = G(z), z ~ N(0, I_128) (our GAN adaptation);
    ``toy-mlp`` for the exact-score toy."""
    rounds: int = 200
    batch_size: int = 128
    seed: int = 0

    objective: str = "di"
    """What the generator step minimises (harness.method.objectives: one module per objective). ``di``: Diff-Instruct's
    surrogate w(sigma) stopgrad(D_q - D_p) . x0 (the reference), with ``weighting`` and ``eps_port``."""

    # --- freeze / unfreeze order and gradient flow -----------------------------------------------
    freeze_order: str = "reference"
    """``reference``: teacher and aux both in train mode for the generator step with the RNG state saved and
    restored so their dropout masks are identical, G in eval mode while it makes the aux batch.
    ``clean``: teacher always eval and frozen, aux eval and frozen during the generator step, generator frozen
    during the aux step (no dropout in any score evaluation). ``independent_dropout``: reference without the
    RNG restore (different masks add noise to D_q - D_p). ``teacher_eval``: teacher eval, aux train."""
    detach_scores: bool = True
    """True (reference): both score evaluations under no_grad, only x0 carries gradient. False: gradient
    also flows through both score networks into x_t (a classic bug), which changes the generator's gradient and
    leaves generator-loss gradients in the aux net's .grad; those reach the aux update only together with
    aux_zero_grad=False (the aux step zeroes them otherwise)."""
    sid_frozen_eval: bool = False
    """With detach_scores=False: run both score nets frozen and in eval mode, as SiD does on purpose."""
    aux_zero_grad: bool = True
    """False: the aux optimiser's gradients are not zeroed before its step, so stale gradients (from the
    previous aux step, and from the generator step when scores are not detached) leak in (docs/hypotheses.md#gradient-leakage)."""
    gen_zero_grad: bool = True
    """False: the generator's gradients are not zeroed before its step, so every earlier generator gradient (and,
    with aux_batch_detach=False, the aux loss's gradient) is added to this round's (a gradient-leakage port bug)."""
    aux_batch_detach: bool = True
    """True (reference): the aux batch x0 = G(z) is made under no_grad. False: it carries gradient, so the aux
    loss's backward also fills the generator's .grad; that reaches a generator update only with gen_zero_grad=False."""
    eps_port: str = "exact"
    """How the generator gradient's gap is computed from an eps-predicting teacher. ``exact`` (reference): the
    denoiser gap D_q - D_p = -sigma (eps_q - eps_p). Three porting mistakes, each a factor on that gap:
    ``sign_flipped``: +sigma (eps_q - eps_p), factor -1 (the generator climbs the divergence);
    ``no_sigma``: -(eps_q - eps_p), factor 1/sigma (the eps difference without its sigma);
    ``eps_as_score``: the eps difference used as the score difference in the score form sigma^2 (s_q - s_p),
    i.e. sigma^2 (eps_q - eps_p), factor -sigma (sign flipped and an extra sigma)."""

    # --- update ratio ----------------------------------------------------------------------------
    aux_steps: int = 1
    """Aux (fake score) updates per round, done first. DMD2 used 5-10 (docs/hypotheses.md#step-sizes)."""
    gen_steps: int = 1
    """Generator updates per round."""

    # --- losses ------------------------------------------------------------------------------------
    weighting: str = "reference"
    """w on the denoiser gap D_q - D_p of the generator loss. ``reference``: 1 (= sigma^2 on the score gap);
    ``score_uniform``: 1/sigma^2 (unit weight on the score gap); ``snr``: sigma_data^2/(sigma^2+sigma_data^2);
    ``edm_lambda``: EDM's lambda(sigma); ``dmd_normalized``: 1 / mean|x0 - D_p| per sample (DMD/DMD2); ``eps_uniform``:
    1/sigma (unit weight on the eps gap; the same gradient as eps_port=no_sigma)."""
    aux_sigma: NoiseDist = field(default_factory=NoiseDist)
    """sigma distribution of the aux denoising loss."""
    gen_sigma: NoiseDist = field(default_factory=NoiseDist)
    """sigma distribution of the generator loss."""
    aux_loss: str = "edm"
    """``edm``: lambda(sigma)-weighted x0 regression (reference); ``teacher``: the teacher's own training loss
    on eps (Huber for ddpm-huber): docs/hypotheses.md#teacher-loss asks whether matching loss types matters."""
    aux_init: str = "teacher"
    """``teacher``: aux starts as a copy of the teacher, so the first generator gradient is exactly 0
    (reference); ``scratch``: fresh network of the same architecture (docs/hypotheses.md#aux-init)."""
    aux_warmup_steps: int = 0
    """Aux-only steps before the first generator step."""
    init_sigma: float = 1.0
    """Noise level at which the one-step generator (a teacher copy) is called."""
    generator_mode: str = "reference"
    """train/eval mode of G (BatchNorm of the DCGAN; dropout of a one-step UNet) during DI. ``reference``: eval
    while it makes the aux batch, train (batch statistics) for the generator step; ``train``: train in both;
    ``eval``: eval in both (running statistics, which then stay frozen)."""
    generator_range: str = "pm1"
    """``pm1`` (reference): G's tanh output in [-1, 1] is x0, the range the teachers were trained on. ``01``: DI
    sees (G(z) + 1) / 2 in [0, 1] (a port that mixes a [0, 1] data pipeline with a [-1, 1] teacher); G is still
    evaluated on its own output."""

    # --- optimisers and EMA ---------------------------------------------------------------------
    lr_aux: float = 1e-5
    lr_gen: float = 1e-5
    aux_lr_decay: str = "none"
    """Decay of the aux learning rate over the run (seed 000 tried it): ``none`` (reference), ``linear`` (to 0 at
    the last round) or ``cosine``. The generator's stays constant."""
    betas_aux: tuple[float, float] = (0.0, 0.999)
    betas_gen: tuple[float, float] = (0.0, 0.999)
    grad_clip: float = 0.0
    """Global grad-norm clip for both optimisers (0 = off, reference; DMD2 clips at 10)."""
    aux_loss_scale: float = 1.0
    gen_loss_scale: float = 1.0
    nan_cleanup: bool = True
    """Replace NaN/+inf/-inf in grads by 0/1e5/-1e5 before each step (reference)."""
    ema_mu: float = 0.0
    """Fixed EMA decay of G per round when > 0; otherwise from ema_halflife_kimg."""
    ema_halflife_kimg: float = 500.0
    ema_rampup: float = 0.05
    ema_copy_buffers: bool = False
    """The release averages parameters only. True also copies buffers (BatchNorm running statistics) from G into
    its EMA: part of the GAN adaptation, whose DCGAN has BatchNorm that the release's generators do not."""
    stop_on_divergence: bool = True
    """Stop the run (status 'diverged') on a non-finite loss, gradient norm or weight; the release keeps stepping
    with NaN-cleaned gradients (set False to do the same)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``. On CUDA, TF32 is disabled as in the release."""

    # --- performance only (no change to the math beyond float rounding) ----------------------------
    inference_frozen: bool = False
    """Evaluate the detached scores under torch.inference_mode() instead of no_grad (slightly cheaper)."""
    channels_last: bool = False
    """Networks and image batches in channels_last memory format (faster convolutions on many backends)."""
    autocast_bf16: bool = False
    """bfloat16 autocast for the two score evaluations only (the GPU benchmark's toggle); ``precision=bf16`` covers
    every network pass."""
    precision: str = "fp32"
    """Numeric precision of the training steps' network passes (harness.method.precision): ``fp32`` (reference) or
    ``bf16`` (autocast; float32 weights, optimiser state and DI arithmetic; evaluations stay float32)."""
    compile: bool = False
    """torch.compile the denoiser forwards (GPU; compilation costs about a minute up front)."""

    # --- groups: the evaluation's settings, and the toy's target (dotted overrides: --set eval.n=500) ------------
    eval: EvalConfig = field(default_factory=lambda: EvalConfig())
    """How the run's generator is evaluated (harness.evaluation.run_evaluator)."""
    toy: ToyConfig = field(default_factory=lambda: ToyConfig())
    """The exact-score toy's target (teacher toy-gmm only)."""

    # --- bookkeeping -----------------------------------------------------------------------------
    ckpt_every_s: float = 60.0
    threads: int = 0
    """torch CPU threads (0 = torch default)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        registries = choice_registries()
        for name, options in registries.items():
            if get_field(self, name) not in options:
                raise ConfigError(f"{name} must be one of {', '.join(options)}, got {get_field(self, name)!r}")
        from harness.method.aux_losses import AUX_LOSSES
        from harness.method.objectives import OBJECTIVES

        analytic = registries["teacher"][self.teacher].analytic  # the exact-score toy
        if analytic != (self.generator == "toy-mlp"):
            raise ConfigError("teacher toy-gmm and generator toy-mlp go together")
        if analytic and self.aux_init == "teacher":
            raise ConfigError("the toy's teacher is analytic (no network to copy): use aux_init=scratch")
        if analytic and AUX_LOSSES[self.aux_loss].needs_trained_teacher:
            raise ConfigError(f"aux_loss={self.aux_loss} needs a trained teacher; the toy's teacher is analytic")
        objective = OBJECTIVES[self.objective]
        if objective.extra_networks or objective.extra_data:  # declared, but the loop cannot build them yet
            raise ConfigError(f"objective {self.objective} needs {', '.join(objective.extra_networks + objective.extra_data)}, "
                              f"which the loop does not build yet")
        if OBJECTIVES[self.objective].needs_fake_score and self.aux_steps < 1:
            raise ConfigError(f"aux_steps must be >= 1 (objective {self.objective} fits a fake score), got {self.aux_steps}")
        for name in ("rounds", "batch_size", "eval.n", "eval.final_n"):
            if get_field(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {get_field(self, name)}")
        for name in ("aux_steps", "gen_steps", "aux_warmup_steps", "eval.every", "threads", "eval.grad_signal_batches"):
            if get_field(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {get_field(self, name)}")
        for name in ("lr_aux", "lr_gen", "init_sigma"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive finite number, got {v}")
        for name in ("betas_aux", "betas_gen"):
            b = getattr(self, name)
            if len(b) != 2 or not all(0 <= x < 1 for x in b):
                raise ConfigError(f"{name} must be two numbers in [0, 1), got {b}")
        if not (0 <= self.ema_mu < 1):
            raise ConfigError(f"ema_mu must be in [0, 1), got {self.ema_mu}")
        if self.inference_frozen and not self.detach_scores:
            raise ConfigError("inference_frozen needs detach_scores=True (inference tensors carry no gradient)")
        if self.sid_frozen_eval and self.detach_scores:
            raise ConfigError("sid_frozen_eval needs detach_scores=False (SiD backpropagates through frozen nets)")
        self.aux_sigma.validate("aux_sigma")
        self.gen_sigma.validate("gen_sigma")

    # --- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DIConfig":
        d = dict(d)
        for old, new in LEGACY_NAMES.items():  # a config.json written before the fields were grouped
            if old in d:
                head, _, sub = new.partition(".")
                d[head] = {**(d.get(head) or {}), sub: d.pop(old)}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        for name, group in GROUPS.items():
            if isinstance(d.get(name), dict):
                d[name] = group(**d[name])
        for name in ("betas_aux", "betas_gen"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from harness.common.manifest import write_json

        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "DIConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def same_run(self, other: "DIConfig") -> bool:
        """Whether ``other`` describes the same run: every field equal except those that only set how fast it runs
        (a run trained with 8 workers on a GPU machine is resumed or recorded by 1 worker here)."""
        return replace(self, **{f: getattr(other, f) for f in SPEED_ONLY_FIELDS}) == other


# Fields that change how fast a run goes, not what it computes (beyond float reordering).
SPEED_ONLY_FIELDS = ("threads", "ckpt_every_s")


# Nested groups of fields (a dotted override sets one of their fields: --set gen_sigma.sigma_max=10, --set eval.n=500).
GROUPS = {"aux_sigma": NoiseDist, "gen_sigma": NoiseDist, "eval": EvalConfig, "toy": ToyConfig}
# Names the fields had before they were grouped: still read from stored config.json files and accepted by --set.
LEGACY_NAMES = {"eval_generator": "eval.generator", "eval_every": "eval.every", "eval_n": "eval.n",
                "final_eval_n": "eval.final_n", "grad_signal_batches": "eval.grad_signal_batches",
                "toy_mode_weights": "toy.mode_weights", "toy_mode_stds": "toy.mode_stds"}


def get_field(cfg: DIConfig, name: str) -> Any:
    """A field by its (dotted) name: ``get_field(cfg, "eval.n")``."""
    value = cfg
    for part in name.split("."):
        value = getattr(value, part)
    return value


def flat_dict(cfg: DIConfig) -> dict:
    """The config as one level of (dotted) names for the groups eval and toy, the rest as ``to_dict``."""
    d = cfg.to_dict()
    for head in ("eval", "toy"):
        d.update({f"{head}.{k}": v for k, v in d.pop(head).items()})
    return d


def choice_registries() -> dict[str, dict]:
    """Each field that names a choice -> the registry whose keys are its allowed values. The registries import
    torch: imported here, when a config is validated, not at the top, so that reading presets and field docs (the
    CLIs' --help) stays fast."""
    from harness.method.aux_losses import AUX_LOSSES
    from harness.method.build import AUX_INITS, DEVICES
    from harness.method.eps_ports import EPS_PORTS
    from harness.evaluation.run_evaluator import EVAL_GENERATORS
    from harness.method.generators import GENERATORS
    from harness.method.modes import FREEZE_ORDERS, GENERATOR_MODES, GENERATOR_RANGES
    from harness.method.objectives import OBJECTIVES
    from harness.method.precision import PRECISIONS
    from harness.method.schedules import LR_DECAYS
    from harness.method.teachers import TEACHERS
    from harness.testbed.toy import MODE_STDS, MODE_WEIGHTS
    from harness.method.weightings import WEIGHTINGS

    return {"teacher": TEACHERS, "generator": GENERATORS, "objective": OBJECTIVES, "freeze_order": FREEZE_ORDERS,
            "weighting": WEIGHTINGS, "aux_init": AUX_INITS, "aux_loss": AUX_LOSSES, "eps_port": EPS_PORTS,
            "generator_mode": GENERATOR_MODES, "generator_range": GENERATOR_RANGES, "eval.generator": EVAL_GENERATORS,
            "aux_lr_decay": LR_DECAYS, "toy.mode_weights": MODE_WEIGHTS, "toy.mode_stds": MODE_STDS,
            "device": DEVICES, "precision": PRECISIONS}
