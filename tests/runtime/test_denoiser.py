"""edge.denoiser: the one chunk assembly, against the readable reference samplers."""

import numpy as np
import pytest
from rt_graphs import fake_adapter, fake_denoiser, fake_graphs, true_velocity

from edge.denoiser import ChunkDenoiser, EngineField, denoiser_for
from edge.errors import MethodError, UsageError
from edge.normalize import Normalizer
from edge.policy import ChunkRequest, default_ramp
from edge.sampler import hard_prefix_sample, legato_sample, pad_reference
from edge.schedule import omega_schedule


def spec(method="legato", n=5):
    """The fake model's sampler-level spec (edge.policy.ModelSpec)."""
    return fake_adapter(method, n).spec


def norm(rng):
    return fake_adapter().norm


def obs(rng, ad):
    return (
        rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
        rng.integers(0, 10, 4),
        rng.normal(size=6).astype(np.float32),
    )


def reference(ad, prefix, head, o, eps, prev_tail, req, method):
    """The readable path: edge.sampler's reference samplers and Normalizer, on a velocity function
    that calls the same fake head (in t = 0 noise, whatever the head's own convention)."""
    image, tokens, state = o
    nm, h, a, ap = ad.norm, ad.horizon, ad.action_dim, ad.action_pad
    feeds = {"image": image[None], "tokens": tokens[None], "state": nm.state(state[None])}
    ctx = {k: v.copy() for k, v in prefix(feeds).items()}
    flip = ad.time_convention == "t1-noise"

    def vel(y, t, w):
        tg = 1.0 - t if flip else t
        tg = tg if ad.hard_prefix else tg[:, :1].reshape(1)
        v = head({"y": y, "t": tg.astype(np.float32), "omega": w, **ctx})["v"]
        return -v if flip else v

    if prev_tail is None:
        x = legato_sample(vel, eps, np.zeros_like(eps), np.zeros((1, h), np.float32), ad.num_steps)
    else:
        a_ref = np.zeros((1, h, ap), np.float32)
        a_ref[..., :a] = nm.action(pad_reference(prev_tail[None], h), state[None])
        if method == "legato":
            w = omega_schedule(req.d, req.r, h)[None]
            x = legato_sample(vel, eps, a_ref, w, ad.num_steps, req.final_blend)
        else:
            x = hard_prefix_sample(vel, eps, a_ref, req.d, ad.num_steps)
    return nm.unaction(x[..., :a], state[None])[0]


MODES_M = {"legato": "legato", "hard-prefix": "rtc-train", "naive": "naive"}


def _run_pair(ad, mode, d, seed, s=8, final_blend=True):
    rng = np.random.default_rng(seed)
    prefix, head = fake_graphs(ad)
    den = denoiser_for(ad, {"prefix": prefix, "flow_head": head}, mode=mode)
    req = ChunkRequest(d=d, s=s, r=default_ramp(ad.spec, d, s), final_blend=final_blend)
    out = []
    for first in (True, False):
        o = obs(rng, ad)
        eps = rng.standard_normal(den.noise_shape).astype(np.float32)
        tail = None if first else rng.normal(size=(16 - s, ad.action_dim)).astype(np.float32)
        den.set_observation(*o)
        got = den.denoise(eps, tail, req).copy()
        want = reference(ad, prefix, head, o, eps, None if mode == "naive" else tail, req, MODES_M[mode])
        out.append((got, want, tail))
    return den, out


@pytest.mark.parametrize(
    "mode,method", [("legato", "legato"), ("hard-prefix", "rtc-train"), ("naive", "plain")]
)
@pytest.mark.parametrize("d", [0, 1, 3])
def test_denoiser_is_the_reference_sampler_to_the_bit(mode, method, d):
    """One chunk assembly: the buffered sampler does the reference's arithmetic, operation for
    operation, so the chunks are equal, not close."""
    den, pairs = _run_pair(fake_adapter(method), mode, d, seed=d)
    for got, want, _ in pairs:
        np.testing.assert_array_equal(got, want)
    got, _, tail = pairs[-1]
    if mode == "legato" and d > 0:  # the frozen prefix executes the reference
        np.testing.assert_allclose(got[:d], tail[:d], atol=2e-5)
    st = dict(zip(den.stage_names, den.stage_ns, strict=True))
    stages = sum(v for k, v in st.items() if k not in ("engines", "chunk"))
    assert 0 < st["engines"] <= stages <= st["chunk"]


