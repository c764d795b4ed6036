"""The torch policy, its training objectives and checkpoints, against the numpy sampler."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.sampler import legato_sample  # noqa: E402
from edge.schedule import omega_batch  # noqa: E402
from legato import checkpoint  # noqa: E402
from legato.baselines import guidance_weight, rtc_soft_mask  # noqa: E402
from legato.config import TrainConfig  # noqa: E402
from legato.errors import CheckpointError, MethodError  # noqa: E402
from legato.objectives import build_example, legato_example, prefix_perturbation, rtc_train_example  # noqa: E402
from legato.runner import ChunkRequest, TorchPolicyRunner, check_request  # noqa: E402
from legato.torch_sampler import legato_sample_torch  # noqa: E402
from legato.train import train  # noqa: E402
from sim.env import ReachEnv  # noqa: E402
from sim.episodes import sample_episodes  # noqa: E402


def _obs(ck, b=3):
    spec = sample_episodes(ck.task, seed=1000, count=b)
    return ReachEnv(ck.task, spec.scenes, spec.template).observe()


def test_torch_runner_chunks_are_the_reference_sampler_over_the_torch_model(tiny_checkpoints):
    """The evaluation's chunks come from the robot's ChunkDenoiser over a torch field: equal to
    the bit to the readable reference (edge.sampler + Normalizer) on the same torch head, and to
    the torch sampler within float32 rounding."""
    from edge.sampler import pad_reference
    from edge.schedule import omega_schedule

    ck = checkpoint.load(tiny_checkpoints["legato"])
    runner = TorchPolicyRunner(ck)
    obs = _obs(ck)
    rng = np.random.default_rng(0)
    h, a, n = ck.policy_cfg.horizon, ck.policy_cfg.action_dim, ck.policy_cfg.num_steps
    eps = rng.standard_normal((3, h, a)).astype(np.float32)
    prev = rng.standard_normal((3, h, a)).astype(np.float32)
    req = ChunkRequest(d=2, s=8, r=4)
    got = runner.chunk("legato", obs, prev, req, eps)
    state = torch.from_numpy(ck.norm.state(obs.state))
    with torch.no_grad():
        kv = ck.model.prefix(torch.from_numpy(obs.image), torch.from_numpy(obs.tokens), state)

    @torch.no_grad()
    def vel(y, t, w):
        return ck.model.head(torch.from_numpy(y), torch.from_numpy(t), torch.from_numpy(w), state, kv).numpy()

    a_ref = ck.norm.action(pad_reference(prev[:, 8:], h), obs.state)
    omega = np.broadcast_to(omega_schedule(2, 4, h), (3, h)).copy()
    want = ck.norm.unaction(legato_sample(vel, eps, a_ref, omega, n), obs.state)
    np.testing.assert_array_equal(got, want)
    theirs = legato_sample_torch(ck.model.head, kv, state, torch.from_numpy(eps), torch.from_numpy(a_ref),
                                 torch.from_numpy(omega), n).numpy()  # fmt: skip
    np.testing.assert_allclose(ck.norm.action(got, obs.state), theirs, atol=1e-5, rtol=0)
    first = runner.chunk("legato", obs, None, req, eps)  # no reference: plain sampling
    zeros = np.zeros((3, h), np.float32)
    plain = legato_sample(vel, eps, np.zeros_like(eps), zeros, n)
    np.testing.assert_array_equal(first, ck.norm.unaction(plain, obs.state))


@pytest.mark.parametrize("weighting", ["omega2", "mean"])
def test_training_inputs_and_targets_are_what_the_sampler_sees(weighting):
    """Feed the torch training target at each t_k to the numpy sampler as its velocity: the
    sampler's inputs Y_k equal the training inputs and the chunk lands on A."""
    g = torch.Generator().manual_seed(0)
    n, h, a, steps = 4, 16, 3, 5
    A, eps = (
        torch.randn(n, h, a, generator=g, dtype=torch.float64),
        torch.randn(n, h, a, generator=g, dtype=torch.float64),
    )
    omega = torch.from_numpy(omega_batch(np.array([0, 1, 3, 4]), np.array([8, 0, 4, 2]), h)).double()
    t_k = [torch.full((n,), k / steps, dtype=torch.float64) for k in range(steps)]
    examples = [legato_example(A, eps, t_k[k], omega, steps, weighting)
                for k in range(steps)]  # fmt: skip
    calls = []

    def v(y, t, om):
        ex = examples[len(calls)]
        np.testing.assert_allclose(y, ex.y.numpy(), atol=1e-12)
        np.testing.assert_allclose(t, ex.t.numpy(), atol=1e-12)
        calls.append(1)
        return ex.target.numpy()

    out = legato_sample(v, eps.numpy(), A.numpy(), omega.numpy(), steps)
    np.testing.assert_allclose(out, A.numpy(), atol=1e-12)
    assert len(calls) == steps
    w = examples[0].weight
    if weighting == "omega2":
        torch.testing.assert_close(w, (1 - omega) ** 2)
    else:
        torch.testing.assert_close(w, (omega < 1).double())


