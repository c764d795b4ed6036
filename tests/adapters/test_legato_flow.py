"""Legato in LeRobot's time convention (t = 1 noise): legato.md's numerical check holds in both
conventions, and the boundary conversion of the training example is exact."""

from __future__ import annotations

import numpy as np
import torch

from edge.sampler import legato_sample
from edge.schedule import omega_batch
from legato.adapters.legato_flow import LegatoHead, sample_legato, to_lerobot
from legato.objectives import legato_example


def _draw(seed: int, n: int = 3, h: int = 12, a: int = 4):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, h, a))
    eps = rng.normal(size=(n, h, a))
    d, r = rng.integers(0, 4, n), rng.integers(0, 6, n)
    return A, eps, omega_batch(d, r, h).astype(np.float64)


def test_check_in_lerobot_convention_ends_exactly_at_the_chunk():
    """v_lerobot = (1 - omega N tau)(eps - A); run from eps with A_ref = A: ends at A, and every
    blended Y_k equals the training mixture at t_k (legato.md, "Check")."""
    N = 5
    for seed in range(5):
        A, eps, omega = _draw(seed)
        seen = []

        def v_t1(y, tau, om, A=A, eps=eps, seen=seen):
            seen.append((y.copy(), 1 - tau[0]))
            return (1 - om * N * tau[:, None])[..., None] * (eps - A)

        out = sample_legato(v_t1, eps, A, omega, N)
        assert np.abs(out - A).max() < 1e-12
        w = omega[..., None]
        for y, t in seen:
            x_t = (1 - t) * eps + t * A
            assert np.abs(y - ((1 - w) * x_t + w * A)).max() < 1e-12


def test_check_in_legato_convention_through_the_edge_sampler():
    N = 5
    A, eps, omega = _draw(7)
    v = lambda y, t, om: (1 - om * N * (1 - t))[..., None] * (A - eps)  # noqa: E731
    assert np.abs(legato_sample(v, eps, A, omega, N) - A).max() < 1e-12


def test_converted_training_example_is_the_lerobot_target():
    A, eps, omega = (torch.from_numpy(x).float() for x in _draw(3))
    t = torch.tensor([0.0, 0.4, 0.8])
    N = 5
    ex = to_lerobot(legato_example(A, eps, t, omega, N, "omega2"))
    tau = ex.t[:, :1]
    assert torch.allclose(ex.target, ((1 - omega * N * tau)[..., None] * (eps - A)), atol=1e-6)
    x_tau = tau[..., None] * eps + (1 - tau[..., None]) * A  # LeRobot's interpolant
    assert torch.allclose(ex.y, (1 - omega[..., None]) * x_tau + omega[..., None] * A, atol=1e-6)


def test_head_puts_omega_in_a_padded_dim_and_keeps_omega_zero_plain():
    head = LegatoHead(num_steps=5, omega_dim=7)
    x = torch.randn(2, 4, 8)
    omega = torch.rand(2, 4)
    inp = head.inputs(x, omega)
    assert torch.equal(inp[..., :7], x[..., :7]) and torch.equal(inp[..., 7], omega)
    net = lambda y, t: y * 2  # noqa: E731
    tau = torch.tensor([0.3, 0.9])
    zeros = torch.zeros(2, 4)
    # omega = 0: exactly the LeRobot expert on its own (zero-padded) input
    assert torch.equal(head.velocity(net, x, tau, zeros), net(head.inputs(x, zeros), tau))
    v = head.velocity(net, x, tau, omega)
    assert torch.allclose(v, net(inp, tau) * (1 - omega * 5 * tau[:, None])[..., None])
