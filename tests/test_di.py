"""The DI step functions: the reference gradient against a hand derivation, and each toggle changing
what it claims and nothing else. Tiny float64 networks, no assets."""

import copy
import math

import pytest
import torch
from torch import nn

from harness.method import noise_levels, schedules, steps, weightings
from harness.method.objectives.di import bin_score_gap
from harness.method.config import DIConfig, NoiseDist
from harness.method.overrides import apply_overrides
from harness.method.networks import build
from harness.method.teachers import EDMTeacher

TINY_UNET = {"base_channels": 8, "channel_mult": [1, 2], "blocks_per_level": 1, "dropout": 0.3, "attention": False}
B, LATENT = 4, 3


class LinearGenerator(nn.Module):
    """x0 = 0.1 reshape(W z + b): d x0 / dW = 0.1 outer(., z), so the gradient has a closed form."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(LATENT, 28 * 28)

    def forward(self, z):
        return 0.1 * self.lin(z).reshape(-1, 1, 28, 28)


def make_nets(seed=0, perturb_aux=True):
    torch.manual_seed(seed)
    teacher = EDMTeacher(build("unet", **TINY_UNET)).double()
    with torch.no_grad():  # a non-trivial teacher (the output conv is zero-initialised)
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    aux = copy.deepcopy(teacher)
    if perturb_aux:  # as if the aux net had been trained on generator samples for a while
        with torch.no_grad():
            for p in aux.parameters():
                p.add_(0.02 * torch.randn_like(p))
    teacher.eval().requires_grad_(False)
    gen = LinearGenerator().double()
    return steps.DINets(generator=gen, aux=aux.train(), teacher=teacher, latent_shape=(LATENT,))


def fixed_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, LATENT, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.4, 1.3, 6.0], dtype=torch.float64)
    noise = torch.randn(B, 1, 28, 28, generator=g, dtype=torch.float64)
    return z, sigma, noise


def gen_step(cfg, nets, z, sigma, noise, rng_seed=123):
    opt = torch.optim.Adam(nets.generator.parameters(), lr=0.0, betas=cfg.betas_gen)  # lr 0: inspect grads only
    torch.manual_seed(rng_seed)
    return steps.generator_step(cfg, nets, opt, z, sigma=sigma, noise=noise)


def hand_gradient(nets, z, sigma, noise, weights, rng_seed=123, shared_masks=True):
    """(1/B) sum_i w_i (D_q - D_p)(x_i) . d x0_i / d theta for x0 = 0.1 (W z + b)."""
    with torch.no_grad():
        x0 = nets.generator(z)
        x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
        torch.manual_seed(rng_seed)
        nets.teacher.train()
        d_p = nets.teacher.denoise(x, sigma)
        nets.teacher.eval()
        if shared_masks:
            torch.manual_seed(rng_seed)
        nets.aux.train()
        d_q = nets.aux.denoise(x, sigma)
    gap = (weights.reshape(-1, 1, 1, 1) * (d_q - d_p)).flatten(1)  # (B, 784)
    grad_w = 0.1 * gap.T @ z / B
    grad_b = 0.1 * gap.sum(0) / B
    return grad_w, grad_b


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("weighting", ["reference", "score_uniform", "edm_lambda", "snr"])
def test_reference_generator_gradient_matches_hand_derivation(weighting):
    nets = make_nets()
    z, sigma, noise = fixed_inputs()
    cfg = DIConfig(weighting=weighting)
    gen_step(cfg, nets, z, sigma, noise)
    w = weightings.generator_weight(weighting, sigma, None, None) if weighting != "dmd_normalized" else None
    grad_w, grad_b = hand_gradient(nets, z, sigma, noise, w)
    assert grad_w.norm() > 0
    assert rel_err(nets.generator.lin.weight.grad, grad_w) < 1e-5
    assert rel_err(nets.generator.lin.bias.grad, grad_b) < 1e-5


def test_dmd_normalised_weight_is_inverse_mean_abs_gap():
    x0 = torch.zeros(2, 1, 2, 2)
    d_p = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    w = weightings.generator_weight("dmd_normalized", torch.ones(2), x0, d_p)
    assert torch.allclose(w, torch.tensor([1.0, 2.0]))


def test_weightings_closed_forms():
    s = torch.tensor([0.5, 2.0])
    assert torch.equal(weightings.generator_weight("reference", s, None, None), torch.ones(2))
    assert torch.allclose(weightings.generator_weight("score_uniform", s, None, None), torch.tensor([4.0, 0.25]))
    assert torch.allclose(weightings.generator_weight("snr", s, None, None), torch.tensor([0.5, 0.25 / 4.25]))
    assert torch.allclose(weightings.generator_weight("edm_lambda", s, None, None), (s**2 + 0.25) / (0.25 * s**2))


def test_shared_dropout_masks_make_identical_nets_agree():
    """aux = exact teacher copy + reference (RNG restored): D_q == D_p under dropout, so the gradient is exactly 0;
    independent_dropout draws different masks and gives a non-zero gradient from pure mask noise."""
    z, sigma, noise = fixed_inputs()
    nets = make_nets(perturb_aux=False)
    gen_step(DIConfig(), nets, z, sigma, noise)
    assert nets.generator.lin.weight.grad.abs().max().item() == 0.0
    nets = make_nets(perturb_aux=False)
    gen_step(DIConfig(freeze_order="independent_dropout"), nets, z, sigma, noise)
    assert nets.generator.lin.weight.grad.abs().max().item() > 0.0


def test_independent_dropout_gradient_matches_unshared_masks():
    z, sigma, noise = fixed_inputs()
    nets = make_nets()
    gen_step(DIConfig(freeze_order="independent_dropout"), nets, z, sigma, noise)
    # without the restore, the aux net continues the RNG stream after the teacher's draws
    with torch.no_grad():
        x = nets.generator(z) + sigma.reshape(-1, 1, 1, 1) * noise
        torch.manual_seed(123)
        nets.teacher.train()
        d_p = nets.teacher.denoise(x, sigma)
        nets.teacher.eval()
        d_q = nets.aux.train().denoise(x, sigma)
    grad_w = 0.1 * (d_q - d_p).flatten(1).T @ z / B
    assert rel_err(nets.generator.lin.weight.grad, grad_w) < 1e-5


def test_clean_leaves_teacher_and_rng_untouched_and_uses_eval_mode():
    z, sigma, noise = fixed_inputs()
    nets = make_nets()
    before = copy.deepcopy(nets.teacher.state_dict())
    seen = []
    nets.teacher.net.register_forward_hook(lambda m, i, o: seen.append(("teacher", m.training)))
    nets.aux.net.register_forward_hook(lambda m, i, o: seen.append(("aux", m.training)))
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    steps.generator_step(DIConfig(freeze_order="clean"), nets, torch.optim.Adam(nets.generator.parameters(), lr=0.0), z, sigma, noise)
    assert torch.equal(torch.get_rng_state(), rng)  # no dropout randomness consumed
    assert seen == [("teacher", False), ("aux", False)]
    assert all(torch.equal(before[k], v) for k, v in nets.teacher.state_dict().items())
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in nets.aux.parameters())
    # the reference does consume dropout randomness, in train mode for both nets
    nets2, seen2 = make_nets(), []
    nets2.teacher.net.register_forward_hook(lambda m, i, o: seen2.append(("teacher", m.training)))
    nets2.aux.net.register_forward_hook(lambda m, i, o: seen2.append(("aux", m.training)))
    torch.manual_seed(5)
    steps.generator_step(DIConfig(), nets2, torch.optim.Adam(nets2.generator.parameters(), lr=0.0), z, sigma, noise)
    assert not torch.equal(torch.get_rng_state(), rng)
    assert seen2 == [("teacher", True), ("aux", True)]
    assert not nets2.teacher.training  # net.eval() after the loss, as in the release


def test_teacher_eval_mode_switch():
    z, sigma, noise = fixed_inputs()
    nets, seen = make_nets(), []
    nets.teacher.net.register_forward_hook(lambda m, i, o: seen.append(("teacher", m.training)))
    nets.aux.net.register_forward_hook(lambda m, i, o: seen.append(("aux", m.training)))
    gen_step(DIConfig(freeze_order="teacher_eval"), nets, z, sigma, noise)
    assert seen == [("teacher", False), ("aux", True)]


def test_detach_scores_false_changes_gradient_and_leaks_into_aux():
    z, sigma, noise = fixed_inputs()
    ref = make_nets()
    gen_step(DIConfig(), ref, z, sigma, noise)
    assert all(p.grad is None for p in ref.aux.parameters())  # no_grad: nothing reaches the aux net
    bug = make_nets()
    gen_step(DIConfig(detach_scores=False), bug, z, sigma, noise)
    assert rel_err(bug.generator.lin.weight.grad, ref.generator.lin.weight.grad) > 1e-3
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in bug.aux.parameters())
    assert all(p.grad is None for p in bug.teacher.parameters())
    sid = make_nets()
    seen = []
    sid.teacher.net.register_forward_hook(lambda m, i, o: seen.append(m.training))
    sid.aux.net.register_forward_hook(lambda m, i, o: seen.append(m.training))
    gen_step(DIConfig(detach_scores=False, sid_frozen_eval=True), sid, z, sigma, noise)
    assert seen == [False, False]
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in sid.aux.parameters())
    assert rel_err(sid.generator.lin.weight.grad, ref.generator.lin.weight.grad) > 1e-3
    assert all(p.requires_grad for p in sid.aux.parameters())  # unfrozen again afterwards


def test_stale_aux_gradients_leak_only_without_zero_grad():
    """After a non-detached generator step the aux net holds generator-loss gradients; with aux_zero_grad
    off they are added to the next aux step's gradient."""
    z, sigma, noise = fixed_inputs()
    results = {}
    for zero in (True, False):
        nets = make_nets()
        cfg = DIConfig(detach_scores=False, aux_zero_grad=zero)
        gen_step(cfg, nets, z, sigma, noise)
        stale = [p.grad.clone() for p in nets.aux.parameters()]
        opt = torch.optim.SGD(nets.aux.parameters(), lr=0.0)
        torch.manual_seed(9)
        steps.aux_step(cfg, nets, opt, z, sigma=sigma, noise=noise)
        results[zero] = ([p.grad.clone() for p in nets.aux.parameters()], stale)
    (clean, _), (dirty, stale) = results[True], results[False]
    for c, d, s in zip(clean, dirty, stale):
        assert torch.allclose(d, c + s, atol=1e-10)
    assert any(s.abs().max() > 0 for s in stale)