def test_prefix_perturbation_offsets_the_reference_then_returns_to_the_expert():
    rng = np.random.default_rng(0)
    d, r = np.array([0, 2, 0, 4]), np.array([0, 3, 8, 0])
    delta = prefix_perturbation(d, r, 16, np.full(3, 0.03), recovery=6, rng=rng)  # (4, 16, 3)
    assert not delta[0].any()  # no reference: nothing to perturb
    for n, k in enumerate(d + r):
        if k == 0:
            continue
        assert np.abs(delta[n, :k]).max() > 0  # the reference is off ...
        assert not delta[n, k + 6 :].any()  # ... and the target is back on the expert's chunk
        steps = np.abs(np.diff(delta[n], axis=0)).max()
        assert steps < 0.03  # smoothly: no step larger than the offset's scale


def test_augmented_legato_examples_drop_or_perturb_the_reference():
    cfg = TrainConfig(method="legato", p_no_prefix=0.5, prefix_noise=0.05, p_prefix_noise=1.0)
    n, h, a = 256, 16, 3
    A, eps = torch.randn(n, h, a, dtype=torch.float64), torch.randn(n, h, a, dtype=torch.float64)
    ex = build_example(A, eps, cfg, 5, np.random.default_rng(3), np.full((h, a), 0.1))
    bare = (ex.omega == 0).all(1)
    assert 0.45 < bare.double().mean() < 0.65  # p_no_prefix plus the natural d = r = 0 draws
    # Undo the mixture with the expert's chunk: what is left is the perturbation, and only
    # examples with a reference carry one.
    t, w = ex.t[..., None], ex.omega[..., None]
    clean_y = (1 - w) * ((1 - t) * eps + t * A) + w * A
    moved = (ex.y - clean_y).abs().amax((1, 2))
    assert (moved[~bare] > 1e-4).all() and (moved[bare] < 1e-12).all()


def test_rtc_train_example_has_a_clean_prefix_at_time_one():
    A, eps = torch.randn(2, 8, 2), torch.randn(2, 8, 2)
    ex = rtc_train_example(A, eps, torch.tensor([0.2, 0.6]), np.array([3, 0]))
    torch.testing.assert_close(ex.y[0, :3], A[0, :3])
    torch.testing.assert_close(ex.t[0], torch.tensor([1, 1, 1, 0.2, 0.2, 0.2, 0.2, 0.2]))
    torch.testing.assert_close(ex.weight[0], torch.tensor([0, 0, 0, 1, 1, 1, 1, 1.0]))
    torch.testing.assert_close(ex.y[1], 0.4 * eps[1] + 0.6 * A[1])


def test_rtc_soft_mask_and_guidance_weight():
    w = rtc_soft_mask(d=2, s=8, horizon=16)
    np.testing.assert_allclose(w[:2], 1.0)
    np.testing.assert_allclose(w[8:], 0.0)
    c = (16 - 8 - 2) / (16 - 8 - 2 + 1)
    np.testing.assert_allclose(w[2], c * (np.exp(c) - 1) / (np.e - 1), rtol=1e-6)
    assert np.all(np.diff(w[2:8]) < 0)
    assert guidance_weight(0.0, 5.0) == 5.0
    assert guidance_weight(0.8, 5.0) == pytest.approx(0.2 / 0.8 * (0.64 + 0.04) / 0.04)


def test_short_training_run_lowers_the_loss(demos_path, tmp_path, tiny):
    cfg = TrainConfig(
        method="legato", steps=80, batch_obs=8, draws=4, lr=3e-3, warmup=5, log_every=1, ckpt_every=1000
    )
    out = train(demos_path, tmp_path / "run", cfg, tiny, show_progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 80
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), (losses[:10], losses[-10:])


