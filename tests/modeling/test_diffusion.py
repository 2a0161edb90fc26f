"""Noise schedule, dual q_sample (Eq. 10), GT padding and samplers against closed forms.

DPM-Solver is also run on Gaussian data x0 ~ N(0, s²), whose ideal denoiser is known in closed
form and gives a noise estimate ε̂ that changes from step to step.
"""

import math

import pytest
import torch

from psdiff.modeling.diffusion import (
    boxes_to_signal,
    build_sampler,
    cosine_alphas_cumprod,
    embeddings_to_signal,
    gather_padded,
    pad_ground_truth,
    pad_indices,
    q_sample,
    random_embeddings,
    signal_to_boxes,
    signal_to_embeddings,
)
from psdiff.utils.errors import PsdiffError

T = 1000
ALPHAS = cosine_alphas_cumprod(T)


def closed_form_alpha_bar(t, s=0.008):
    """ᾱ_t = f(t+1)/f(0) of Improved DDPM (unclipped: clipping only touches t = T−1)."""
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t + 1) / f(0)


def test_cosine_schedule_matches_closed_form():
    for t in [0, 1, 249, 499, 749, 998]:
        assert ALPHAS[t].item() == pytest.approx(closed_form_alpha_bar(t), rel=1e-9)
    # the last beta is clipped at 0.999, so ᾱ_999 = 0.001 · ᾱ_998 exactly
    assert ALPHAS[999].item() == pytest.approx(0.001 * ALPHAS[998].item(), rel=1e-9)
    assert torch.all(ALPHAS[1:] < ALPHAS[:-1])


def test_dual_q_sample_closed_form():
    """Eq. 10 for boxes and embeddings, one t per image shared by both quantities."""
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(2, 5, 4, generator=g, dtype=torch.float64)
    emb = torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
    eps1 = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    eps2 = torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 700])
    b_t = q_sample(boxes_to_signal(boxes, 2.0), t, ALPHAS, eps1)
    e_t = q_sample(embeddings_to_signal(emb, 3.0, "l2"), t, ALPHAS, eps2)
    for i, ti in enumerate(t.tolist()):
        a = closed_form_alpha_bar(ti)
        expect_b = 2.0 * math.sqrt(a) * (boxes[i] * 2 - 1) + math.sqrt(1 - a) * eps1[i]
        norm = emb[i] / emb[i].pow(2).sum(-1, keepdim=True).sqrt()
        expect_e = 3.0 * math.sqrt(a) * norm + math.sqrt(1 - a) * eps2[i]
        torch.testing.assert_close(b_t[i], expect_b, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(e_t[i], expect_e, rtol=1e-9, atol=1e-9)


def test_signal_maps_round_trip_and_clamp():
    boxes = torch.tensor([[0.5, 0.25, 1.0, 0.0]])
    torch.testing.assert_close(boxes_to_signal(boxes, 2.0), torch.tensor([[0.0, -1.0, 2.0, -2.0]]))
    torch.testing.assert_close(signal_to_boxes(boxes_to_signal(boxes, 2.0), 2.0), boxes)
    torch.testing.assert_close(signal_to_boxes(torch.tensor([[9.0, -9.0, 1.0, 0.0]]), 2.0),
                               torch.tensor([[1.0, 0.0, 0.75, 0.5]]))
    e = torch.tensor([[3.0, 4.0] + [0.0] * 14])  # D = 16, unit vector (0.6, 0.8, 0, ...)
    sig = embeddings_to_signal(e, 3.0, "l2_sqrt_dim")  # 0.6·4 and 0.8·4 clamp to 1
    torch.testing.assert_close(sig, torch.tensor([[3.0, 3.0] + [0.0] * 14]))
    torch.testing.assert_close(signal_to_embeddings(embeddings_to_signal(e, 3.0, "l2"), 3.0, "l2"),
                               e / 5)
    with pytest.raises(PsdiffError, match="EMB_NORM"):
        embeddings_to_signal(e, 3.0, "cosine")


@pytest.mark.parametrize("num_gt", [1, 3, 7])
def test_repeat_padding_is_uniform(num_gt):
    idx = pad_indices(num_gt, 20, "repeat", torch.Generator().manual_seed(1))
    counts = torch.bincount(idx, minlength=num_gt)
    assert len(idx) == 20 and counts.sum() == 20
    assert counts.min() == 20 // num_gt and counts.max() - counts.min() <= 1


def test_padding_rules_and_no_persons():
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.6, 0.1, 0.2]])
    padded, idx = pad_ground_truth(gt, 6, "random_fill", g)
    assert idx.tolist() == [0, 1, -1, -1, -1, -1]
    torch.testing.assert_close(padded[:2], gt)
    assert torch.all(padded[2:, 2:] >= 1e-4)
    # more GTs than slots: a subset without repeats
    padded, idx = pad_ground_truth(torch.rand(9, 4), 4, "repeat", g)
    assert len(set(idx.tolist())) == 4 and idx.min() >= 0
    # no persons: every slot a placeholder, embeddings padded with the same index
    padded, idx = pad_ground_truth(torch.zeros(0, 4), 5, "repeat", g)
    assert padded.shape == (5, 4) and torch.all(idx == -1)
    emb = gather_padded(torch.zeros(0, 8), idx, random_embeddings, g)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(5))
    emb = gather_padded(torch.eye(2, 8), torch.tensor([1, 0, 1]), random_embeddings, g)
    torch.testing.assert_close(emb, torch.eye(2, 8)[[1, 0, 1]])
    with pytest.raises(PsdiffError, match="GT_PADDING"):
        pad_indices(2, 4, "tile")


