"""export.precision on small graphs: onnxruntime's FastGelu fusion and dynamic int8 on top of it
(the CPU profiles' fp32 graphs are fused before they are quantized)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from export.graphs import export_graph  # noqa: E402
from export.precision import fuse_fast_gelu, to_dynamic_int8  # noqa: E402
from legato.adapters import ExportGraph  # noqa: E402


class _Mlp(torch.nn.Module):
    """A transformer MLP with SigLIP's activation (tanh GELU, or erf GELU for ``approximate="none"``)."""

    def __init__(self, approximate: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = torch.nn.Linear(16, 64), torch.nn.Linear(64, 16)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x), approximate=self.approximate))


def _mlp_graph(path: Path, approximate: str = "tanh") -> tuple[_Mlp, np.ndarray]:
    mlp = _Mlp(approximate).eval()
    x = np.random.default_rng(0).standard_normal((1, 8, 16)).astype(np.float32)
    export_graph(ExportGraph(mlp, (torch.from_numpy(x),), ("x",), ("y",)), path)
    return mlp, x


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_tanh_gelu_is_fused_into_one_fast_gelu_with_the_same_output(tmp_path):
    mlp, x = _mlp_graph(tmp_path / "mlp.onnx")
    assert "Tanh" in _ops(tmp_path / "mlp.onnx")
    assert fuse_fast_gelu(tmp_path / "mlp.onnx") == 1
    ops = _ops(tmp_path / "mlp.onnx")
    assert ops.count("FastGelu") == 1 and "Tanh" not in ops
    with torch.no_grad():
        want = mlp(torch.from_numpy(x)).numpy()
    assert np.abs(_run(tmp_path / "mlp.onnx", x) - want).max() <= 1e-5


def test_erf_gelu_is_left_as_it_was(tmp_path):
    _mlp_graph(tmp_path / "mlp.onnx", approximate="none")
    before = (tmp_path / "mlp.onnx").read_bytes()
    assert fuse_fast_gelu(tmp_path / "mlp.onnx") == 0
    assert (tmp_path / "mlp.onnx").read_bytes() == before


@pytest.mark.parametrize("activation_matmuls", [False, True])
def test_dynamic_int8_quantizes_a_graph_already_fused_with_fast_gelu(tmp_path, activation_matmuls):
    """The MatMul after a FastGelu has an input whose type the quantizer cannot infer from the
    com.microsoft op: CPU-profile int8 exports of SmolVLA and pi0.5 failed on it."""
    mlp, x = _mlp_graph(tmp_path / "fp32.onnx")
    assert fuse_fast_gelu(tmp_path / "fp32.onnx") == 1
    to_dynamic_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", activation_matmuls=activation_matmuls)
    ops = _ops(tmp_path / "int8.onnx")
    assert ops.count("MatMulInteger") == 2 and "FastGelu" in ops
    with torch.no_grad():
        want = mlp(torch.from_numpy(x)).numpy().ravel()
    got = _run(tmp_path / "int8.onnx", x).ravel()
    assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) >= 0.999