def test_aux_step_edm_loss_value_and_generator_eval_mode():
    z, sigma, noise = fixed_inputs()
    nets = make_nets()
    seen = []
    nets.generator.register_forward_hook(lambda m, i, o: seen.append(m.training))
    opt = torch.optim.SGD(nets.aux.parameters(), lr=0.0)
    torch.manual_seed(4)
    stats = steps.aux_step(DIConfig(), nets, opt, z, sigma=sigma, noise=noise)
    assert seen == [False] and nets.generator.training  # G.eval() to sample, G.train() after
    with torch.no_grad():
        x0 = nets.generator(z)
        torch.manual_seed(4)
        d = nets.aux.train().denoise(x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma)
        lam = (sigma**2 + 0.25) / (0.25 * sigma**2)
        expected = (lam.reshape(-1, 1, 1, 1) * (d - x0) ** 2).sum() / B
    assert stats["aux_loss"] == pytest.approx(expected.item(), rel=1e-9)
    assert math.isfinite(stats["teacher_loss"])


def test_nan_cleanup_replaces_non_finite_grads():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf")])
    steps.clean_grads_([p])
    assert p.grad.tolist() == [0.0, 1e5, -1e5]


@pytest.mark.parametrize("kind", ["lognormal", "uniform_log", "uniform_vp_t"])
def test_sigma_distributions_respect_truncation(kind):
    dist = NoiseDist(kind=kind, sigma_min=0.1, sigma_max=3.0)
    s = noise_levels.sample_sigma(dist, 20_000, generator=None)
    assert s.min() >= 0.1 and s.max() <= 3.0
    assert s.std() > 0.1


