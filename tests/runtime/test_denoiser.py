import numpy as np
import pytest
from rt_graphs import fake_graphs

from edge.denoiser import ChunkDenoiser
from edge.errors import MethodError
from edge.normalize import Normalizer
from edge.policy import ChunkRequest, ModelSpec, default_ramp
from edge.sampler import hard_prefix_sample, legato_sample, pad_reference
from edge.schedule import omega_schedule


def spec(method="legato", n=5):
    return ModelSpec(
        method=method,
        horizon=16,
        num_steps=n,
        action_dim=3,
        state_dim=6,
        image_hw=(8, 8),
        max_tokens=4,
        d_max=4,
        r_max=8,
        schedule_shape="linear",
        control_hz=50.0,
    )


def norm(rng):
    return Normalizer(
        rng.normal(size=6).astype(np.float32),
        rng.uniform(0.5, 2, 6).astype(np.float32),
        rng.normal(size=(16, 3)).astype(np.float32) * 0.1,
        rng.uniform(0.1, 1, (16, 3)).astype(np.float32),
    )


def obs(rng, sp):
    return (
        rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
        rng.integers(0, 10, 4),
        rng.normal(size=6).astype(np.float32),
    )


def reference(sp, nm, prefix, head, o, eps, prev_tail, req, method):
    """The readable path: edge.sampler on a velocity function that calls the same fake head."""
    image, tokens, state = o
    prefix({"image": image[None], "tokens": tokens[None], "state": nm.state(state[None])})
    ctx = {k: prefix.outputs[k].copy() for k in ("kv", "mod", "cond")}

    def vel(y, t, w):
        return head({"y": y, "t": t, "omega": w, **ctx})["v"]

    if prev_tail is None:
        x = legato_sample(vel, eps, np.zeros_like(eps), np.zeros((1, 16), np.float32), sp.num_steps)
    else:
        a_ref = nm.action(pad_reference(prev_tail[None], 16), state[None])
        if method == "legato":
            w = omega_schedule(req.d, req.r, 16)[None]
            x = legato_sample(vel, eps, a_ref, w, sp.num_steps)
        else:
            x = hard_prefix_sample(vel, eps, a_ref, req.d, sp.num_steps)
    return nm.unaction(x, state[None])[0]


@pytest.mark.parametrize(
    "mode,method", [("legato", "legato"), ("hard-prefix", "rtc-train"), ("naive", "plain")]
)
@pytest.mark.parametrize("d", [0, 1, 3])
def test_buffered_denoiser_matches_reference_sampler(mode, method, d):
    rng = np.random.default_rng(d)
    (sp,) = (spec(method),)
    nm = norm(rng)
    prefix, head = fake_graphs(sp)
    den = ChunkDenoiser(sp, nm, prefix, head, mode=mode)
    s = 8
    req = ChunkRequest(d=d, s=s, r=default_ramp(sp, d, s))
    for first in (True, False):
        o = obs(rng, sp)
        eps = rng.standard_normal((1, 16, 3)).astype(np.float32)
        tail = None if first else rng.normal(size=(16 - s, 3)).astype(np.float32)
        den.set_observation(*o)
        got = den.denoise(eps, tail, req).copy()
        want = reference(sp, nm, prefix, head, o, eps, None if mode == "naive" else tail, req, MODES_M[mode])
        np.testing.assert_allclose(got, want, atol=2e-5)
    if mode == "legato" and d > 0:  # the frozen prefix executes the reference exactly
        np.testing.assert_allclose(got[:d], tail[:d], atol=2e-5)
    st = dict(zip(den.stage_names, den.stage_ns, strict=True))
    stages = sum(v for k, v in st.items() if k not in ("engines", "chunk"))
    assert 0 < st["engines"] <= stages <= st["chunk"]


MODES_M = {"legato": "legato", "hard-prefix": "rtc-train", "naive": "naive"}


def test_refuses_untrained_mode_steps_and_delay():
    rng = np.random.default_rng(0)
    sp, nm = spec("legato"), norm(rng)
    prefix, head = fake_graphs(sp)
    with pytest.raises(MethodError, match="needs a model trained with 'rtc-train'"):
        ChunkDenoiser(sp, nm, prefix, head, mode="hard-prefix")
    with pytest.raises(MethodError, match="N=4 steps .* N=5"):
        ChunkDenoiser(sp, nm, prefix, head, num_steps=4)
    with pytest.raises(MethodError, match="unknown denoiser mode"):
        ChunkDenoiser(sp, nm, prefix, head, mode="rtc")
    den = ChunkDenoiser(sp, nm, prefix, head)
    den.set_observation(*obs(rng, sp))
    eps = np.zeros((1, 16, 3), np.float32)
    with pytest.raises(MethodError, match="exceeds the trained d_max=4"):
        den.denoise(eps, np.zeros((8, 3), np.float32), ChunkRequest(d=5, s=8, r=0))


def test_denoise_allocates_nothing():
    import tracemalloc

    rng = np.random.default_rng(0)
    sp, nm = spec("legato"), norm(rng)
    den = ChunkDenoiser(sp, nm, *fake_graphs(sp))
    tail = np.zeros((8, 3), np.float32)
    eps = np.zeros((1, 16, 3), np.float32)
    o = obs(rng, sp)
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