def test_the_final_blend_switch_is_the_references():
    _, pairs = _run_pair(fake_adapter(), "legato", 2, seed=5, final_blend=False)
    for got, want, _ in pairs:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_chunk_time", [False, True])
def test_a_t1_noise_head_is_converted_at_its_boundary(per_chunk_time):
    """A LeRobot-convention head (t = 1 noise, v pointing to the noise, optionally one t per
    chunk) gives the same chunks as the t0-noise head of the same field."""
    t1 = fake_adapter(time="t1-noise", per_chunk_time=per_chunk_time)
    _, pairs = _run_pair(t1, "legato", 2, seed=3)
    for got, want, _ in pairs:
        np.testing.assert_allclose(got, want, atol=1e-6)
    _, same = _run_pair(fake_adapter(), "legato", 2, seed=3)
    for (a, _, _), (b, _, _) in zip(pairs, same, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_padded_action_dims_are_sampled_and_dropped():
    """Graphs with more action dims than the robot (LeRobot pads to 32): the noise has the padded
    shape, the reference is zero on the padding, the robot gets the first a dims."""
    ad = fake_adapter(action_pad=5)
    den, pairs = _run_pair(ad, "legato", 2, seed=1)
    assert den.noise_shape == (1, 16, 5) and den.chunk.shape == (16, 3)
    for got, want, _ in pairs:
        np.testing.assert_array_equal(got, want)
    with pytest.raises(MethodError, match=r"noise has shape \(1, 16, 3\); the policy samples \(1, 16, 5\)"):
        den.denoise(np.zeros((1, 16, 3), np.float32), None, ChunkRequest(d=0, s=8, r=0))


def test_mean_std_normalisation_with_epsilons_is_the_normalizers():
    rng = np.random.default_rng(2)
    nm = Normalizer(rng.normal(size=6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32),
                    rng.normal(size=3).astype(np.float32), rng.uniform(0.1, 1, 3).astype(np.float32),
                    kind="mean-std", state_eps=1e-8, action_eps=1e-3)  # fmt: skip
    _, pairs = _run_pair(fake_adapter(norm=nm), "legato", 1, seed=4)
    for got, want, _ in pairs:
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_omega_comes_from_the_schedule_with_the_trained_shape(monkeypatch):
    """No second omega formula: the denoiser's omega is edge.schedule's for the model's shape."""
    import edge.denoiser

    calls = []
    real = edge.denoiser.omega_schedule

    def recording(d, r, h, shape="linear"):
        calls.append(shape)
        return real(d, r, h, shape) * np.float32(0.5)  # distinguishable from the linear formula

    monkeypatch.setattr(edge.denoiser, "omega_schedule", recording)
    den = fake_denoiser()
    assert calls and set(calls) == {den.spec.schedule_shape}
    rng = np.random.default_rng(0)
    den.set_observation(*obs(rng, den.adapter))
    den.denoise(np.zeros((1, 16, 3), np.float32), np.zeros((8, 3), np.float32), ChunkRequest(d=2, s=8, r=4))
    np.testing.assert_array_equal(den.omega[0], 0.5 * real(2, 4, 16))


def test_cameras_are_fed_by_name():
    ad = fake_adapter(cameras=("top", "wrist"), mask=True)
    prefix, head = fake_graphs(ad)
    den = denoiser_for(ad, {"prefix": prefix, "flow_head": head})
    rng = np.random.default_rng(0)
    top, wrist = (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(2))
    tokens = np.array([3, 4, 0, 0])
    den.set_observation({"wrist": wrist, "top": top}, tokens, np.zeros(6, np.float32))
    np.testing.assert_array_equal(prefix.inputs["image_top"][0], top)
    np.testing.assert_array_equal(prefix.inputs["image_wrist"][0], wrist)
    np.testing.assert_array_equal(prefix.inputs["mask"][0], [True, True, False, False])
    with pytest.raises(UsageError, match="lacks camera 'wrist'"):
        den.set_observation({"top": top}, tokens, np.zeros(6, np.float32))
    with pytest.raises(UsageError, match="name each image"):
        den.set_observation(top, tokens, np.zeros(6, np.float32))


def test_the_context_is_bound_once_not_copied():
    ad = fake_adapter()
    prefix, head = fake_graphs(ad)
    EngineField(ad, prefix, head)
    for name in ("kv", "mod", "cond"):
        assert head.inputs[name] is prefix.outputs[name]
        assert head.bound[name] == ("prefix", name)


def test_refuses_untrained_mode_steps_and_delay():
    rng = np.random.default_rng(0)
    ad = fake_adapter("legato")
    field = EngineField(ad, *fake_graphs(ad))
    with pytest.raises(MethodError, match="needs a model trained with 'rtc-train'"):
        ChunkDenoiser(ad, field, mode="hard-prefix")
    with pytest.raises(MethodError, match="N=4 steps .* N=5"):
        ChunkDenoiser(ad, field, num_steps=4)
    with pytest.raises(MethodError, match="unknown denoiser mode"):
        ChunkDenoiser(ad, field, mode="rtc")
    den = ChunkDenoiser(ad, field)
    den.set_observation(*obs(rng, ad))
    eps = np.zeros((1, 16, 3), np.float32)
    with pytest.raises(MethodError, match="exceeds the trained d_max=4"):
        den.denoise(eps, np.zeros((8, 3), np.float32), ChunkRequest(d=5, s=8, r=0))


def test_denoise_retains_no_memory_across_chunks():
    """Retained memory only (tracemalloc's net growth over 50 chunks): the denoiser keeps no
    per-chunk allocation; transient views are not counted."""
    import tracemalloc

    rng = np.random.default_rng(0)
    den = fake_denoiser()
    tail = np.zeros((8, 3), np.float32)
    eps = np.zeros((1, 16, 3), np.float32)
    o = obs(rng, den.adapter)
    req = ChunkRequest(d=2, s=8, r=6)
    for _ in range(3):
        den.set_observation(*o)
        den.denoise(eps, tail, req)
    tracemalloc.start()
    s0 = tracemalloc.take_snapshot()
    for _ in range(50):
        den.set_observation(*o)
        den.denoise(eps, tail, req)
    s1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    flt = [tracemalloc.Filter(True, "*edge/denoiser.py")]
    grown = sum(x.size_diff for x in s1.filter_traces(flt).compare_to(s0.filter_traces(flt), "lineno"))
    assert grown < 1024


def test_velocity_field_contract_matches_the_reference_field():
    """EngineField.velocity(y, t, omega, out=) computes the field the fake graphs define."""
    ad = fake_adapter()
    prefix, head = fake_graphs(ad)
    field = EngineField(ad, prefix, head)
    rng = np.random.default_rng(0)
    prefix.inputs["image"][...] = 7
    prefix.inputs["state"][...] = rng.normal(size=(1, 6))
    field.encode()
    y = rng.normal(size=(1, 16, 3)).astype(np.float32)
    t = np.full((1, 16), 0.4, np.float32)
    w = np.linspace(1, 0, 16, dtype=np.float32)[None]
    out = np.zeros((1, 16, 3), np.float32)
    field.velocity(y, t, w, out)
    k = np.rint(t[0] * 5).astype(int)
    want = true_velocity(y, t, w, prefix.outputs["kv"].mean(), prefix.outputs["cond"][..., :1],
                         prefix.outputs["mod"][0, k, 0, 0, 0])  # fmt: skip
    np.testing.assert_allclose(out, want, atol=1e-6)