def test_sampler_timesteps():
    assert build_sampler("DDIM", ALPHAS, 1).timesteps == [999]
    assert build_sampler("DDIM", ALPHAS, 4).timesteps == [999, 749, 499, 249]
    eight = [999, 874, 749, 624, 499, 374, 249, 124]
    assert build_sampler("DPM_SOLVER", ALPHAS, 8).timesteps == eight
    with pytest.raises(PsdiffError, match="SAMPLER"):
        build_sampler("EULER", ALPHAS, 4)
    with pytest.raises(PsdiffError, match="SAMPLE_STEPS"):
        build_sampler("DDIM", ALPHAS, 0)


@pytest.mark.parametrize("name", ["DDIM", "DPM_SOLVER", "DPM_SOLVER_PP"])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_perfect_predictor_recovers_x0(name, steps):
    """With x̂0 = x0 every deterministic sampler stays on x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""
    g = torch.Generator().manual_seed(steps)
    x0 = torch.randn(6, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 4, generator=g, dtype=torch.float64)
    sampler = build_sampler(name, ALPHAS, steps, eta=0.0)
    x = q_sample(x0, sampler.timesteps[0], ALPHAS, eps)
    for i, t in enumerate(sampler.timesteps):
        torch.testing.assert_close(x, q_sample(x0, t, ALPHAS, eps), rtol=1e-9, atol=1e-9)
        x = sampler.step(i, x, x0)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_stochastic_ddim_recovers_x0(steps):
    """DDIM with η = 1 (the default) follows its own formula and still ends at x0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, generator=g, dtype=torch.float64)
    sampler = build_sampler("DDIM", ALPHAS, steps, eta=1.0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    for i, t in enumerate(sampler.timesteps):
        z = torch.randn(6, 4, generator=g, dtype=torch.float64)
        x_next = sampler.step(i, x, x0, noise=z)
        if i + 1 < steps:
            a, a2 = ALPHAS[t].item(), ALPHAS[sampler.timesteps[i + 1]].item()
            eps = (x / math.sqrt(a) - x0) / math.sqrt(1 / a - 1)
            sigma = math.sqrt((1 - a / a2) * (1 - a2) / (1 - a))
            expect = math.sqrt(a2) * x0 + math.sqrt(1 - a2 - sigma**2) * eps + sigma * z
            torch.testing.assert_close(x_next, expect, rtol=1e-6, atol=1e-8)
        x = x_next
    torch.testing.assert_close(x, x0, rtol=0, atol=0)


def naive_dpm_solver_pp_2m(x_t, x0_now, x0_prev, t_prev, t, t_next):
    """DPM-Solver++(2M), Lu et al. 2022 Alg. 2, written from the paper's λ = log(α/σ)."""
    abar = lambda u: ALPHAS[u].item()  # noqa: E731
    lam = lambda u: 0.5 * math.log(abar(u) / (1 - abar(u)))  # noqa: E731
    h, h_prev = lam(t_next) - lam(t), lam(t) - lam(t_prev)
    r = h_prev / h
    d = (1 + 1 / (2 * r)) * x0_now - 1 / (2 * r) * x0_prev
    sigma_ratio = math.sqrt((1 - abar(t_next)) / (1 - abar(t)))
    return sigma_ratio * x_t - math.sqrt(abar(t_next)) * (math.exp(-h) - 1) * d


def test_dpm_solver_pp_second_order_and_renewed_rows():
    """The 2M step matches the paper's formula; renewed rows take the first-order (DDIM) step."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    preds = [torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    solver = build_sampler("DPM_SOLVER_PP", ALPHAS, 4)
    ddim = build_sampler("DDIM", ALPHAS, 4, eta=0.0)
    ts = solver.timesteps
    x1 = solver.step(0, x, preds[0])
    torch.testing.assert_close(x1, ddim.step(0, x, preds[0]), rtol=1e-9, atol=1e-9)
    renewed = torch.tensor([False, True, False, False, True])
    solver.reset_rows(renewed)
    x2 = solver.step(1, x1, preds[1])
    expect = naive_dpm_solver_pp_2m(x1, preds[1], preds[0], ts[0], ts[1], ts[2])
    torch.testing.assert_close(x2[~renewed], expect[~renewed], rtol=1e-9, atol=1e-9)
    first_order = ddim.step(1, x1, preds[1])
    torch.testing.assert_close(x2[renewed], first_order[renewed], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(x2[~renewed], first_order[~renewed])


@pytest.mark.parametrize("kind, eta, first_order", [("DDIM", 1.0, ("DDIM", 1.0)),
                                                  ("DDIM", 0.5, ("DDIM", 0.5)),
                                                  ("DPM_SOLVER_PP", 1.0, ("DDIM", 0.0))])
def test_rows_restarted_from_noise_step_from_t_max(kind, eta, first_order):
    """A row that entered step 1 of 4 as pure noise (RENEWAL_RESTART "noise") goes to step 1's
    next t (499) as the first step of 2 steps takes a row from T - 1 to 499; the solvers take
    the first-order step, as for any renewed row."""
    g = torch.Generator().manual_seed(4)
    x, x0, z = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    four = build_sampler(kind, ALPHAS, 4, eta=eta)
    two = build_sampler(first_order[0], ALPHAS, 2, eta=first_order[1])
    assert four.next_timesteps[1] == two.next_timesteps[0] == 499
    torch.testing.assert_close(four.restart_step(1, x, x0, z), two.step(0, x, x0, z))
    assert not torch.allclose(four.restart_step(1, x, x0, z), four.step(1, x, x0, z))
    torch.testing.assert_close(four.restart_step(3, x, x0, z), x0)  # the last step: x̂0


def gaussian_denoiser(x, t, data_std):
    """The ideal x̂0 for x0 ~ N(0, s²) per row: E[x0 | x_t] = √ᾱ·s²/(ᾱ·s² + 1 − ᾱ)·x_t."""
    a = ALPHAS[t].item()
    return math.sqrt(a) * data_std**2 / (a * data_std**2 + 1 - a) * x


def naive_dpm_solver_2m_trajectory(x, timesteps, denoiser):
    """Multistep DPM-Solver-2 with noise prediction (the DPM-Solver++ paper, Lu et al. 2022):
    x_i = (α_i/α_{i−1})·x_{i−1} − σ_i(e^{h_i} − 1)·[(1 + 1/(2r_i))·ε_{i−1} − 1/(2r_i)·ε_{i−2}],
    r_i = h_{i−1}/h_i, the first step first order (DPM-Solver-1). Returns x at every timestep."""
    alpha = lambda u: math.sqrt(ALPHAS[u].item())  # noqa: E731
    sigma = lambda u: math.sqrt(1 - ALPHAS[u].item())  # noqa: E731
    lam = lambda u: math.log(alpha(u) / sigma(u))  # noqa: E731
    xs, eps_prev = [x], None
    for i in range(1, len(timesteps)):
        s, t = timesteps[i - 1], timesteps[i]
        eps = (x - alpha(s) * denoiser(x, s)) / sigma(s)
        h = lam(t) - lam(s)
        d = eps
        if eps_prev is not None:
            r = (lam(s) - lam(timesteps[i - 2])) / h
            d = (1 + 1 / (2 * r)) * eps - 1 / (2 * r) * eps_prev
        x = alpha(t) / alpha(s) * x - sigma(t) * (math.exp(h) - 1) * d
        xs.append(x)
        eps_prev = eps
    return xs


def run_sampler(sampler, x, denoiser):
    """x at every timestep of `sampler` (the final x̂0 step left out), from x at the first."""
    xs = [x]
    for i, t in enumerate(sampler.timesteps[:-1]):
        xs.append(sampler.step(i, xs[-1], denoiser(xs[-1], t)))
    return xs


def test_dpm_solver_2m_trajectory_matches_the_paper():
    """DPM-Solver (noise prediction) follows the paper's 2M formula step by step while ε̂
    changes between steps, and its second-order term really changes the path (vs DDIM)."""
    data_std = torch.tensor([[0.3], [0.5], [1.0], [2.0]], dtype=torch.float64)

    def denoiser(x, t):
        return gaussian_denoiser(x, t, data_std)

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    solver = build_sampler("DPM_SOLVER", ALPHAS, 8)
    got = run_sampler(solver, x, denoiser)
    expect = naive_dpm_solver_2m_trajectory(x, solver.timesteps, denoiser)
    assert len(got) == len(expect) == 8
    for got_x, expect_x in zip(got, expect):
        torch.testing.assert_close(got_x, expect_x, rtol=1e-9, atol=1e-12)
    first_order = run_sampler(build_sampler("DDIM", ALPHAS, 8, eta=0.0), x, denoiser)
    torch.testing.assert_close(got[1], first_order[1], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(got[-1], first_order[-1], rtol=1e-3, atol=0)