def test_lognormal_untruncated_moments_and_uniform_log_median():
    torch.manual_seed(0)
    s = noise_levels.sample_sigma(NoiseDist(sigma_min=1e-8, sigma_max=1e8), 50_000)
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.03)
    u = noise_levels.sample_sigma(NoiseDist(kind="uniform_log", sigma_min=0.01, sigma_max=100.0), 50_000)
    assert u.log().median().item() == pytest.approx(0.0, abs=0.1)


def test_default_sigma_is_the_release_draw():
    torch.manual_seed(3)
    s = noise_levels.sample_sigma(NoiseDist(), 1000)
    torch.manual_seed(3)
    assert torch.equal(s, (torch.randn(1000) * 1.2 - 1.2).exp())
    with pytest.raises(ValueError, match="needs a finite range"):
        NoiseDist(kind="uniform_log").validate("gen_sigma")


def test_vp_t_sigma_inverse():
    for sigma in (0.002, 0.5, 80.0):
        assert schedules.vp_sigma(torch.tensor(schedules.vp_t_of_sigma(sigma), dtype=torch.float64)).item() == pytest.approx(sigma, rel=1e-9)


def test_score_gap_bins():
    gap = torch.tensor([1.0, 3.0, 10.0])
    sig = torch.tensor([0.01, 0.02, 3.0])
    out = bin_score_gap(gap, sig)
    assert out["gap_s0-0.05"] == 2.0 and out["gap_s2-5"] == 10.0 and math.isnan(out["gap_s0.5-1"])


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="freeze_order must be one of"):
        DIConfig(freeze_order="sometimes")
    with pytest.raises(ValueError, match="sid_frozen_eval needs detach_scores=False"):
        DIConfig(sid_frozen_eval=True)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        apply_overrides(DIConfig(), ["gen_sigma.sigma_min=5", "gen_sigma.sigma_max=1"])
    with pytest.raises(ValueError, match="unknown config field"):
        apply_overrides(DIConfig(), ["learning_rate=1"])
    cfg = apply_overrides(DIConfig(), ["aux_steps=5", "weighting=dmd_normalized", "betas_gen=0.5,0.9"])
    assert (cfg.aux_steps, cfg.weighting, cfg.betas_gen) == (5, "dmd_normalized", (0.5, 0.9))
    assert DIConfig.from_dict(cfg.to_dict()) == cfg


