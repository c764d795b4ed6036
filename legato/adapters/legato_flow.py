"""Legato on a LeRobot-convention flow policy (t = 1 is noise): the boundary conversion.

legato.md derives Legato for t = 0 noise: x_t = (1 - t) eps + t A, input Y = (1 - omega) x_t +
omega A, target u = (1 - kappa (1 - t)) (A - eps), kappa = omega N. LeRobot's policies use
tau = 1 - t and predict d x / d tau, so at the boundary

    tau = 1 - t,    v_lerobot = -v_legato,    u_lerobot = (1 - omega N tau) (eps - A),

and the Euler step X + dt_lerobot v_lerobot with dt_lerobot = -1 / N is the same update as
X + (1 / N) v_legato. The mixture input Y is convention-free. omega reaches the expert as one
more per-action-token input in a padded action dimension (``omega_dim``), so a LeRobot
checkpoint stays loadable (omega = 0 leaves that input zero, as LeRobot pads it).

Velocity forms: "factored" multiplies the network's output by the known factor
(1 - omega N tau), so the network keeps LeRobot's own target eps - A on every token (a LeRobot
checkpoint is the omega = 0 case of it); "direct" lets the network predict the whole target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from legato.objectives import FlowExample

TIME_CONVENTION = "t1-noise"


@dataclass(frozen=True)
class LegatoHead:
    """How the Legato channel and factor sit on a LeRobot expert."""

    num_steps: int  # N, baked into the target
    omega_dim: int | None  # padded action dimension carrying omega; None: a plain LeRobot expert
    velocity_form: str = "factored"

    def inputs(self, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """x (b, H, A) -> x with omega (b, H) written into omega_dim (a concatenation, no in-place);
        unchanged for a plain LeRobot expert (its padded dims carry what LeRobot puts there)."""
        k = self.omega_dim
        if k is None:
            return x
        return torch.cat([x[..., :k], omega[..., None].to(x.dtype), x[..., k + 1 :]], -1)

    def factor(self, t_lerobot: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """(1 - omega N tau), (b, H); tau (b,) or (b, H)."""
        tau = t_lerobot[:, None] if t_lerobot.ndim == 1 else t_lerobot
        return 1 - omega * self.num_steps * tau

    def velocity(self, net, x: torch.Tensor, t_lerobot: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """net(x_with_omega, tau) -> LeRobot-convention velocity of the Legato policy (b, H, A)."""
        v = net(self.inputs(x, omega), t_lerobot)
        return v * self.factor(t_lerobot, omega)[..., None] if self.velocity_form == "factored" else v


def to_lerobot(ex: FlowExample) -> FlowExample:
    """A t0-noise FlowExample (legato.objectives) -> t1-noise: tau = 1 - t, target negated.
    Build it on actions zero-padded to max_action_dim with noise in every dim, as LeRobot's own
    training pads them (the padded dims then carry what they carry at inference)."""
    return FlowExample(ex.y, 1 - ex.t, ex.omega, -ex.target, ex.weight)


def sample_legato(
    velocity_t1, eps: np.ndarray, a_ref: np.ndarray, omega: np.ndarray, num_steps: int
) -> np.ndarray:
    """legato.md's forward-only sampler, in t0-noise, calling a t1-noise velocity at the boundary.
    eps, a_ref (b, H, A) normalised, omega (b, H); velocity_t1(Y, tau (b,), omega) -> (b, H, A)."""
    w = omega[..., None]
    x = eps
    dt = 1.0 / num_steps
    for k in range(num_steps):
        y = (1 - w) * x + w * a_ref
        tau = np.full(eps.shape[0], 1.0 - k * dt, eps.dtype)
        x = y + dt * -velocity_t1(y, tau, omega)
    return (1 - w) * x + w * a_ref
