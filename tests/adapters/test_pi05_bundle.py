"""`legato export --checkpoint <LeRobot pi0.5 folder>`: detected by its adapter, exported as prefix
+ expert-step graphs with the state-in-the-prompt step declared as data, gated, verified; on the
robot side (`legato bundle infer`: the prompt built from the task and the state and tokenized with
`tokenizers` and the bundle's tokenizer.json, onnxruntime) it equals LeRobot's own sample_actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")
pytest.importorskip("tokenizers", reason="the language extra (tokenizers) is not installed")

from lerobot_fixtures import FIXTURES, fixture_profile, golden, golden_request  # noqa: E402

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


def _so101_profile(tmp: Path) -> Path:
    """so101-follower for the fixture pi0.5 (six joints; d_max 0, s = 5, stepwise as for every
    fixture policy), patient setup replies and a relaxed stale_ms (the emulator is another process
    on a possibly loaded machine: behaviour is pinned, not speed)."""
    path = fixture_profile(tmp, "so101-follower", stale_ms="1000")
    path.write_text(path.read_text().replace("[serial]\n", "[serial]\nsetup_timeout_ms = 2000\n"))
    return path


def _videos(tmp: Path, man: dict) -> list[str]:
    """One short MJPG file per camera of the bundle (OpenCV plays files like a device), NAME=FILE."""
    cv2 = pytest.importorskip("cv2")
    out = []
    for c in man["adapter"]["observation"]["cameras"]:
        path = str(tmp / f"{c['name']}.avi")
        w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (c["width"], c["height"]))
        for k in range(5):
            w.write(np.full((c["height"], c["width"], 3), 40 * k, np.uint8))
        w.release()
        out.append(f"{c['name']}={path}")
    return out


def _emulated_so101() -> tuple[Any, str]:
    """Six SO-101 servos (the Feetech emulator, so101-follower's calibration) on a pty: (process, port)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    cal = root / "profiles" / "so101-follower.calibration.json"
    emu = subprocess.Popen([sys.executable, "-m", "legato.cli", "firmware", "emulate", "--bus", "feetech",
                            "--calibration", str(cal), "--duration", "300"], cwd=root, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert emu.stdout is not None
    port = emu.stdout.readline().strip()
    assert port.startswith("/dev/pts/"), emu.stderr.read() if emu.poll() is not None else port
    return emu, port


def _served(bundle: Path, profile: Path) -> tuple[Any, Any]:
    """The bundle behind `legato serve`'s service in a thread of this process (the remote tests'
    ServerThread): (service, server)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from remote_helpers import ServerThread

    from edge.assembly import load
    from edge.remote.service import PolicyService

    service = PolicyService(*load(str(bundle), str(profile)))
    return service, ServerThread(service)


def test_legato_run_builds_each_observations_prompt_from_the_arms_state(
    bundle, tmp_path, capsys, monkeypatch
):
    """`legato run --port --prompt` of the pi0.5 bundle on six emulated SO-101 servos: every chunk's
    tokens are the prompt of the task and of the joint state that chunk was sampled from (the
    state the policy sees, read from the bus), so the prompt follows the arm as it moves."""
    import sys

    from edge.bundle import verify
    from edge.denoiser import ChunkDenoiser
    from edge.language import PromptBuilder

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = ChunkDenoiser.set_observation

    def spy(self, image, tokens, state, mask=None):
        if sys._getframe(1).f_code.co_filename.endswith("worker.py"):  # the loop's, not the load check's
            seen.append((np.array(tokens), np.array(state)))
        return real(self, image, tokens, state, mask)

    monkeypatch.setattr(ChunkDenoiser, "set_observation", spy)
    man = json.loads((bundle / "manifest.json").read_text())
    cams = [a for v in _videos(tmp_path, man) for a in ("--camera", v)]
    emu, port = _emulated_so101()
    try:
        summary = tmp_path / "summary.json"
        rc = main(["run", "--bundle", str(bundle), "--profile", str(_so101_profile(tmp_path)), "--port", port,
                   *cams, "--prompt", "pick_up the cube", "--seconds", "3", "--quiet",
                   "--summary-json", str(summary)])  # fmt: skip
        err = capsys.readouterr().err
    finally:
        emu.terminate()
        emu.communicate(timeout=30)
    assert rc == 0, err
    s = json.loads(summary.read_text())
    assert s["shutdown"] == "completed" and s["errors"] == [] and s["nan_setpoints"] == 0
    build = PromptBuilder(bundle, verify(bundle).adapter.observation.language)
    assert len(seen) >= 3
    for tokens, state in seen:
        np.testing.assert_array_equal(tokens, build("pick up the cube", state)[0])
    # the arm moved under the (random-weight) policy: its state, so its prompt, changed
    assert len({t.tobytes() for t, _ in seen}) >= 2
    assert not any(np.array_equal(st, np.zeros_like(st)) for _, st in seen[1:])


def test_legato_run_remote_sends_the_task_and_each_camera_and_the_server_builds_each_prompt(
    bundle, tmp_path, capsys, monkeypatch
):
    """`legato run --remote --port --prompt` against a served pi0.5 (the robot holds no tokenizer
    and no bundle): the robot sends both cameras by LeRobot's keys, the state and the task as
    openpi's prompt; the server builds every chunk's prompt from that request's joint state, so
    the prompt follows the arm; the task is checked against the server's model before the motors."""
    import sys

    from edge.bundle import verify
    from edge.denoiser import ChunkDenoiser
    from edge.language import PromptBuilder

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = ChunkDenoiser.set_observation

    def spy(self, image, tokens, state, mask=None):
        if sys._getframe(1).f_code.co_filename.endswith("service.py"):  # a request's, not load's check
            assert set(image) == {"base_0_rgb", "left_wrist_0_rgb"}
            seen.append((np.array(tokens), np.array(state)))
        return real(self, image, tokens, state, mask)

    monkeypatch.setattr(ChunkDenoiser, "set_observation", spy)
    profile = _so101_profile(tmp_path)
    service, server = _served(bundle, profile)
    man = json.loads((bundle / "manifest.json").read_text())
    cams = [a for v in _videos(tmp_path, man) for a in ("--camera", v)]
    emu, port = _emulated_so101()
    try:
        summary = tmp_path / "summary.json"
        url = server.url
        rc = main(["run", "--remote", url, "--profile", str(profile), "--port", port, *cams,
                   "--prompt", "pick_up the cube", "--seconds", "3", "--quiet",
                   "--summary-json", str(summary)])  # fmt: skip
        err = capsys.readouterr().err
    finally:
        emu.terminate()
        emu.communicate(timeout=30)
        server.stop()
    assert rc == 0, err
    s = json.loads(summary.read_text())
    assert s["shutdown"] == "completed" and s["errors"] == [] and s["nan_setpoints"] == 0
    assert s["remote.task_checks"] == 1 and s["remote.chunks"] >= 3 and s["remote.errors"] == []
    assert len(seen) >= s["remote.chunks"] + 1  # the check, every chunk (and one asked as the run ended)
    build = PromptBuilder(bundle, verify(bundle).adapter.observation.language)
    for tokens, state in seen:
        np.testing.assert_array_equal(tokens, build("pick up the cube", state)[0])
    assert len({t.tobytes() for t, _ in seen[1:]}) >= 2  # the arm moved: its prompt changed


def test_a_remote_pi05_run_whose_task_the_server_cannot_take_stops_before_the_motors(
    bundle, tmp_path, capsys
):
    """The served model's limits are the server's: a task too long for its tokens (at some state)
    is refused by the server at the start, and --tokens (ids would drop the state) by the robot;
    each in one line, before the port (which does not exist) is opened."""
    profile = _so101_profile(tmp_path)
    _, server = _served(bundle, profile)
    try:
        args = ["run", "--remote", server.url, "--profile", str(profile), "--port", "/dev/null-x"]
        for extra, match in ((["--prompt", "go " * 40], "the bundle's model takes at most 64"),
                             (["--tokens", "2,3"], "not as --tokens")):  # fmt: skip
            assert main([*args, *extra]) != 0
            err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
            assert len(err) == 1 and match in err[0], err
    finally:
        server.stop()


def test_a_pi05_run_without_its_task_is_refused_before_the_motors(bundle, tmp_path, capsys):
    """The task must come as --prompt (the state goes into it): --tokens is refused in one line,
    before any port is opened (this one does not exist)."""
    profile = str(_so101_profile(tmp_path))
    args = ["run", "--bundle", str(bundle), "--profile", profile, "--port", "/dev/null-x"]
    for extra, match in (([], 'give the task as --prompt "..."'), (["--tokens", "2,3"], "not as --tokens")):
        assert main([*args, *extra]) == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and match in err[0], err


def test_legato_serve_takes_openpis_prompt_and_each_camera_and_gives_lerobots_chunk(bundle, tmp_path):
    """`legato serve` of the pi0.5 bundle (a GPU server beside a robot that cannot hold it): the
    metadata names each camera (LeRobot's keys), the state and the task as openpi's ``prompt``
    string; the server writes each request's state into the prompt, and a request of the golden
    observation and noise gets LeRobot's own chunk. A prompt that does not fit, or that is no
    string, is one line to that client."""
    from edge.assembly import load
    from edge.remote import protocol, wire
    from edge.remote.service import PolicyService

    man, prof, den = load(str(bundle), str(fixture_profile(tmp_path)))
    service = PolicyService(man, prof, den)
    meta = service.meta
    assert meta["policy"]["adapter"] == "pi05" and meta["action"]["noise_dim"] == 32
    assert meta["observation"] == {
        "observation.images.base_0_rgb": {"shape": [40, 48, 3], "dtype": "|u1"},
        "observation.images.left_wrist_0_rgb": {"shape": [32, 32, 3], "dtype": "|u1"},
        "observation.state": {"shape": [6], "dtype": "<f4"},
        "prompt": {"type": "text", "max_chars": 1000},
    }
    assert meta["prompt"]["key"] == "prompt"
    obs, noise, rec = golden("pi05")
    worst = 0.0
    for i, o in enumerate(obs):
        req = golden_request(meta["observation"], o, noise, rec, i)
        reply = wire.unpackb(service.infer(wire.packb(req), 0.0, None), 1 << 24)
        worst = max(worst, float(np.abs(reply["actions"] - rec["actions"][i]).max()))
    assert worst <= 1e-4, worst
    too_long = ("go " * 40, "the bundle's model takes at most 64")
    for bad, match in (too_long, (b"go", "must be a non-empty string")):
        with pytest.raises(protocol.Refusal, match=match) as e:
            service.infer(wire.packb(req | {"prompt": bad}), 0.0, None)
        assert "\n" not in str(e.value)
    print(f"pi0.5 served (openpi prompt) vs LeRobot: max abs {worst:.2e}")
