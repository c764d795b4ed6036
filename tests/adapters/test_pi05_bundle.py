"""`legato export --checkpoint <LeRobot pi0.5 folder>`: detected by its adapter, exported as prefix
+ expert-step graphs with the state-in-the-prompt step declared as data, gated, verified; on the
robot side (`legato bundle infer`: the prompt built from the task and the state and tokenized with
`tokenizers` and the bundle's tokenizer.json, onnxruntime) it equals LeRobot's own sample_actions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")
pytest.importorskip("tokenizers", reason="the language extra (tokenizers) is not installed")

from lerobot_fixtures import FIXTURES, fixture_profile, golden  # noqa: E402

from legato.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def bundle(hf_offline, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pi05-bundle")
    out = tmp / "bundle"
    args = ["export", "--checkpoint", str(FIXTURES / "pi05"), "--profile", str(fixture_profile(tmp))]
    assert main([*args, "--parity-samples", "4", "--out", str(out)]) == 0
    return out


def test_export_detects_pi05_declares_the_prompt_and_verifies(bundle):
    man = json.loads((bundle / "manifest.json").read_text())
    ad = man["adapter"]
    assert ad["name"] == "pi05" and ad["time_convention"] == "t1-noise" and ad["action_pad"] == 32
    obs = ad["observation"]
    assert obs["state"] is None  # the state is not a graph input: it is text in the prompt
    prompt = obs["language"]["prompt"]
    assert prompt["template"] == "Task: {task}, State: {state};\nAction: " and prompt["bins"] == 256
    assert len(prompt["state_low"]) == len(prompt["state_high"]) == ad["state_dim"] == 6
    assert [c["name"] for c in obs["cameras"]] == ["base_0_rgb", "left_wrist_0_rgb"]
    assert (bundle / "tokenizer.json").is_file()
    assert man["parity"]["fp32"]["flow_head"]["max_abs"] <= 1e-4
    assert main(["bundle", "verify", str(bundle)]) == 0


def test_robot_side_prompt_equals_lerobots_tokenizer_step(bundle):
    """edge.language builds the prompt from the task and the raw state (LeRobot's quantile
    normalisation, 256 bins) and tokenizes it with the bundle's file: LeRobot's ids exactly."""
    from edge.bundle import verify
    from edge.language import PromptBuilder

    lang = verify(bundle).adapter.observation.language
    build = PromptBuilder(bundle, lang)
    obs, _, rec = golden("pi05")
    for i, o in enumerate(obs):
        ids, mask = build(o["task"][0], o["observation.state"][0])
        np.testing.assert_array_equal(ids, rec["tokens"][i])
        np.testing.assert_array_equal(mask, rec["token_mask"][i].astype(bool))


@pytest.mark.parametrize("language", ["task", "tokens"])
def test_bundle_infer_equals_lerobot_sample_actions(bundle, tmp_path, language):
    """The language as the task (the prompt built on the robot) or as LeRobot's own ids and mask
    (padded to the batch's longest prompt, shorter than the bundle's max_tokens)."""
    obs, noise, rec = golden("pi05")
    worst = 0.0
    for i, o in enumerate(obs):
        obs_npz, out = tmp_path / f"obs{i}.npz", tmp_path / f"a{i}.npy"
        lang = (
            {"task": np.array(o["task"][0])}
            if language == "task"
            else {
                "observation.language.tokens": rec["tokens"][i],
                "observation.language.attention_mask": rec["token_mask"][i].astype(bool),
            }
        )
        np.savez(obs_npz, **{k: v[0] for k, v in o.items() if k.startswith("observation.")}, **lang)
        np.save(tmp_path / "noise.npy", noise[i])
        args = ["bundle", "infer", "--bundle", str(bundle), "--obs", str(obs_npz)]
        assert main([*args, "--noise", str(tmp_path / "noise.npy"), "--out", str(out)]) == 0
        worst = max(worst, float(np.abs(np.load(out) - rec["actions"][i]).max()))
    assert worst <= 1e-4, worst
    print(f"pi0.5 bundle infer ({language}) vs LeRobot: max abs {worst:.2e}")
