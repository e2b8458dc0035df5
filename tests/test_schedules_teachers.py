import math

import pytest
import torch

from harness.method import schedules
from harness.method.networks import build
from harness.method.teachers import DDPMTeacher, EDMTeacher, build_teacher

TINY_UNET = {"base_channels": 8, "channel_mult": [1, 2], "blocks_per_level": 1, "dropout": 0.1, "attention": False}


def test_alphabar_matches_explicit_product():
    betas = schedules.linear_betas(50, 1e-4, 0.02)
    ab = schedules.alphabar_from_betas(betas)
    explicit, prod = [], 1.0
    for b in betas.tolist():
        prod *= 1 - b
        explicit.append(prod)
    assert torch.allclose(ab, torch.tensor(explicit, dtype=torch.float64), rtol=1e-12)


def test_seed000_schedule_reaches_tiny_alphabar():
    """T=2000 with the unrescaled 1e-4..0.02 schedule: alphabar_T ~ exp(-sum beta) ~ exp(-20) ~ 2e-9."""
    ab = schedules.alphabar_from_betas(schedules.linear_betas(2000))
    closed = math.exp(-sum(schedules.linear_betas(2000).tolist()) - 0.5 * sum(b * b for b in schedules.linear_betas(2000).tolist()))
    assert ab[-1] < 1e-8
    assert ab[-1].item() == pytest.approx(closed, rel=0.05)  # log(1-b) ~ -b - b^2/2


def test_sigma_alphabar_roundtrip_and_closed_forms():
    sigma = torch.tensor([0.002, 0.1, 1.0, 80.0], dtype=torch.float64)
    ab = schedules.alphabar_from_sigma(sigma)
    assert torch.allclose(ab, 1 / (1 + sigma**2))
    assert torch.allclose(schedules.sigma_from_alphabar(ab), sigma, rtol=1e-12)
    a = schedules.vp_scale_from_sigma(sigma)
    s = (1 - a**2).sqrt()
    assert torch.allclose(s / a, sigma, rtol=1e-10)  # sigma = s_t / a_t
    x0, eps = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x_t = a * x0 + s * eps
    assert torch.allclose(schedules.vp_to_ve(x_t, a), x0 + sigma * eps)  # x_sigma = x_t / a_t
    assert torch.allclose(schedules.ve_to_vp(x0 + sigma * eps, sigma), x_t)


def test_continuous_t_inverts_the_table():
    table = schedules.sigma_from_alphabar(schedules.alphabar_from_betas(schedules.linear_betas(100)))
    idx = torch.tensor([0, 7, 50, 99])
    assert torch.allclose(schedules.continuous_t_from_sigma(table[idx], table), idx.double(), atol=1e-9)
    mid = (table[10].log() + table[11].log()).div(2).exp()
    assert schedules.continuous_t_from_sigma(mid[None], table).item() == pytest.approx(10.5, abs=1e-9)
    assert schedules.continuous_t_from_sigma(torch.tensor([1e-9, 1e9]), table).tolist() == [0.0, 99.0]  # clamped


def test_karras_sigmas_endpoints():
    s = schedules.karras_sigmas(18)
    assert len(s) == 19 and s[-1] == 0
    assert s[0].item() == pytest.approx(80.0) and s[17].item() == pytest.approx(0.002)
    assert torch.all(s[:-1][1:] < s[:-1][:-1])


def test_edm_lambda_closed_form():
    sigma = torch.tensor([0.5])
    assert schedules.edm_loss_weight(sigma).item() == pytest.approx((0.25 + 0.25) / (0.25 * 0.25))


def test_edm_preconditioning_at_init_is_c_skip():
    """The UNet's output conv is zero-initialised, so D(x, sigma) = c_skip(sigma) x exactly."""
    teacher = EDMTeacher(build("unet", **TINY_UNET)).eval()
    x = torch.randn(3, 1, 28, 28)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert torch.allclose(teacher.denoise(x, sigma), c_skip.reshape(-1, 1, 1, 1) * x, atol=1e-6)
    expected_score = (c_skip.reshape(-1, 1, 1, 1) * x - x) / sigma.reshape(-1, 1, 1, 1) ** 2
    assert torch.allclose(teacher.score(x, sigma), expected_score, rtol=1e-5, atol=1e-6)