def test_optimised_path_gives_the_same_gradient():
    """inference_mode for the frozen scores: bit-for-bit the eager gradient (dropout masks included).
    channels_last: the same gradient without dropout (with dropout the masks are drawn in memory order, so
    they are different draws from the same distribution). bf16 autocast: equal up to bf16 rounding."""
    z, sigma, noise = fixed_inputs()
    plain, fast = make_nets(), make_nets()
    gen_step(DIConfig(), plain, z, sigma, noise)
    gen_step(DIConfig(inference_frozen=True), fast, z, sigma, noise)
    assert torch.equal(fast.generator.lin.weight.grad, plain.generator.lin.weight.grad)

    plain, fast = make_nets(), make_nets()
    for net in (fast.teacher, fast.aux):
        net.to(memory_format=torch.channels_last)
    gen_step(DIConfig(freeze_order="clean"), plain, z, sigma, noise)
    gen_step(DIConfig(freeze_order="clean", inference_frozen=True, channels_last=True), fast, z, sigma, noise)
    assert rel_err(fast.generator.lin.weight.grad, plain.generator.lin.weight.grad) < 1e-9

    plain32, bf16 = make_nets(), make_nets()
    for nets in (plain32, bf16):
        nets.teacher.float(), nets.aux.float(), nets.generator.float()
    z32, s32, n32 = z.float(), sigma.float(), noise.float()
    gen_step(DIConfig(freeze_order="clean"), plain32, z32, s32, n32)
    gen_step(DIConfig(freeze_order="clean", autocast_bf16=True), bf16, z32, s32, n32)
    err = rel_err(bf16.generator.lin.weight.grad, plain32.generator.lin.weight.grad)
    assert 0 < err < 0.1  # bf16 changes the numbers a little, not the direction


def test_bf16_precision_runs_every_network_pass_in_bf16_and_stores_float32():
    """precision=bf16 runs G's forward, the aux loss's forward and both score evaluations in bf16 (the scores-only
    toggle leaves G in float32); the gradients, the loss and the weights stay float32, within bf16 rounding of fp32."""
    z, sigma, noise = fixed_inputs()
    grads = {}
    for label, cfg in (("fp32", DIConfig(freeze_order="clean")),
                       ("scores", DIConfig(freeze_order="clean", autocast_bf16=True)),
                       ("all", DIConfig(freeze_order="clean", precision="bf16"))):
        nets = make_nets()
        for net in (nets.teacher, nets.aux, nets.generator):
            net.float()
        seen = {}
        def record(name):
            return lambda module, inputs, output: seen.setdefault(name, output.dtype) and None  # None: output kept

        nets.generator.lin.register_forward_hook(record("G"))
        nets.aux.net.register_forward_hook(record("aux"))
        opt_aux = torch.optim.Adam(nets.aux.parameters(), lr=0.0)
        steps.aux_step(cfg, nets, opt_aux, z.float(), sigma=sigma.float(), noise=noise.float())
        aux_dtype = seen.pop("aux")
        out = gen_step(cfg, nets, z.float(), sigma.float(), noise.float())
        grads[label] = nets.generator.lin.weight.grad
        assert grads[label].dtype == nets.generator.lin.weight.dtype == torch.float32
        assert isinstance(out["surrogate"], float) and out["score_gap"].dtype == torch.float32
        bf16 = torch.bfloat16
        assert (seen["G"], aux_dtype, seen["aux"]) == {"fp32": (torch.float32,) * 3, "scores": (torch.float32, torch.float32, bf16),
                                                       "all": (bf16, bf16, bf16)}[label]
    assert 0 < rel_err(grads["all"], grads["fp32"]) < 0.1


