"""Dual noise generator (Eq. 10) and fast samplers (Algorithm 2, Table V), as plain tensor code.

Boxes (cxcywh in [0, 1]) and ReID embeddings are mapped to a "signal" space, noised with the
cosine schedule of Improved DDPM (forward process, Eq. 7 / Eq. 10) and, at inference, walked
back to x0 by DDIM, DPM-Solver or DPM-Solver++ from the network's x0 predictions. Nothing here
holds weights; the model keeps one sampler per diffused quantity (boxes, embeddings).
"""

import math

import torch
import torch.nn.functional as F

from psdiff.utils.errors import PsdiffError

EMB_NORMS = ("l2", "l2_sqrt_dim")  # choices of Norm(e0) in Eq. 10 (MODEL.PSDIFF.EMB_NORM)
GT_PADDINGS = ("repeat", "random_fill")  # choices of MODEL.PSDIFF.GT_PADDING


def cosine_alphas_cumprod(num_timesteps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 of the cosine schedule (Improved DDPM), float64.

    As DiffusionDet: f(t) = cos²((t/T + s)/(1 + s)·π/2), β_t = 1 − f(t+1)/f(t) clipped to
    [0, 0.999], ᾱ_t = ∏_{i≤t} (1 − β_i) recomputed from the clipped β.
    """
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64)
    f = torch.cos((steps / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(0, 0.999)
    return torch.cumprod(1 - betas, dim=0)


def _schedule_at(alphas_cumprod: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t gathered at `t` (int or tensor of `like`'s leading dims), broadcastable to `like`.

    An int indexes without making a tensor of it: no copy from the host, which a CUDA graph
    being captured would not allow."""
    if isinstance(t, int):
        return alphas_cumprod.to(device=like.device)[t].to(like.dtype)
    t = torch.as_tensor(t, device=like.device, dtype=torch.long)
    a = alphas_cumprod.to(device=like.device)[t].to(like.dtype)
    return a.reshape(t.shape + (1,) * (like.dim() - t.dim()))


def q_sample(x0: torch.Tensor, t, alphas_cumprod: torch.Tensor, noise: torch.Tensor):
    """Forward process x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (Eq. 7; Eq. 10 with x0 in signal space).

    `t` is an int or a LongTensor over x0's leading dims (e.g. [B] for x0 of shape [B, N, D]:
    one timestep per image, shared by its boxes and embeddings as the paper keeps α_t common).
    """
    a = _schedule_at(alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


# --- signal spaces (Eq. 10) ------------------------------------------------------------------


def boxes_to_signal(boxes_cxcywh01: torch.Tensor, scale: float) -> torch.Tensor:
    """s1·(2b − 1) of Eq. 10; b is clamped to [0, 1] first, as DiffusionDet clamps x̂0 to ±s."""
    return (boxes_cxcywh01.clamp(0, 1) * 2 - 1) * scale


def signal_to_boxes(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Inverse of `boxes_to_signal` for noisy x: clamp to [−s, s], back to cxcywh in [0, 1]."""
    return (x.clamp(-scale, scale) / scale + 1) / 2


def _check_norm(norm: str) -> None:
    if norm not in EMB_NORMS:
        raise PsdiffError(f"MODEL.PSDIFF.EMB_NORM = '{norm}' is not one of {EMB_NORMS}")


def embeddings_to_signal(e: torch.Tensor, scale: float, norm: str) -> torch.Tensor:
    """s2·Norm(e) of Eq. 10, over the last dim of `e` (D values).

    "l2": unit L2 norm, unclamped; each value is about ±1/√D, so noise swamps it at small t.
    "l2_sqrt_dim" (default): unit L2 × √D clamped to [−1, 1]: each value has RMS ≈ 1 like a
    box's 2b − 1, so s2 is an SNR on the box's scale, as Table IV (a) ablates it beside s1.
    """
    _check_norm(norm)
    unit = F.normalize(e, dim=-1)
    if norm == "l2_sqrt_dim":
        unit = (unit * math.sqrt(e.shape[-1])).clamp(-1, 1)
    return unit * scale


def signal_to_embeddings(x: torch.Tensor, scale: float, norm: str) -> torch.Tensor:
    """Noisy signal back to a unit-L2 embedding: clamp to [−s, s] like boxes, then normalize.

    The inverse is the same for both norms: the √D factor of "l2_sqrt_dim" cancels in the
    normalization, and the teacher's targets e0 are unit vectors.
    """
    _check_norm(norm)
    return F.normalize(x.clamp(-scale, scale), dim=-1)


# --- ground-truth duplication (Sec. IV-B2) ----------------------------------------------------


def pad_indices(num_gt: int, num: int, rule: str, generator=None) -> torch.Tensor:
    """Source GT index of each of `num` diffusion slots (LongTensor[num]); −1 marks a placeholder.

    "repeat" (default, the paper's "uniformly duplicated"): every GT fills ⌊num/M⌋ slots and
    (num mod M) GTs drawn at random one more. "random_fill" (DiffusionDet): each GT once, the rest
    placeholders. Either way more GTs than slots gives a random subset of `num` GTs, and
    M = 0 (no persons) gives only placeholders. `generator` is a CPU torch.Generator.
    """
    if rule not in GT_PADDINGS:
        raise PsdiffError(f"MODEL.PSDIFF.GT_PADDING = '{rule}' is not one of {GT_PADDINGS}")
    if num_gt >= num:
        return torch.randperm(num_gt, generator=generator)[:num]
    if num_gt == 0 or rule == "random_fill":
        return torch.cat([torch.arange(num_gt), torch.full((num - num_gt,), -1)])
    extra = torch.randperm(num_gt, generator=generator)[: num % num_gt]
    return torch.cat([torch.arange(num_gt).repeat(num // num_gt), extra])


def _randn64(shape, generator=None) -> torch.Tensor:
    """A float64 standard-normal draw on the generator's device (the CPU without one)."""
    device = None if generator is None else generator.device
    return torch.randn(shape, generator=generator, dtype=torch.float64, device=device)


def random_boxes(shape, generator=None) -> torch.Tensor:
    """DiffusionDet's placeholder boxes: cxcywh ~ N(0.5, (1/6)²) per value, w and h ≥ 1e-4."""
    boxes = _randn64(shape, generator) / 6 + 0.5
    boxes[..., 2:] = boxes[..., 2:].clamp(min=1e-4)
    return boxes


def random_embeddings(shape, generator=None) -> torch.Tensor:
    """Placeholder embeddings: directions uniform on the unit sphere (normalized Gaussians)."""
    return F.normalize(_randn64(shape, generator), dim=-1)


def gather_padded(values: torch.Tensor, index: torch.Tensor, fill, generator=None):
    """Rows `values[index]`; rows with index −1 come from `fill(shape, generator)`.

    Pads a second per-GT quantity (e.g. embeddings, with `fill=random_embeddings`) with the
    index returned by `pad_ground_truth`, so box i and embedding i stay the same person.
    """
    index = index.to(values.device)
    out = values.new_zeros((len(index),) + tuple(values.shape[1:]))
    real = index >= 0
    if real.any():
        out[real] = values[index[real]]
    num_holes = int((~real).sum())
    if num_holes:
        out[~real] = fill((num_holes,) + tuple(values.shape[1:]), generator).to(out)
    return out


def pad_ground_truth(gt: torch.Tensor, num: int, rule: str, generator=None, fill=random_boxes):
    """GT rows [M, ...] duplicated up to `num` rows (see `pad_indices`) -> (padded, index).

    Placeholder rows (index −1) are drawn by `fill`; the default suits cxcywh boxes in [0, 1].
    """
    index = pad_indices(len(gt), num, rule, generator)
    return gather_padded(gt, index, fill, generator), index.to(gt.device)


# --- samplers (Algorithm 2, Table V) ------------------------------------------------------------


def sampling_timesteps(num_steps: int, num_timesteps: int) -> list:
    """DiffusionDet's time pairs: int(linspace(−1, T−1, S+1)) descending; −1 stands for x0."""
    times = torch.linspace(-1, num_timesteps - 1, num_steps + 1, dtype=torch.float64)
    return [int(v) for v in times.tolist()][::-1]


def ddim_update(x_t, x0_pred, a, a_next, eta, noise=None):
    """DDIM from ᾱ = `a` to ᾱ' = `a_next` (Python floats, so x keeps its dtype):
    ε̂ = (x_t − √ᾱ·x̂0)/√(1−ᾱ); σ = η·√((1 − ᾱ/ᾱ')(1 − ᾱ')/(1 − ᾱ));
    x' = √ᾱ'·x̂0 + √(1 − ᾱ' − σ²)·ε̂ + σ·z. With η = 0 it is the first-order DPM-Solver step."""
    eps = (x_t - math.sqrt(a) * x0_pred) / math.sqrt(1 - a)
    sigma = eta * math.sqrt((1 - a / a_next) * (1 - a_next) / (1 - a))
    x = math.sqrt(a_next) * x0_pred + math.sqrt(max(1 - a_next - sigma**2, 0.0)) * eps
    return x + sigma * noise if sigma > 0 else x


class Sampler:
    """One fast sampler for one diffused quantity: `timesteps` and a `step` per network call.

    The network predicts x̂0 (in signal space); `step(i, x_t, x0_pred)` returns x at
    `timesteps[i + 1]`, or `x0_pred` itself after the last step. Rows are the leading dims of x.
    """

    eta = 0.0  # DDIM's η (`ddim`); the solvers are deterministic
    generator = None  # where `ddim` draws z when none is given

    def __init__(self, alphas_cumprod: torch.Tensor, num_steps: int, num_timesteps: int = 1000):
        if len(alphas_cumprod) != num_timesteps:
            raise PsdiffError(f"schedule has {len(alphas_cumprod)} steps, "
                              f"MODEL.PSDIFF.NUM_TIMESTEPS = {num_timesteps}")
        if not 1 <= num_steps <= num_timesteps:
            raise PsdiffError(
                f"MODEL.PSDIFF.SAMPLE_STEPS = {num_steps} must be in [1, {num_timesteps}]"
            )
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        times = sampling_timesteps(num_steps, num_timesteps)
        self.timesteps = times[:-1]
        self.next_timesteps = times[1:]

    def alpha_sigma(self, t: int):
        """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) as Python floats, so x keeps its own dtype."""
        a = float(self.alphas_cumprod[t])
        return math.sqrt(a), math.sqrt(1 - a)

    def step(self, i: int, x_t: torch.Tensor, x0_pred: torch.Tensor, noise=None) -> torch.Tensor:
        raise NotImplementedError

    def reset_rows(self, mask: torch.Tensor) -> None:
        """Forget the history of rows just renewed with fresh noise (no-op for one-step rules)."""

    def restart_step(self, i, x_t, x0_pred, noise=None):
        """The update of rows that entered step i as pure noise at t = T − 1 (renewal with
        RENEWAL_RESTART "noise"): DDIM from T − 1 to the next step's t, with DDIM's η, or first
        order (η = 0) for the solvers, as their renewed rows."""
        return self.ddim(len(self.alphas_cumprod) - 1, i, x_t, x0_pred, noise)

    def ddim(self, t, i, x_t, x0_pred, noise=None):
        """`ddim_update` from step t to step i's next t (x̂0 itself after the last step), with
        `self.eta`; `noise` (z) defaults to a draw from `self.generator` (CPU)."""
        t_next = self.next_timesteps[i]
        if t_next < 0:
            return x0_pred
        if self.eta > 0 and noise is None:
            noise = torch.randn(x_t.shape, generator=self.generator).to(x_t)
        return ddim_update(x_t, x0_pred, float(self.alphas_cumprod[t]),
                           float(self.alphas_cumprod[t_next]), self.eta, noise)


class DDIMSampler(Sampler):
    """DDIM (Song et al., `ddim_update`), as DiffusionDet's `ddim_sample`; eta = 1 adds fresh
    noise each step."""

    def __init__(self, alphas_cumprod, num_steps, num_timesteps=1000, eta=1.0, generator=None):
        super().__init__(alphas_cumprod, num_steps, num_timesteps)
        self.eta = eta
        self.generator = generator

    def step(self, i, x_t, x0_pred, noise=None):
        """One DDIM update; `noise` (z) defaults to a draw from `self.generator` (CPU)."""
        return self.ddim(self.timesteps[i], i, x_t, x0_pred, noise)


class DPMSolverSampler(Sampler):
    """Multistep second-order DPM-Solver ("2M", Lu et al. 2022) in noise or data prediction.

    With λ = log(α/σ) and h = λ' − λ, first order (= deterministic DDIM):
      noise (DPM-Solver):   x' = (α'/α)·x − σ'·(e^h − 1)·ε̂
      data (DPM-Solver++):  x' = (σ'/σ)·x − α'·(e^−h − 1)·x̂0
    From the second step on, the model output m (ε̂ or x̂0) is replaced by m + ½·D1 with
    D1 = (m − m_prev)/r, r = (λ − λ_prev)/h; rows renewed since the previous step stay first order.
    """

    def __init__(self, alphas_cumprod, num_steps, num_timesteps=1000, data_prediction=True):
        super().__init__(alphas_cumprod, num_steps, num_timesteps)
        self.data_prediction = data_prediction
        self._prev = None  # (step index, model output, rows whose output is still valid)

    def _lambda(self, t: int) -> float:
        alpha, sigma = self.alpha_sigma(t)
        return math.log(alpha) - math.log(sigma)

    def step(self, i, x_t, x0_pred, noise=None):
        """One multistep update; `noise` is unused (the solver is deterministic)."""
        t, t_next = self.timesteps[i], self.next_timesteps[i]
        if t_next < 0:
            self._prev = None
            return x0_pred
        (alpha, sigma), (alpha_n, sigma_n) = self.alpha_sigma(t), self.alpha_sigma(t_next)
        h = self._lambda(t_next) - self._lambda(t)
        if self.data_prediction:
            out = x0_pred
            x = (sigma_n / sigma) * x_t - alpha_n * math.expm1(-h) * out
            coef = -0.5 * alpha_n * math.expm1(-h)
        else:
            out = (x_t - alpha * x0_pred) / sigma
            x = (alpha_n / alpha) * x_t - sigma_n * math.expm1(h) * out
            coef = -0.5 * sigma_n * math.expm1(h)
        if self._prev is not None and self._prev[0] == i - 1:
            _, prev_out, valid = self._prev
            r = (self._lambda(t) - self._lambda(self.timesteps[i - 1])) / h
            second = x + coef * (out - prev_out) / r
            x = torch.where(valid.unsqueeze(-1), second, x)
        self._prev = (i, out, torch.ones(out.shape[:-1], dtype=torch.bool, device=out.device))
        return x

    def reset_rows(self, mask: torch.Tensor) -> None:
        """Rows in `mask` (BoolTensor over x's leading dims) take a first-order next step."""
        if self._prev is not None:
            i, out, valid = self._prev
            self._prev = (i, out, valid & ~mask.to(valid.device))


SAMPLERS = ("DDIM", "DPM_SOLVER", "DPM_SOLVER_PP")  # MODEL.PSDIFF.SAMPLER choices (Table V)


def build_sampler(name, alphas_cumprod, num_steps, num_timesteps=1000, eta=1.0, generator=None):
    """The sampler named by MODEL.PSDIFF.SAMPLER; `eta` and `generator` only matter for DDIM."""
    if name == "DDIM":
        return DDIMSampler(alphas_cumprod, num_steps, num_timesteps, eta, generator)
    if name in ("DPM_SOLVER", "DPM_SOLVER_PP"):
        return DPMSolverSampler(alphas_cumprod, num_steps, num_timesteps, name == "DPM_SOLVER_PP")
    raise PsdiffError(f"MODEL.PSDIFF.SAMPLER = '{name}' is not one of {SAMPLERS}")
