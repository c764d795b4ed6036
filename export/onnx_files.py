"""An ONNX graph as files: the .onnx and, past protobuf's 2 GB limit, its external data.

A graph whose weights pass :data:`EXTERNAL_DATA_ABOVE` bytes (a full-size pi0.5: 13 GB fp32,
6.7 GB fp16, about 3.3 GB int8) cannot be one protobuf message: its tensors go to one file beside
it, ``<graph>.onnx.data``, that the .onnx names by relative path (onnxruntime and TensorRT's parser
read it from the graph's folder). Every writer of a graph (the precision transforms, the
adapters' exporters) decides by the same threshold, and every copy of a graph into a bundle
carries the files the graph names (:func:`graph_files`), so a bundle is whole at any size.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

# bytes of weights above which a graph's tensors go to external data (protobuf's limit is 2 GiB;
# the margin leaves room for the graph itself)
EXTERNAL_DATA_ABOVE = 1_800_000_000


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers held in ``model`` (loaded with their external data)."""
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
        else:  # typed fields (float_data, int64_data, ...): count by element size
            n = 1
            for d in t.dims:
                n *= int(d)
            total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def needs_external_data(nbytes: int) -> bool:
    return nbytes > EXTERNAL_DATA_ABOVE


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path``: one file, or with its tensors in ``<name>.data`` beside it where
    its weights pass :data:`EXTERNAL_DATA_ABOVE`."""
    path = Path(path)
    if needs_external_data(weight_bytes(model)):
        data = path.with_name(path.name + ".data")
        data.unlink(missing_ok=True)  # onnx appends to an existing file
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)  # fmt: skip
    else:
        onnx.save_model(model, str(path))


def graph_files(path: Path) -> list[Path]:
    """The graph and every external data file it names (relative to its folder), in that order."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    found: dict[str, None] = {}
    for t in model.graph.initializer:
        if uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc is not None:
                found[loc] = None
    return [path, *(path.parent / loc for loc in found)]


def copy_graph(src: Path, dst: Path) -> list[Path]:
    """Copy graph ``src`` to ``dst`` with its external data files (same relative names beside it);
    returns the files written."""
    src, dst = Path(src), Path(dst)
    out = []
    for f in graph_files(src):
        target = dst if f == src else dst.parent / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        out.append(target)
    return out