def test_inference_frozen_requires_detached_scores():
    with pytest.raises(ValueError, match="inference_frozen needs detach_scores=True"):
        DIConfig(inference_frozen=True, detach_scores=False)


# ----------------------------------------------------------------------------------------------
# Porting mistakes and gradient leakage (each toggle: what it changes, and only that)


@pytest.mark.parametrize("port,factor", [("sign_flipped", lambda s: -torch.ones_like(s)),
                                         ("no_sigma", lambda s: 1 / s),
                                         ("eps_as_score", lambda s: -s)])
def test_eps_port_mistakes_multiply_the_reference_gap_by_their_factor(port, factor):
    """An eps-parameterised port: D_q - D_p = -sigma (eps_q - eps_p). Each mistake is the reference gradient with
    the per-sample gap multiplied by exactly one factor: -1 (sign), 1/sigma (no sigma), -sigma (eps as score)."""
    z, sigma, noise = fixed_inputs()
    nets = make_nets()
    gen_step(DIConfig(eps_port=port), nets, z, sigma, noise)
    grad_w, grad_b = hand_gradient(nets, z, sigma, noise, factor(sigma))
    assert rel_err(nets.generator.lin.weight.grad, grad_w) < 1e-5
    assert rel_err(nets.generator.lin.bias.grad, grad_b) < 1e-5
    # and the exact port is the reference gradient itself
    nets = make_nets()
    gen_step(DIConfig(eps_port="exact"), nets, z, sigma, noise)
    grad_w, _ = hand_gradient(nets, z, sigma, noise, torch.ones_like(sigma))
    assert rel_err(nets.generator.lin.weight.grad, grad_w) < 1e-5


def test_eps_uniform_weighting_equals_the_no_sigma_port():
    """The plain DDPM port (unit weight on the eps gap) is w = 1/sigma on the denoiser gap: the same gradient as
    the no_sigma port with the reference weighting."""
    z, sigma, noise = fixed_inputs()
    grads = []
    for cfg in (DIConfig(weighting="eps_uniform"), DIConfig(eps_port="no_sigma")):
        nets = make_nets()
        gen_step(cfg, nets, z, sigma, noise)
        grads.append(nets.generator.lin.weight.grad.clone())
    assert rel_err(grads[0], grads[1]) < 1e-6  # the scores are float32 constants: equal to float32 rounding


def test_gen_zero_grad_off_adds_the_previous_gradient():
    z, sigma, noise = fixed_inputs()
    nets = make_nets()
    cfg = DIConfig(gen_zero_grad=False)
    opt = torch.optim.SGD(nets.generator.parameters(), lr=0.0)
    torch.manual_seed(123)
    steps.generator_step(cfg, nets, opt, z, sigma=sigma, noise=noise)
    first = nets.generator.lin.weight.grad.clone()
    torch.manual_seed(123)
    steps.generator_step(cfg, nets, opt, z, sigma=sigma, noise=noise)
    assert torch.allclose(nets.generator.lin.weight.grad, 2 * first, rtol=1e-10)


