"""The SmolVLA adapter against LeRobot 0.6.1's own sample_actions (tests/fixtures/lerobot)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")

from lerobot_fixtures import FIXTURES, golden  # noqa: E402

from legato.adapters.smolvla import SmolVLAPolicy  # noqa: E402


@pytest.fixture(scope="module")
def policy(hf_offline):
    return SmolVLAPolicy.load(FIXTURES / "smolvla")


def test_tokens_match_lerobots_tokenizer_step(policy):
    obs, _, rec = golden("smolvla")
    for i, o in enumerate(obs):
        ids, mask = policy.language(o["task"])
        n = ids.shape[1]
        assert np.array_equal(ids[0].numpy(), rec["tokens"][i, :n])
        assert np.array_equal(mask[0].numpy(), rec["token_mask"][i, :n])


def test_chunk_equals_lerobot_sample_actions_in_robot_units(policy):
    obs, noise, rec = golden("smolvla")
    for i, o in enumerate(obs):
        a = policy.sample_actions(o, torch.from_numpy(noise[i : i + 1]))
        assert a.shape == rec["actions"][i : i + 1].shape
        err = np.abs(a - rec["actions"][i : i + 1]).max()
        assert err <= 1e-4, f"observation {i}: max abs error {err:.2e}"


def test_fixture_is_sensitive_to_its_inputs(policy):
    """Unit-gain weights: a pre-processing slip (one pixel row, a wrong pad side) moves the chunk
    far beyond the 1e-4 gate, so equality above means the pre-processing is LeRobot's."""
    obs, noise, rec = golden("smolvla")
    o = dict(obs[0])
    cam = "observation.images.wrist"
    o[cam] = np.ascontiguousarray(o[cam][:, :, ::-1])  # mirror one camera
    a = policy.sample_actions(o, torch.from_numpy(noise[:1]))
    assert np.abs(a - rec["actions"][:1]).max() > 1e-2
