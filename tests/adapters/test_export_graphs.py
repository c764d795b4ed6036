"""SmolVLA's and pi0.5's exported graphs (prefix -> context once, one expert step N times) on
onnxruntime equal the adapters, and so LeRobot's own chunk (the golden fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")
ort = pytest.importorskip("onnxruntime")

from lerobot_fixtures import FIXTURES, golden  # noqa: E402

from legato.adapters import pi05_graphs, smolvla_graphs  # noqa: E402
from legato.adapters.legato_flow import LegatoHead  # noqa: E402
from legato.adapters.pi05 import Pi05Policy  # noqa: E402
from legato.adapters.smolvla import SmolVLAPolicy  # noqa: E402

KINDS = {"smolvla": (SmolVLAPolicy, smolvla_graphs), "pi05": (Pi05Policy, pi05_graphs)}


@pytest.fixture(scope="module", params=sorted(KINDS))
def exported(request, hf_offline, tmp_path_factory):
    cls, graphs = KINDS[request.param]
    policy = cls.load(FIXTURES / request.param)
    policy.kind, policy.graphs = request.param, graphs
    head = LegatoHead(policy.spec.num_steps, None)  # a plain LeRobot checkpoint
    obs, _, _ = golden(request.param)
    folder = tmp_path_factory.mktemp(f"{request.param}-onnx")
    paths = graphs.export(policy, head, obs[0], folder)
    from export.precision import FP16_KEEP_FP32, to_fp16

    for k in list(paths):  # positions and rotary angles stay float32 (Range has no float16 kernel)
        to_fp16(paths[k], folder / f"{k}-fp16.onnx", FP16_KEEP_FP32 + graphs.FP16_KEEP_EXTRA)
        paths[f"{k}-fp16"] = folder / f"{k}-fp16.onnx"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    return policy, sess, paths


def onnx_chunk(policy, sess, o, noise, suffix=""):
    args, names = policy.graphs.example_inputs(policy, o)
    ctx = sess["prefix" + suffix].run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    feeds = dict(zip(policy.graphs.PREFIX_OUTPUTS, ctx, strict=True))
    x = noise.astype(np.float32)
    n = policy.spec.num_steps
    omega = np.zeros((1, policy.spec.chunk), np.float32)
    for k in range(n):
        t = np.array([1.0 - k / n], np.float32)
        (v,) = sess["step" + suffix].run(None, {"x": x, "t": t, "omega": omega, **feeds})
        x = x + (-1.0 / n) * v
    return policy.folder.output_norm.unnormalize("action", x[..., : policy.spec.action_dim])


def test_exported_fp32_graphs_equal_the_adapter_and_lerobot(exported):
    policy, sess, _ = exported
    obs, noise, rec = golden(policy.kind)
    o = obs[0]  # the graphs are static: the first observation's token length
    a_onnx = onnx_chunk(policy, sess, o, noise[:1])
    a_torch = policy.sample_actions(o, torch.from_numpy(noise[:1]))
    assert np.abs(a_onnx - a_torch).max() <= 1e-4
    assert np.abs(a_onnx - rec["actions"][:1]).max() <= 1e-4


def test_fp16_graphs_keep_cosine_above_0999_against_fp32(exported):
    policy, sess, _ = exported
    obs, noise, _ = golden(policy.kind)
    a32 = onnx_chunk(policy, sess, obs[0], noise[:1]).ravel()
    a16 = onnx_chunk(policy, sess, obs[0], noise[:1], "-fp16").ravel()
    cos = float(a32 @ a16 / np.linalg.norm(a32) / np.linalg.norm(a16))
    assert cos >= 0.999, cos


def test_step_graph_has_no_scatter_and_no_reprojection_of_the_prefix(exported):
    import onnx

    policy, _, paths = exported
    ops = [n.op_type for n in onnx.load(str(paths["step"])).graph.node]
    assert "ScatterND" not in ops
    if policy.kind != "smolvla":
        return
    # the cache's K/V are inputs; the step's own MatMul/Gemm count is the expert's, not the VLM's:
    # q/k/v/o in self layers, q/o in cross layers, 3 MLP projections, plus 4 in and out
    m = policy.model
    n_self = sum(m._is_self_attn(i) for i in range(m.num_layers))
    n_cross = m.num_layers - n_self
    linear = sum(op in ("MatMul", "Gemm") for op in ops)
    attention = 2 * m.num_layers  # QK^T and PV
    assert linear <= 4 * n_self + 2 * n_cross + 3 * m.num_layers + 4 + attention
