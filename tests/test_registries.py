"""Every entry of every registry, parametrised from the registries themselves: adding an entry (a weighting, a
sigma kind, an eps port, an objective module, an aux loss, any choice a DIConfig field offers) gets it tested here
without editing this file. Tiny tensors, the analytic toy (no assets) and a tiny UNet; each test well under 1 s."""

import copy
import math
import re
from dataclasses import replace

import pytest
import torch

from harness.method.aux_losses import AUX_LOSSES
from harness.method.build import build_nets, make_optimisers
from harness.method.config import ConfigError, DIConfig, NoiseDist, choice_registries
from harness.method.overrides import apply_overrides
from harness.method.presets import preset
from harness.method.eps_ports import EPS_PORTS
from harness.method.modes import to_teacher_range
from harness.method.networks import build
from harness.method.noise_levels import SIGMA_KINDS, sample_sigma
from harness.method.objectives import OBJECTIVES
from harness.method.precision import PRECISIONS
from harness.method.steps import ScoreNets, aux_step, generator_step, round_statistics
from harness.method.teachers import EDMTeacher
from harness.method.weightings import WEIGHTINGS

torch.set_num_threads(1)

REGISTRIES = choice_registries()
CHOICES = [(name, key) for name, registry in REGISTRIES.items() for key in registry]
SHAPES = [(6, 2), (6, 1, 4, 4)]  # the toy's 2-D points and small images
TINY_UNET = {"base_channels": 8, "channel_mult": [1, 2], "blocks_per_level": 1, "dropout": 0.0, "attention": False}


def log_uniform(n, lo, hi, generator):
    return torch.exp(math.log(lo) + torch.rand(n, generator=generator, dtype=torch.float64) * math.log(hi / lo))


def field_value(cfg, name):
    """A config field by its (possibly dotted: ``eval.generator``) name."""
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


def params_of(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, module.parameters()))


def toy_config(**changes):
    return replace(apply_overrides(preset("toy"), {"device": "cpu"}), **changes)


def toy_nets(cfg, seed=0):
    torch.manual_seed(seed)
    nets = build_nets(cfg)
    return nets, *make_optimisers(cfg, nets)


class StubScores:
    """What an objective sees of the score nets, with fixed sigma, noise and denoiser outputs."""

    def __init__(self, sigma, noise, d_p, d_q):
        self._sigma, self._noise, self.d_p, self.d_q = sigma, noise, d_p, d_q

    def sigma(self, dist, b):
        return self._sigma

    def noise(self, x0):
        return self._noise

    def denoise(self, x_sigma, sigma):
        return self.d_p, self.d_q