def test_ddpm_denoise_and_score_follow_eps():
    teacher = DDPMTeacher(build("unet", **TINY_UNET), num_steps=100)
    eps_hat = torch.randn(2, 1, 28, 28)
    teacher.eps = lambda x_t, t: eps_hat
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 2.0])
    s = sigma.reshape(-1, 1, 1, 1)
    assert torch.allclose(teacher.denoise(x, sigma), x - s * eps_hat)  # x0 = x_sigma - sigma eps
    assert torch.allclose(teacher.score(x, sigma), -eps_hat / s)  # score = -eps / sigma
    assert torch.allclose(teacher.score(x, sigma), (teacher.denoise(x, sigma) - x) / s**2, atol=1e-5)


def test_edm_heun_sampler_recovers_point_mass():
    """With the exact denoiser of a point mass at c (D = c), the ODE lands exactly on c."""
    teacher = EDMTeacher(build("unet", **TINY_UNET))
    c = torch.full((1, 1, 28, 28), 0.3)
    teacher.denoise = lambda x, sigma: c.expand_as(x).to(x.dtype)
    out = teacher.sample(torch.randn(4, 1, 28, 28), steps=18)
    assert torch.allclose(out, c.expand(4, -1, -1, -1), atol=1e-5)
    assert EDMTeacher.nfe(steps=18) == 35


@pytest.mark.parametrize("sampler,steps", [("ddim", 20), ("ancestral", 20), ("ancestral", 100)])
def test_ddpm_samplers_recover_point_mass(sampler, steps):
    teacher = DDPMTeacher(build("unet", **TINY_UNET), num_steps=100)
    c = 0.3

    def exact_eps(x_t, t):  # eps of the point mass: (x_t - sqrt(ab) c) / sqrt(1 - ab)
        ab = teacher.alphabar[t.round().long()].to(x_t.dtype).reshape(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * c) / (1 - ab).sqrt()

    teacher.eps = exact_eps
    out = teacher.sample(torch.randn(3, 1, 28, 28), steps=steps, sampler=sampler)
    assert torch.allclose(out, torch.full_like(out, c), atol=1e-4)


def test_losses_zero_for_perfect_model_and_huber_differs_from_mse():
    c = torch.full((4, 1, 28, 28), -0.2)
    edm = EDMTeacher(build("unet", **TINY_UNET))
    edm.denoise = lambda x, sigma: c
    assert edm.loss(c).abs().max().item() == 0.0

    # eps_hat = 0 everywhere, so the residual is -eps: MSE = mean eps^2; Huber(delta=1) = 0.5 e^2 or |e| - 0.5.
    losses = {}
    for loss_type in ("mse", "huber"):
        teacher = DDPMTeacher(build("unet", **TINY_UNET), num_steps=10, loss_type=loss_type)
        teacher.eps = lambda x_t, t: torch.zeros_like(x_t)
        losses[loss_type] = teacher.loss(torch.zeros(2, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # replay the loss's draws: t first, then eps
    torch.randint(0, 10, (2,), generator=g)
    eps = torch.randn((2, 1, 28, 28), generator=g)
    assert torch.allclose(losses["mse"], eps.pow(2).flatten(1).mean(1), rtol=1e-5)
    expected_huber = torch.where(eps.abs() < 1, 0.5 * eps**2, eps.abs() - 0.5).flatten(1).mean(1)
    assert torch.allclose(losses["huber"], expected_huber, rtol=1e-5)
    assert not torch.allclose(losses["mse"], losses["huber"])


def test_build_teacher_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown teacher kind"):
        build_teacher({"kind": "vp-sde", "unet": TINY_UNET})
    with pytest.raises(ValueError, match="loss_type"):
        DDPMTeacher(build("unet", **TINY_UNET), loss_type="l1")
