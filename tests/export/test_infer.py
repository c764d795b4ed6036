"""`legato bundle infer`: one chunk from recorded inputs (LeRobot feature names), equal to the
robot's own denoiser on the same inputs, and every bad input refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import UsageError


@pytest.fixture(scope="module")
def sample(tiny_checkpoints):
    from legato import adapters

    lp = adapters.load(tiny_checkpoints["legato"])
    return next(s for s in lp.samples(8) if s.prev is not None)


def _obs(tmp_path, smp, **extra):
    p = tmp_path / "obs.npz"
    arrays = {
        "observation.images.top": smp.obs.image[0],
        "observation.state": smp.obs.state[0],
        "observation.language.tokens": smp.obs.tokens[0],
        **extra,
    }
    np.savez(p, **{k: v for k, v in arrays.items() if v is not None})
    return p


def test_infer_is_the_robots_chunk_first_and_continued(tiny_bundle, sample, tmp_path, capsys):
    from edge.bundle_policy import BundlePolicy
    from edge.policy import ChunkRequest, default_ramp
    from legato.cli import main

    obs = _obs(tmp_path, sample)
    eps = np.random.default_rng(7).standard_normal((16, 3)).astype(np.float32)
    np.save(tmp_path / "noise.npy", eps)
    s, d = 8, 2
    np.save(tmp_path / "prev.npy", sample.prev[0, s:])
    out = tmp_path / "a.npy"
    base = [
        "bundle",
        "infer",
        "--bundle",
        str(tiny_bundle),
        "--obs",
        str(obs),
        "--noise",
        str(tmp_path / "noise.npy"),
    ]
    assert main([*base, "--prev", str(tmp_path / "prev.npy"), "--delay", str(d), "--out", str(out)]) == 0
    pol = BundlePolicy(tiny_bundle)
    spec = pol.spec
    want = pol.chunk(
        "legato", sample.obs, sample.prev, ChunkRequest(d, s, default_ramp(spec, d, s)), eps[None]
    )
    got = np.load(out)
    assert got.shape == (16, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want[0])
    np.testing.assert_allclose(got[:d], sample.prev[0, s : s + d], atol=1e-4)  # the frozen prefix
    first = tmp_path / "first.npy"
    assert main([*base, "--out", str(first), "--fused"]) == 0
    want = pol.chunk("legato", sample.obs, None, ChunkRequest(0, s, 0), eps[None])
    np.testing.assert_allclose(np.load(first), want[0], atol=1e-5)  # fused graph vs stepwise
    capsys.readouterr()
    assert main([*base, "--out", str(out)]) == 2  # exists: --force
    assert "pass --force to replace it" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--force"]) == 0
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*base, "--out", str(tmp_path / "notes.txt"), "--force"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "extra,args,match",
    [
        ({"observation.images.top": None, "observation.images.front": np.zeros((48, 64, 3), np.uint8)}, [],
         "observation.images.front is not an input of this policy"),
        ({"observation.images.top": np.zeros((96, 128, 3), np.uint8)}, [],
         r"observation.images.top is uint8\[96, 128, 3\], camera 'top' takes uint8\[48, 64, 3\]"),
        ({"observation.state": np.zeros(5, np.float32)}, [], r"observation.state is float32\[5\]"),
        ({"observation.language.tokens": np.array([3, 99])}, [],
         r"tokens id 99 is outside the bundle.s vocabulary \(0..13\)"),
        ({"observation.language.tokens": np.array([3, 4]),
          "observation.language.attention_mask": np.array([1, 1, 0])}, [],
         r"attention_mask has shape \[3\], the tokens \[2\]"),
        ({"observation.language.tokens": None, "task": np.array("reach the red target")}, [],
         "this bundle carries no tokenizer"),
        ({}, ["--noise", "NOISE"], r"--noise .*: shape \[16, 2\], the policy samples \[16, 3\]"),
        ({}, ["--prev", "PREV"], "--prev and --delay go together"),
    ],
)  # fmt: skip
def test_infer_refuses_bad_inputs_in_one_line(tiny_bundle, sample, tmp_path, extra, args, match):
    from edge.infer import infer

    obs = _obs(tmp_path, sample, **extra)
    if "--noise" in args:
        np.save(tmp_path / "n.npy", np.zeros((16, 2), np.float32))
    if "--prev" in args:
        np.save(tmp_path / "p.npy", np.zeros((8, 3), np.float32))
    kw = {"noise": tmp_path / "n.npy"} if "--noise" in args else {}
    kw.update({"prev": tmp_path / "p.npy"} if "--prev" in args else {})
    if "tokenizer" in match:
        import json
        import shutil

        b = tmp_path / "b"  # the same bundle without its tokenizer
        shutil.copytree(tiny_bundle, b)
        m = json.loads((b / "manifest.json").read_text())
        if m["adapter"]["observation"]["language"]["tokenizer"]:
            (b / m["adapter"]["observation"]["language"]["tokenizer"]).unlink()
            del m["files"][m["adapter"]["observation"]["language"]["tokenizer"]]
            m["adapter"]["observation"]["language"]["tokenizer"] = None
            (b / "manifest.json").write_text(json.dumps(m))
        tiny_bundle = b
    with pytest.raises(UsageError, match=match) as e:
        infer(tiny_bundle, obs, **kw)
    assert "\n" not in str(e.value)