def test_checkpoint_round_trips_and_resume_continues(demos_path, tmp_path, tiny):
    cfg = TrainConfig(method="plain", steps=6, batch_obs=4, draws=2, warmup=2, ckpt_every=3)
    out = train(demos_path, tmp_path / "run", cfg, tiny, show_progress=False)
    ck = checkpoint.load(out)
    assert ck.method == "plain" and ck.policy_cfg.width == 32 and ck.meta["training"]["step"] == 6
    pub = checkpoint.publish(out, tmp_path / "pub")
    ck2 = checkpoint.load(pub)
    for (k, v), (k2, v2) in zip(ck.model.state_dict().items(), ck2.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    np.testing.assert_array_equal(ck2.norm.action_mean, ck.norm.action_mean)
    names = sorted(p.name for p in pub.iterdir())
    assert names == [".legato-output.json", "config.json", "model.safetensors"]
    longer = TrainConfig(method="plain", steps=9, batch_obs=4, draws=2, warmup=2, ckpt_every=3)
    train(demos_path, out, longer, tiny, resume=True, show_progress=False)
    assert checkpoint.load(out).meta["training"]["step"] == 9


def test_factored_head_scales_the_same_network_by_legatos_known_factor(tiny):
    from dataclasses import replace

    from legato.model import FlowHead

    torch.manual_seed(0)
    factored = FlowHead(tiny)
    direct = FlowHead(replace(tiny, velocity_form="direct"))
    direct.load_state_dict(factored.state_dict())
    n, h, a = 3, tiny.horizon, tiny.action_dim
    y, state = torch.randn(n, h, a), torch.randn(n, tiny.state_dim)
    t = torch.tensor([0.0, 0.4, 0.8])[:, None].expand(n, h)
    omega = torch.from_numpy(omega_batch(np.array([0, 2, 4]), np.array([8, 3, 0]), h))
    kv = torch.randn(n, tiny.head_layers, 2, 5, tiny.width)
    factor = (1 - omega * tiny.num_steps * (1 - t))[..., None]
    torch.testing.assert_close(factored(y, t, omega, state, kv), factor * direct(y, t, omega, state, kv))
    zero = torch.zeros(n, h)  # plain flow inputs: the factor is exactly 1
    torch.testing.assert_close(factored(y, t, zero, state, kv), direct(y, t, zero, state, kv))


def test_checkpoints_from_before_round_two_load_with_their_own_recipe(tiny_checkpoints, tmp_path):
    old = checkpoint.publish(tiny_checkpoints["legato"], tmp_path / "old")
    cfg = json.loads((old / "config.json").read_text())
    for key in ("velocity_form",):
        del cfg["policy"][key]
    for key in ("p_no_prefix", "prefix_noise", "p_prefix_noise", "recovery"):
        del cfg["train"][key]
    (old / "config.json").write_text(json.dumps(cfg))
    ck = checkpoint.load(old)
    assert ck.policy_cfg.velocity_form == "direct"
    assert ck.train_cfg.p_no_prefix == 0.0 and ck.train_cfg.prefix_noise == 0.0


def test_broken_checkpoints_get_one_line_errors(tiny_checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing")
    bad = checkpoint.publish(tiny_checkpoints["plain"], tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(bad)
    wrong = checkpoint.publish(tiny_checkpoints["plain"], tmp_path / "wrong")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["policy"]["width"] = 48
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.load(wrong)
    (wrong / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(wrong)


def test_runner_refuses_what_the_checkpoint_was_not_trained_for(tiny_checkpoints):
    legato_ck = checkpoint.load(tiny_checkpoints["legato"])
    plain_ck = checkpoint.load(tiny_checkpoints["plain"])
    ok = ChunkRequest(d=2, s=8, r=4)
    check_request("legato", legato_ck.spec, ok)
    with pytest.raises(MethodError, match="d_max"):
        check_request("legato", legato_ck.spec, ChunkRequest(d=5, s=8, r=0))
    with pytest.raises(MethodError, match="N=3"):
        check_request("legato", legato_ck.spec, ok, num_steps=3)
    with pytest.raises(MethodError, match="trained with 'legato'"):
        check_request("legato", plain_ck.spec, ok)
    with pytest.raises(MethodError, match="d <= s"):
        check_request("naive", plain_ck.spec, ChunkRequest(d=3, s=2, r=0))
    with pytest.raises(MethodError, match="overlap"):
        check_request("legato", legato_ck.spec, ChunkRequest(d=2, s=8, r=7))


@pytest.mark.parametrize("d, s", [(0, 8), (4, 4), (3, 8)])
def test_chunks_switch_on_schedule_at_the_protocol_edges(tiny_checkpoints, d, s):
    """d == 0 executes the new chunk at once; d == s infers continuously; every async chunk
    after the first takes over at its index d and runs s steps."""
    from legato.rollout import rollout

    ck = checkpoint.load(tiny_checkpoints["legato"])
    spec = sample_episodes(ck.task, seed=1000, count=2)
    res = rollout(TorchPolicyRunner(ck), "legato", ck.task, spec.scenes, spec.template,
                  ChunkRequest(d=d, s=s, r=0), seed=0, max_steps=60)  # fmt: skip
    starts = [c.start for c in res.chunks]
    assert starts[0] == d
    assert all(c.start - c.origin == d for c in res.chunks[1:])
    assert np.all(np.diff(starts[1:]) == s) and starts[1] - starts[0] == s + d
    # each episode commands finite targets until it ends (NaN after), and only an ended episode stops
    fin = np.isfinite(res.commanded[:, :60]).all(axis=-1)  # (b, t)
    for b in range(len(fin)):
        n = int(fin[b].sum())
        assert fin[b, :n].all() and not fin[b, n:].any()
        assert n == 60 or res.success[b] or res.collided[b]


def test_every_method_produces_finite_chunks_in_a_rollout(tiny_checkpoints):
    from legato.rollout import rollout

    for method, name in [("naive", "plain"), ("sync", "plain"), ("rtc", "plain"), ("rtc-train", "rtc-train"),
                         ("legato", "legato")]:  # fmt: skip
        ck = checkpoint.load(tiny_checkpoints[name])
        spec = sample_episodes(ck.task, seed=1000, count=2)
        res = rollout(TorchPolicyRunner(ck), method, ck.task, spec.scenes, spec.template,
                      ChunkRequest(d=2, s=6, r=4), seed=0, max_steps=40)  # fmt: skip
        assert len(res.chunks) >= 3
        assert all(np.all(np.isfinite(c.chunk)) for c in res.chunks)
        second = res.chunks[1]
        # Before the first chunk arrives, every method holds the start posture for d steps.
        np.testing.assert_allclose(res.commanded[:, :2], np.repeat(spec.scenes.q0[:, None], 2, 1), atol=1e-6)
        # The second chunk takes over at d + s + d. Asynchronous methods start it at the first
        # chunk's index s (it continues the executed prefix: takes over at its own index d); sync
        # holds while it is computed and starts it at index 0 when it takes over.
        assert second.start == 2 + 6 + 2
        assert second.start - second.origin == (0 if method == "sync" else 2)


def test_ema_run_saves_the_average_and_resume_continues_it(demos_path, tmp_path, tiny):
    """With --ema-decay the checkpoint inference loads is the moving average of the weights the
    optimizer stepped (kept beside it for --resume): after one step the two are equal (the first
    update copies), one resumed step later the average is decay * w1 + (1 - decay) * w2."""
    from safetensors.torch import load_file

    def cfg(steps: int, decay: float = 0.25) -> TrainConfig:
        return TrainConfig(method="plain", steps=steps, batch_obs=4, draws=2, warmup=2, ckpt_every=1,
                           ema_decay=decay)  # fmt: skip

    out = train(demos_path, tmp_path / "run", cfg(1), tiny, show_progress=False)
    w1 = load_file(str(out / checkpoint.TRAIN_WEIGHTS))
    for k, v in checkpoint.load(out).model.state_dict().items():
        assert torch.equal(v, w1[k]), k
    train(demos_path, out, cfg(2), tiny, resume=True, show_progress=False)
    w2 = load_file(str(out / checkpoint.TRAIN_WEIGHTS))
    averaged = checkpoint.load(out).model.state_dict()
    moved = [k for k in w2 if not torch.equal(w1[k], w2[k])]
    assert moved, "the second step changed no weight"
    for k in moved:
        torch.testing.assert_close(averaged[k], 0.25 * w1[k] + 0.75 * w2[k])
    from edge.errors import UsageError

    with pytest.raises(UsageError, match="--ema-decay 0.25"):
        train(demos_path, out, cfg(3, decay=0.0), tiny, resume=True, show_progress=False)
    pub = checkpoint.publish(out, tmp_path / "pub")  # what inference needs: the average alone
    assert checkpoint.TRAIN_WEIGHTS not in {p.name for p in pub.iterdir()}
