"""legato.objectives: the corrective target (a reference that may be wrong) and its recovery."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.sampler import legato_sample  # noqa: E402
from legato.objectives import corrective_example, legato_example, recovery_target  # noqa: E402

N = 5


def draws(seed=0, n=3, h=16, a=3):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    omega = torch.rand(n, h, generator=g, dtype=torch.float64)
    omega[:, :2] = 1.0
    return r(n, h, a), r(n, h, a), r(n, h, a), omega


def test_the_sampler_run_on_the_corrective_target_ends_at_the_blend_of_expert_and_reference():
    """legato.md's check for A_ref != A: with v set to the target at each grid step, every
    blended input is the training input and the chunk is (1 - omega) A + omega A_ref."""
    a, ref, eps, omega = draws()

    def velocity(y, t, om):
        ex = corrective_example(
            a, ref, eps, torch.from_numpy(t[:, 0].copy()), torch.from_numpy(om), N, "omega2"
        )
        np.testing.assert_allclose(ex.y.numpy(), y, atol=1e-12)
        return ex.target.numpy()

    out = legato_sample(velocity, eps.numpy(), ref.numpy(), omega.numpy(), N)
    w = omega.numpy()[..., None]
    np.testing.assert_allclose(out, (1 - w) * a.numpy() + w * ref.numpy(), atol=1e-12)


def test_with_a_right_reference_it_is_legatos_target():
    a, _, eps, omega = draws(1)
    t = torch.rand(3, dtype=torch.float64)
    got = corrective_example(a, a, eps, t, omega, N, "omega2").target
    want = legato_example(a, eps, t, omega, N, "omega2").target
    torch.testing.assert_close(got, want)


def test_recovery_keeps_the_executed_prefix_and_fades_back_to_the_expert():
    h, rec = 16, 4
    expert = np.zeros((2, h, 1))
    ref = np.full((2, h, 1), 0.5)
    out = recovery_target(expert, ref, np.array([3, 0]), rec)
    assert np.all(out[0, :3] == 0.5)  # executed: the reference
    assert 0 < out[0, 3, 0] < 0.5 and np.all(np.diff(out[0, 2:9, 0]) <= 0)
    assert np.all(out[0, 3 + rec :] == 0.0)  # back on the expert's chunk
    assert np.all(out[1] == 0.0)  # no prefix, no reference: the expert


def test_corrective_head_outputs_the_factored_velocity_when_the_correction_is_zero():
    from dataclasses import replace

    from legato.config import PolicyConfig
    from legato.model import FlowHead

    cfg = replace(PolicyConfig(width=16, heads=2, head_layers=1), velocity_form="corrective")
    head = FlowHead(cfg)
    raw = torch.randn(2, 16, 6)
    t, omega = torch.rand(2, 16), torch.rand(2, 16)
    v = head.velocity(torch.cat([raw[..., :3], torch.zeros(2, 16, 3)], -1), t, omega)
    f = (1 - omega * cfg.num_steps * (1 - t))[..., None]
    torch.testing.assert_close(v, raw[..., :3] * f)


def test_the_recover_recipe_trains_with_own_references_and_round_trips(demos_path, tmp_path):
    from legato import checkpoint
    from legato.config import PolicyConfig, TrainConfig
    from legato.train import train

    cfg = TrainConfig(method="legato", steps=2, batch_obs=4, draws=2, warmup=1, ckpt_every=100,
                      reference_target="recover", p_own_reference=0.5)  # fmt: skip
    pcfg = PolicyConfig(width=16, heads=2, prefix_layers=1, head_layers=1, velocity_form="corrective")
    ck = checkpoint.load(train(demos_path, tmp_path / "run", cfg, pcfg, show_progress=False))
    assert ck.policy_cfg.velocity_form == "corrective" and ck.train_cfg.reference_target == "recover"
    assert ck.model.head.out.out_features == 2 * ck.policy_cfg.action_dim


def test_own_references_are_the_models_plan_from_s_steps_earlier_reindexed(demos_path):
    """At an episode's first row the earlier plan is the row's own (shift 0); later rows use the
    chunk planned s rows before, shifted by s."""
    from legato.data import ChunkSampler
    from legato.demos import load

    demos = load(demos_path)
    sampler = ChunkSampler(demos, None, 16, seed=0)
    first = int(demos.offsets[3])
    prev, full = sampler.earlier(np.array([first, first + 3, first + 20]), 8)
    assert prev.tolist() == [first, first, first + 12] and full.tolist() == [False, False, True]
