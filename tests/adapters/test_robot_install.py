"""The LeRobot fixture bundles on the robot install (CI: Python 3.10, `pip install .`, no torch):
`legato bundle infer` on LeRobot-named inputs gives LeRobot's own sample_actions, for SmolVLA
(state as a graph input) and pi0.5 (state in the prompt).

The bundles come from $LEGATO_TEST_LEROBOT_BUNDLES (OUT/smolvla, OUT/pi05 of
`python tests/adapters/lerobot_fixtures.py export-bundles OUT`, run with the workstation's venv);
without it the tests skip: on the workstation test_smolvla_bundle.py and test_pi05_bundle.py
export and check the same bundles. The language goes in as LeRobot's token ids (the core install
has no tokenizers library) and, where `tokenizers` is installed (the language extra), also as the
task string the robot tokenizes itself."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from lerobot_fixtures import fixture_profile, golden, golden_request

from legato.cli import main

GATE = 1e-4  # max abs, robot units (issue 18)


@pytest.fixture(scope="module")
def bundles() -> Path:
    env = os.environ.get("LEGATO_TEST_LEROBOT_BUNDLES")
    if not env:
        pytest.skip("LEGATO_TEST_LEROBOT_BUNDLES is not set (CI's robot-install step sets it)")
    return Path(env)


def _infer(bundle: Path, o: dict, noise: np.ndarray, tmp: Path, language: str) -> np.ndarray:
    tmp.mkdir()
    arrays = {k: v[0] for k, v in o.items() if k.startswith("observation.")}
    if language == "task":
        arrays["task"] = np.array(o["task"][0])
    np.savez(tmp / "obs.npz", **arrays)
    np.save(tmp / "noise.npy", noise)
    args = ["bundle", "infer", "--bundle", str(bundle), "--obs", str(tmp / "obs.npz")]
    assert main([*args, "--noise", str(tmp / "noise.npy"), "--out", str(tmp / "a.npy")]) == 0
    return np.load(tmp / "a.npy")


@pytest.mark.parametrize("name", ["smolvla", "pi05"])
def test_bundle_infer_on_the_robot_install_equals_lerobot(bundles, name, tmp_path):
    obs, noise, rec = golden(name)
    languages = ["tokens"] + (["task"] if importlib.util.find_spec("tokenizers") else [])
    worst = {}
    for language in languages:
        for i, o in enumerate(obs):
            if language == "tokens":
                ids, mask = rec["tokens"][i][None], rec["token_mask"][i][None].astype(bool)
                o = o | {"observation.language.tokens": ids, "observation.language.attention_mask": mask}
            a = _infer(bundles / name, o, noise[i], tmp_path / f"{language}{i}", language)
            assert a.shape == rec["actions"][i].shape
            worst[language] = max(worst.get(language, 0.0), float(np.abs(a - rec["actions"][i]).max()))
    print(f"{name} on {sys.version.split()[0]}: bundle infer vs LeRobot max abs {worst}")
    assert all(w <= GATE for w in worst.values()), worst


@pytest.mark.parametrize("name", ["smolvla", "pi05"])
def test_legato_serve_on_the_robot_install_gives_lerobots_chunk(bundles, name, tmp_path):
    """The served bundle (edge.remote.service, what `legato serve` runs) on golden requests: SmolVLA
    with LeRobot's token ids, pi0.5 with openpi's prompt string where `tokenizers` is installed."""
    from edge.assembly import load
    from edge.remote import wire
    from edge.remote.service import PolicyService

    if name == "pi05" and importlib.util.find_spec("tokenizers") is None:
        pytest.skip("pi0.5's prompt is built on the server: the language extra (tokenizers)")
    service = PolicyService(*load(str(bundles / name), str(fixture_profile(tmp_path))))
    obs, noise, rec = golden(name)
    worst = 0.0
    for i, o in enumerate(obs):
        req = golden_request(service.meta["observation"], o, noise, rec, i)
        reply = wire.unpackb(service.infer(wire.packb(req), 0.0, None), 1 << 24)
        worst = max(worst, float(np.abs(reply["actions"] - rec["actions"][i]).max()))
    print(f"{name} on {sys.version.split()[0]}: served vs LeRobot max abs {worst:.2e}")
    assert worst <= GATE, worst
