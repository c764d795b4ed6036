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
    request of LeRobot's token ids (padded to the bundle's length), the golden observation and
    noise gets LeRobot's own chunk."""
    import numpy as np
    from lerobot_fixtures import golden

    from edge.assembly import load
    from edge.remote import wire
    from edge.remote.service import PolicyService

    service = PolicyService(*load(str(bundle), str(fixture_profile(tmp_path))))
    cams = ["observation.images.top", "observation.images.wrist"]
    keys = [*cams, "observation.state", "observation.language.tokens"]
    assert list(service.meta["observation"]) == keys and service.meta["prompt"] is None
    obs, noise, rec = golden("smolvla")
    for i, o in enumerate(obs):
        ids = np.zeros(service.meta["observation"][keys[-1]]["shape"], np.int64)  # pad id 0, right
        ids[: rec["tokens"].shape[1]] = np.where(rec["token_mask"][i], rec["tokens"][i], 0)
        req = {k: o[k][0] for k in keys[:3]} | {keys[-1]: ids, "legato": {"noise": noise[i]}}
        reply = wire.unpackb(service.infer(wire.packb(req), 0.0, None), 1 << 24)
        assert np.abs(reply["actions"] - rec["actions"][i]).max() <= 1e-4


def test_int8_quantizes_attentions_matmuls_too_and_passes_its_gate(tmp_path, hf_offline, capsys):
    """onnxruntime's dynamic int8 of a SmolVLA bundle also quantizes the MatMuls of two activations
    (the prefix's attention; onnxruntime leaves them float by default), and SigLIP's tanh GELU
    runs as onnxruntime's fused FastGelu: on the full-size model the int8 prefix 13 % faster
    (docs/performance.md). The bundle says so and its chunk cosine gate holds."""
    import onnx

    out = tmp_path / "bundle"
    args = ["export", "--checkpoint", str(FIXTURES / "smolvla"), "--profile", str(fixture_profile(tmp_path))]
    assert main([*args, "--precision", "int8", "--parity-samples", "4", "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    man = json.loads((out / "manifest.json").read_text())
    assert man["quantization"]["method"] == "dynamic-int8"
    assert man["quantization"]["activation_matmuls"] == "int8 dynamic"
    prefix = onnx.load(str(out / "prefix.onnx"))
    weights = {i.name for i in prefix.graph.initializer}
    both_activations = [
        n for n in prefix.graph.node if n.op_type == "MatMulInteger" and n.input[1] not in weights
    ]
    assert both_activations  # attention's QK^T / PV, quantized at run time
    assert not [n for n in prefix.graph.node if n.op_type == "MatMul"]  # nothing left in float
    # SigLIP's tanh GELU as onnxruntime's fused FastGelu: at least one per vision layer, none left
    layers = json.loads((FIXTURES / "vlm" / "smolvlm2-tiny" / "config.json").read_text())["vision_config"]
    fused = sum(n.op_type == "FastGelu" for n in prefix.graph.node)
    assert fused >= layers["num_hidden_layers"] and fused == man["quantization"]["fused_fast_gelu"]["prefix"]
    assert not [n for n in prefix.graph.node if n.op_type == "Tanh"]
    assert main(["bundle", "verify", str(out)]) == 0
