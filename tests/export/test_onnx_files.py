"""A graph past protobuf's 2 GB (a full-size pi0.5: 13 GB fp32, 6.7 GB fp16, ~3.3 GB int8) is
written with its tensors in external data, and the bundle carries those files. Here the threshold
is lowered to 0 bytes so the tiny model takes that path: each precision's bundle then holds
``<graph>.onnx.data`` beside each graph, verifies, and samples the chunk the inline bundle does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import uses_external_data

from edge.bundle import verify
from edge.policy import ChunkRequest
from export import onnx_files


def _chunk(bundle) -> np.ndarray:
    from edge.assembly import load

    man, _, den = load(str(bundle), "x86-cpu" if "cpu" in bundle.name else "x86-cuda")
    rng = np.random.default_rng(0)
    h, w = man.spec.image_hw
    den.set_observation(rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                        np.array([2, 5, 13, 0, 0, 0][: man.spec.max_tokens], np.int64),
                        rng.normal(size=man.spec.state_dim).astype(np.float32))  # fmt: skip
    eps = rng.standard_normal(den.noise_shape).astype(np.float32)
    return np.array(den.denoise(eps, None, ChunkRequest(d=0, s=8, r=0)))


@pytest.mark.parametrize("precision,profile", [("fp16", "x86-cuda"), ("int8", "x86-cpu")])
def test_a_graph_past_the_threshold_goes_with_its_external_data_into_the_bundle(
    tiny_checkpoints, tmp_path, export_tiny, monkeypatch, precision, profile
):
    pytest.importorskip("onnxruntime")
    ck = tiny_checkpoints["legato"]
    inline = export_tiny(ck, tmp_path / f"inline-{profile}", precision, profile, episodes=1)
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 0)
    ext = export_tiny(ck, tmp_path / f"ext-{profile}", precision, profile, episodes=1)
    man = verify(ext)
    for name in man.graphs:
        path = ext / f"{name}.onnx"
        files = onnx_files.graph_files(path)
        assert [f.name for f in files] == [f"{name}.onnx", f"{name}.onnx.data"], files
        model = onnx.load(str(path), load_external_data=False)
        assert any(uses_external_data(t) for t in model.graph.initializer)
        assert f"{name}.onnx.data" in man.data["files"]  # hashed, so verify sees it go missing
    assert not list(inline.glob("*.data"))
    if profile == "x86-cpu":  # the CPU runs both: the same chunk
        np.testing.assert_array_equal(_chunk(inline), _chunk(ext))
    (ext / f"{next(iter(man.graphs))}.onnx.data").unlink()
    from edge.errors import BundleError

    with pytest.raises(BundleError):
        verify(ext)


def test_save_graph_keeps_a_small_graph_in_one_file(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    w = onnx.numpy_helper.from_array(np.ones(2, np.float32), "w")
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    g = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = onnx.helper.make_model(g)
    onnx_files.save_graph(model, tmp_path / "g.onnx")
    assert onnx_files.graph_files(tmp_path / "g.onnx") == [tmp_path / "g.onnx"]
    assert onnx_files.weight_bytes(model) == 8
