"""`legato export --checkpoint <LeRobot SmolVLA folder>`: detected by its adapter, exported as
prefix + expert-step graphs, gated against torch through the robot's own denoiser, verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")

from lerobot_fixtures import FIXTURES, fixture_profile  # noqa: E402

from legato.cli import main  # noqa: E402


def test_export_detects_smolvla_gates_and_verifies(tmp_path, hf_offline, capsys):
    out = tmp_path / "bundle"
    code = main(
        [
            "export",
            "--checkpoint",
            str(FIXTURES / "smolvla"),
            "--profile",
            str(fixture_profile(tmp_path)),
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    man = json.loads((out / "manifest.json").read_text())
    ad = man["adapter"]
    assert ad["name"] == "smolvla" and ad["time_convention"] == "t1-noise"
    assert ad["action_pad"] == 32 and ad["observation"]["language"]["append"] == "\n"
    assert [c["name"] for c in ad["observation"]["cameras"]] == ["top", "wrist"]
    assert (out / "tokenizer.json").is_file()
    assert man["parity"]["fp32"]["flow_head"]["max_abs"] <= 1e-4
    # A CPU profile: the fp32 graphs carry onnxruntime's FastGelu (one per SigLIP layer and
    # camera: 2 x 2 here), gated above; SmolVLA's attention stays standard ops, and says so.
    assert man["onnxruntime_ops"] == {"prefix": {"FastGelu": 4}}
    assert man["attention"] == "standard ops"
    assert main(["bundle", "verify", str(out)]) == 0
    _bundle_infer_equals_lerobot(out, tmp_path)
    _served_equals_lerobot(out, tmp_path)


def _bundle_infer_equals_lerobot(bundle: Path, tmp_path: Path) -> None:
    """`legato bundle infer` (the robot side: onnxruntime, the prompt tokenized with `tokenizers`
    and the bundle's tokenizer.json) on LeRobot-named inputs gives LeRobot's own chunk."""
    import numpy as np
    from lerobot_fixtures import golden

    obs, noise, rec = golden("smolvla")
    o = obs[0]
    np.savez(
        tmp_path / "obs.npz",
        **{k: o[k][0] for k in ("observation.images.top", "observation.images.wrist", "observation.state")},
        task=np.array(o["task"][0]),
    )
    np.save(tmp_path / "noise.npy", noise[0])
    assert (
        main(
            [
                "bundle",
                "infer",
                "--bundle",
                str(bundle),
                "--obs",
                str(tmp_path / "obs.npz"),
                "--noise",
                str(tmp_path / "noise.npy"),
                "--out",
                str(tmp_path / "a.npy"),
            ]
        )
        == 0
    )
    assert np.abs(np.load(tmp_path / "a.npy") - rec["actions"][0]).max() <= 1e-4


def _served_equals_lerobot(bundle: Path, tmp_path: Path) -> None:
    """`legato serve` of the bundle: the metadata names each camera by LeRobot's key, and a
    request of LeRobot's token ids (padded to the bundle's length) or of the task as openpi's
    ``prompt`` (tokenized on the server), the golden observation and noise gets LeRobot's own
    chunk."""
    import numpy as np
    from lerobot_fixtures import golden, golden_request

    from edge.assembly import load
    from edge.remote import wire
    from edge.remote.service import PolicyService

    service = PolicyService(*load(str(bundle), str(fixture_profile(tmp_path))))
    cams = ["observation.images.top", "observation.images.wrist"]
    keys = [*cams, "observation.state", "observation.language.tokens", "prompt"]
    assert list(service.meta["observation"]) == keys
    assert service.meta["prompt"] == {"key": "prompt", "template": None}
    assert service.meta["sim_token_ids"] is False  # --sim sends each episode's instruction as text
    obs, noise, rec = golden("smolvla")
    for prompt in (False, True):
        for i, o in enumerate(obs):
            req = golden_request(service.meta["observation"], o, noise, rec, i, prompt=prompt)
            assert ("prompt" in req) == prompt
            reply = wire.unpackb(service.infer(wire.packb(req), 0.0, None), 1 << 24)
            assert np.abs(reply["actions"] - rec["actions"][i]).max() <= 1e-4


def test_int8_export_for_a_cpu_profile_quantizes_the_fast_gelu_graphs(tmp_path, hf_offline, capsys):
    """`--precision int8` on a CPU profile: dynamic int8 of the fp32 graphs, which already hold
    FastGelu there; gated by chunk cosine and verified."""
    out = tmp_path / "bundle"
    args = ["export", "--checkpoint", str(FIXTURES / "smolvla"), "--profile", str(fixture_profile(tmp_path)),
            "--precision", "int8", "--out", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    man = json.loads((out / "manifest.json").read_text())
    assert {g["precision"] for g in man["graphs"].values()} == {"int8"}
    assert man["quantization"]["method"] == "dynamic-int8"
    assert man["onnxruntime_ops"]["prefix"]["FastGelu"] == 4
    assert min(r["cosine_min"] for r in man["parity"]["int8"].values()) >= man["parity"]["gate"]["cosine_min"]
    assert main(["bundle", "verify", str(out)]) == 0