# ----------------------------------------------------------------------------------------------
# Weightings (DIConfig.weighting)


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "image"])
@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_weighting_is_a_finite_positive_per_sample_weight_with_the_hand_derived_gradient(name, shape):
    g = torch.Generator().manual_seed(0)
    b = shape[0]
    sigma = log_uniform(b, 0.01, 50.0, g)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    d_p = torch.randn(shape, generator=g, dtype=torch.float64)
    gap = torch.randn(shape, generator=g, dtype=torch.float64)

    w = WEIGHTINGS[name](sigma, x0, d_p)
    assert w.shape == (b,), f"{name}: weight must be per sample (B,), got {tuple(w.shape)}"
    assert torch.isfinite(w).all() and (w > 0).all(), f"{name}: {w}"

    # the DI surrogate sum(w * stopgrad(gap) * x0): its gradient in x0 is w * gap, nothing more (w must not
    # carry a gradient path through x0 or d_p)
    per_pixel = (1,) * (len(shape) - 1)
    (grad,) = torch.autograd.grad((w.reshape(-1, *per_pixel) * gap.detach() * x0).sum(), x0)
    expected = w.detach().reshape(-1, *per_pixel) * gap
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_di_objective_gradient_is_weight_times_denoiser_gap(name):
    """Through the registered ``di`` loss itself: d/dx0 of the per-sample surrogate is w(sigma) (D_q - D_p)."""
    g = torch.Generator().manual_seed(1)
    b, shape = 5, (5, 1, 3, 3)
    sigma = log_uniform(b, 0.01, 50.0, g)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    noise, d_p, d_q = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    cfg = DIConfig(weighting=name, eps_port="exact")
    per_sample, stats = OBJECTIVES["di"].loss(cfg, StubScores(sigma, noise, d_p, d_q), x0)
    assert per_sample.shape == (b,)
    (grad,) = torch.autograd.grad(per_sample.sum(), x0)
    w = WEIGHTINGS[name](sigma, x0.detach(), d_p).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(grad, w * (d_q - d_p), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------
# Noise levels (NoiseDist.kind)


@pytest.mark.parametrize("kind", list(SIGMA_KINDS))
def test_sigma_kind_samples_inside_its_finite_range(kind):
    lo, hi, n = 0.05, 5.0, 4000
    dist = NoiseDist(kind=kind, sigma_min=lo, sigma_max=hi)
    dist.validate("gen_sigma")
    sigma = sample_sigma(dist, n, generator=torch.Generator().manual_seed(0))
    assert sigma.shape == (n,) and sigma.dtype == torch.float32
    assert torch.isfinite(sigma).all() and (sigma > 0).all()
    assert sigma.min() >= lo and sigma.max() <= hi, (sigma.min().item(), sigma.max().item())
    # spread over the range, not a constant nor piled up at an edge (the truncation is by inverse CDF / selection)
    mid = math.sqrt(lo * hi)
    assert 0.05 < (sigma < mid).float().mean() < 0.95, f"{kind}: all draws on one side of {mid}"
    assert ((sigma == sigma.min()) | (sigma == sigma.max())).float().mean() < 0.05, f"{kind}: pile-up at an edge"
    assert sigma.unique().numel() > 10


@pytest.mark.parametrize("kind", list(SIGMA_KINDS))
def test_sigma_kind_follows_its_generator(kind):
    dist = NoiseDist(kind=kind, sigma_min=0.05, sigma_max=5.0)
    a, b, c = (sample_sigma(dist, 64, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert torch.equal(a, b), f"{kind}: same seeded generator, different draws"
    assert not torch.equal(a, c), f"{kind}: ignores its generator"


@pytest.mark.parametrize("kind", list(SIGMA_KINDS))
def test_sigma_kind_on_an_infinite_range(kind):
    dist = NoiseDist(kind=kind)  # the default (0, inf): untruncated
    if SIGMA_KINDS[kind].needs_finite_range:
        for bad in (dist, replace(dist, sigma_min=0.05), replace(dist, sigma_max=5.0)):
            with pytest.raises(ConfigError, match="gen_sigma"):
                bad.validate("gen_sigma")
        with pytest.raises(ConfigError, match="gen_sigma"):
            toy_config(gen_sigma=dist)
    else:
        dist.validate("gen_sigma")
        sigma = sample_sigma(dist, 4000, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(sigma).all() and (sigma > 0).all()


def test_unknown_sigma_kind_is_a_config_error():
    with pytest.raises(ConfigError, match=r"gen_sigma\.kind"):
        apply_overrides(preset("toy"), {"gen_sigma.kind": "no-such-choice"})


# ----------------------------------------------------------------------------------------------
# Eps ports (DIConfig.eps_port)

# The factor on the exact gap each documented port applies (DIConfig.eps_port's docstring), as a function of sigma.
# A port not listed here still gets the generic checks below.
DOCUMENTED_FACTORS = {
    "exact": lambda s: torch.ones_like(s),
    "sign_flipped": lambda s: -torch.ones_like(s),
    "no_sigma": lambda s: 1 / s,
    "eps_as_score": lambda s: -s,
}


def gaps(seed, shape=(6, 1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    d_p = torch.randn(shape, generator=g, dtype=torch.float64)
    delta = torch.randn(shape, generator=g, dtype=torch.float64)
    d_q = d_p + delta.sign() * (0.1 + delta.abs())  # |d_q - d_p| >= 0.1: a well-defined ratio everywhere
    return d_q, d_p


@pytest.mark.parametrize("port", list(EPS_PORTS))
def test_eps_port_is_a_per_sample_factor_on_the_exact_gap(port):
    sigma = torch.tensor([0.02, 0.3, 0.9, 1.7, 8.0, 40.0], dtype=torch.float64)  # none is 1
    factors = []
    for seed in (0, 1):
        d_q, d_p = gaps(seed)
        gap = EPS_PORTS[port](d_q, d_p, sigma)
        assert gap.shape == d_q.shape and torch.isfinite(gap).all()
        factor = (gap / (d_q - d_p)).flatten(1)
        torch.testing.assert_close(factor, factor[:, :1].expand_as(factor), rtol=1e-10, atol=0,
                                   msg=f"{port}: the factor differs between pixels of a sample")
        factors.append(factor[:, 0])
    torch.testing.assert_close(factors[0], factors[1], rtol=1e-10, atol=0,
                               msg=f"{port}: the factor depends on the scores, not only on sigma")
    if port == "exact":
        torch.testing.assert_close(factors[0], torch.ones_like(sigma), rtol=0, atol=0)
    else:  # a porting mistake: wrong at every sigma != 1
        assert ((factors[0] - 1).abs() > 1e-6).all(), f"{port} equals the exact gap at sigma {sigma.tolist()}"
    if port in DOCUMENTED_FACTORS:
        torch.testing.assert_close(factors[0], DOCUMENTED_FACTORS[port](sigma), rtol=1e-12, atol=0)


def test_exact_is_the_first_and_default_eps_port():
    assert next(iter(EPS_PORTS)) == "exact" == DIConfig().eps_port


# ----------------------------------------------------------------------------------------------
# Objectives (DIConfig.objective), one generator step on the toy


def finite_or_nan(v):
    return isinstance(v, float) and (math.isfinite(v) or math.isnan(v))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_generator_step_on_the_toy(name):
    objective = OBJECTIVES[name]
    assert objective.name == name
    cfg = toy_config(objective=name)
    nets, _, opt_gen = toy_nets(cfg)
    b = 64
    z = nets.sample_latent(b, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x0_shape = nets.generator(z).shape
    g = torch.Generator().manual_seed(2)
    sigma = sample_sigma(cfg.gen_sigma, b, generator=g)
    noise = torch.randn(x0_shape, generator=g)

    # the objective's per-sample loss, on a copy, with the same draws: the step must backpropagate its mean
    twin = copy.deepcopy(nets)
    twin.generator.train()
    torch.manual_seed(3)
    per_sample, _ = objective.loss(cfg, ScoreNets(cfg, twin, torch.device("cpu"), sigma, noise),
                                   to_teacher_range(twin.generator(z), cfg.generator_range))
    assert per_sample.shape == (b,) and per_sample.requires_grad

    gen_before, aux_before = params_of(nets.generator), params_of(nets.aux)
    torch.manual_seed(3)
    out = generator_step(cfg, nets, opt_gen, z, sigma=sigma, noise=noise)

    assert math.isfinite(out["surrogate"]) and math.isfinite(out["gen_grad_norm"]), out
    assert out["gen_grad_norm"] > 0
    assert out["surrogate"] == pytest.approx(per_sample.mean().item() * cfg.gen_loss_scale, rel=1e-5, abs=1e-7)
    assert changed(gen_before, nets.generator), f"{name}: the generator step left G unchanged"
    assert not changed(aux_before, nets.aux), f"{name}: the generator step moved the aux net"
    assert nets.aux.training and all(p.requires_grad for p in nets.aux.parameters()), "aux net not restored"

    per_sample_stats = {k: v for k, v in out.items() if torch.is_tensor(v)}
    for k, v in per_sample_stats.items():
        assert v.shape == (b,), f"{name}: statistic {k} is not per sample: {tuple(v.shape)}"
    for k, v in out.items():
        assert torch.is_tensor(v) or isinstance(v, float), f"{name}: statistic {k} is {type(v).__name__}"
    summary = objective.summarise(per_sample_stats)
    assert all(finite_or_nan(v) for v in summary.values()), summary
    row = round_statistics([out, out], objective.summarise)
    assert set(summary) <= set(row) and all(finite_or_nan(v) for v in row.values()), row


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_declares_whether_it_needs_aux_steps(name):
    cfg = toy_config(objective=name)
    if OBJECTIVES[name].needs_fake_score:
        with pytest.raises(ConfigError, match="aux_steps"):
            replace(cfg, aux_steps=0)
        with pytest.raises(ConfigError, match="aux_steps"):
            replace(DIConfig(objective=name), aux_steps=0)
    else:
        assert replace(cfg, aux_steps=0).aux_steps == 0


def test_di_is_the_first_and_default_objective():
    assert next(iter(OBJECTIVES)) == "di" == DIConfig().objective


# ----------------------------------------------------------------------------------------------
# Aux losses (DIConfig.aux_loss)


@pytest.mark.parametrize("name", list(AUX_LOSSES))
def test_aux_loss_step_on_the_toy(name):
    if AUX_LOSSES[name].needs_trained_teacher:
        with pytest.raises(ConfigError, match="aux_loss"):
            toy_config(aux_loss=name)
        assert DIConfig(aux_loss=name).aux_loss == name  # a trained teacher takes it
        return
    cfg = toy_config(aux_loss=name)
    nets, opt_aux, _ = toy_nets(cfg)
    b = 64
    z = nets.sample_latent(b, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nets.generator.eval()
        x0 = to_teacher_range(nets.generator(z), cfg.generator_range)
    g = torch.Generator().manual_seed(2)
    sigma = sample_sigma(cfg.aux_sigma, b, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():  # the loss with the step's draws, on a copy of the aux net before the step
        expected = AUX_LOSSES[name].loss(copy.deepcopy(nets.aux).train(), x0, sigma, noise)
    assert expected.shape == (b,)

    gen_before, aux_before = params_of(nets.generator), params_of(nets.aux)
    out = aux_step(cfg, nets, opt_aux, z, sigma=sigma, noise=noise)
    assert math.isfinite(out["aux_loss"]) and math.isfinite(out["aux_grad_norm"]) and out["aux_grad_norm"] > 0
    assert out["aux_loss"] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert changed(aux_before, nets.aux), f"{name}: the aux step left the aux net unchanged"
    assert not changed(gen_before, nets.generator), f"{name}: the aux step moved the generator"


@pytest.mark.parametrize("name", list(AUX_LOSSES))
def test_aux_loss_on_a_tiny_unet_is_per_sample_and_reaches_the_aux_net(name):
    """Every aux loss, including those that need a trained teacher's own loss, on a tiny EDM UNet."""
    torch.manual_seed(0)
    aux = EDMTeacher(build("unet", **TINY_UNET)).train()
    g = torch.Generator().manual_seed(1)
    b = 2
    x0 = torch.randn(b, 1, 28, 28, generator=g).clamp(-1, 1)
    sigma = log_uniform(b, 0.05, 5.0, g).float()
    noise = torch.randn(x0.shape, generator=g)
    per_sample = AUX_LOSSES[name].loss(aux, x0, sigma, noise)
    assert per_sample.shape == (b,) and torch.isfinite(per_sample).all()
    per_sample.sum().backward()
    grads = [p.grad for p in aux.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert sum(gr.norm() for gr in grads) > 0, f"{name}: no gradient reaches the aux net"


# ----------------------------------------------------------------------------------------------
# Every choice field of DIConfig


BASES = {"default": DIConfig, "toy": lambda: preset("toy")}


@pytest.mark.parametrize("field,key", CHOICES, ids=[f"{f}={k}" for f, k in CHOICES])
def test_every_registered_choice_is_accepted_by_some_base_config(field, key):
    accepted = []
    for base_name, base in BASES.items():
        try:
            cfg = apply_overrides(base(), {field: key})
        except ConfigError as err:  # a documented cross-field rule, never "not one of the choices"
            assert f"{field} must be one of" not in str(err), str(err)
            continue
        assert field_value(cfg, field) == key
        assert DIConfig.from_dict(cfg.to_dict()) == cfg
        accepted.append(base_name)
    assert accepted, f"{field}={key} is rejected by every base config ({', '.join(BASES)})"


@pytest.mark.parametrize("field", list(REGISTRIES))
def test_choice_registry_is_nonempty_and_rejects_unknown_values(field):
    registry = REGISTRIES[field]
    assert len(registry) > 0
    assert all(isinstance(k, str) and k for k in registry)
    for base in BASES.values():
        with pytest.raises(ConfigError, match=re.escape(field)):
            apply_overrides(base(), {field: "no-such-choice"})


@pytest.mark.parametrize("field", list(REGISTRIES))
def test_choice_default_is_the_registry_first_entry(field):
    """Registries list the reference first, and the reference is every field's default."""
    assert field_value(DIConfig(), field) == next(iter(REGISTRIES[field]))


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_every_precision_trains_the_toy_with_float32_weights_and_optimiser_state(name):
    """A precision changes how the passes compute, never what is stored: weights, gradients and Adam's moments stay
    float32, the step moves G, and the reference precision is the default."""
    torch.manual_seed(0)
    cfg = replace(apply_overrides(preset("toy"), ["batch_size=32"]), precision=name)
    nets = build_nets(cfg)
    opt_aux, opt_gen = make_optimisers(cfg, nets)
    before = [p.detach().clone() for p in nets.generator.parameters()]
    aux_step(cfg, nets, opt_aux, nets.sample_latent(32))
    out = generator_step(cfg, nets, opt_gen, nets.sample_latent(32))
    assert math.isfinite(out["surrogate"]) and out["gen_grad_norm"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, nets.generator.parameters()))
    for opt in (opt_aux, opt_gen):
        for group in opt.param_groups:
            for p in group["params"]:
                assert p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
                assert all(v.dtype == torch.float32 for k, v in opt.state[p].items() if k != "step")
    assert next(iter(PRECISIONS)) == "fp32" == DIConfig().precision