def test_undetached_aux_batch_leaks_the_aux_loss_into_the_generator_gradient():
    """aux_batch_detach=False: the aux step's backward fills G's .grad with d(aux loss)/d theta; the next generator
    step adds to it only with gen_zero_grad=False."""
    z, sigma, noise = fixed_inputs()
    results = {}
    for detach, zero in ((True, True), (False, True), (False, False)):
        nets = make_nets()
        cfg = DIConfig(aux_batch_detach=detach, gen_zero_grad=zero)
        torch.manual_seed(4)
        steps.aux_step(cfg, nets, torch.optim.SGD(nets.aux.parameters(), lr=0.0), z, sigma=sigma, noise=noise)
        leaked = None if nets.generator.lin.weight.grad is None else nets.generator.lin.weight.grad.clone()
        gen_step(cfg, nets, z, sigma, noise)
        results[(detach, zero)] = (leaked, nets.generator.lin.weight.grad.clone())
    assert results[(True, True)][0] is None  # reference: no gradient reaches G from the aux step
    leaked = results[(False, True)][0]
    assert leaked is not None and leaked.abs().max() > 0
    assert torch.allclose(results[(False, True)][1], results[(True, True)][1], atol=1e-12)  # zeroed before use
    assert torch.allclose(results[(False, False)][1], results[(True, True)][1] + leaked, atol=1e-10)


def test_generator_mode_sets_train_or_eval_in_both_steps():
    z, sigma, noise = fixed_inputs()
    for mode, expected in (("reference", [False, True]), ("train", [True, True]), ("eval", [False, False])):
        nets = make_nets()
        seen = []
        nets.generator.register_forward_hook(lambda m, i, o: seen.append(m.training))
        cfg = DIConfig(generator_mode=mode)
        torch.manual_seed(4)
        steps.aux_step(cfg, nets, torch.optim.SGD(nets.aux.parameters(), lr=0.0), z, sigma=sigma, noise=noise)
        gen_step(cfg, nets, z, sigma, noise)
        assert seen == expected, mode


def test_generator_range_01_feeds_the_teacher_a_shifted_x0():
    """With generator_range=01 both steps see (G(z) + 1) / 2; the gradient is the reference one at that x0 with
    the chain-rule factor 1/2 (hand derivation)."""
    z, sigma, noise = fixed_inputs()
    nets = make_nets()
    gen_step(DIConfig(generator_range="01"), nets, z, sigma, noise)
    with torch.no_grad():
        x0 = (nets.generator(z) + 1) / 2
        x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
        torch.manual_seed(123)
        nets.teacher.train()
        d_p = nets.teacher.denoise(x, sigma)
        nets.teacher.eval()
        torch.manual_seed(123)
        d_q = nets.aux.train().denoise(x, sigma)
    gap = (d_q - d_p).flatten(1)
    grad_w = 0.5 * 0.1 * gap.T @ z / B
    assert rel_err(nets.generator.lin.weight.grad, grad_w) < 1e-5


def test_ddpm_discrete_sigma_is_a_uniform_step_of_the_linear_schedule():
    table = schedules.ddpm_sigma_table(2000)
    assert table[0].item() == pytest.approx(0.0100005, rel=1e-4) and table[999].item() == pytest.approx(12.70, rel=1e-3)
    torch.manual_seed(0)
    s = noise_levels.sample_sigma(NoiseDist(kind="ddpm_discrete"), 40_000).double()
    assert set(s.unique().tolist()) <= set(table.float().double().tolist())
    assert (s > 12.7).double().mean().item() == pytest.approx(0.5, abs=0.01)  # most draws at large sigma
    t = noise_levels.sample_sigma(NoiseDist(kind="ddpm_discrete", sigma_min=0.1, sigma_max=5.0), 10_000)
    assert t.min() >= 0.1 and t.max() <= 5.0


def test_gradient_signal_leaves_the_run_untouched_and_reads_pure_noise_as_about_one():
    from harness.method.gradient_signal import gradient_signal

    nets = make_nets()
    cfg = DIConfig()
    before = {k: v.clone() for k, v in nets.generator.state_dict().items()}
    torch.manual_seed(5)
    s = gradient_signal(cfg, nets, batches=3)
    after_draw = torch.rand(1)
    torch.manual_seed(5)
    expected_draw = torch.rand(1)
    assert torch.equal(after_draw, expected_draw)  # the RNG is restored
    assert all(torch.equal(before[k], v) for k, v in nets.generator.state_dict().items())
    assert all(p.grad is None for p in nets.generator.parameters())
    assert s["grad_norm_batch"] > 0 and 0 < s["grad_signal"] <= math.sqrt(3) + 1e-9
    one = gradient_signal(cfg, nets, batches=1)  # one batch: its mean is itself
    assert one["grad_norm_mean"] == pytest.approx(one["grad_norm_batch"]) and one["grad_signal"] == pytest.approx(1.0)
