"""Tiny hand-made ONNX graphs for the runtime tests (no bundle, no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def affine_graph(path: Path, shape: tuple[int, ...] = (1, 16, 3), scale: float = 2.0) -> Path:
    """out = x * scale + bias, x float32 of `shape` (first dim symbolic 'b')."""
    dims: list = ["b", *shape[1:]]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)
    s = numpy_helper.from_array(np.array(scale, np.float32), "scale")
    bias = numpy_helper.from_array(np.arange(shape[-1], dtype=np.float32), "bias")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["m"]), helper.make_node("Add", ["m", "bias"], ["out"])],
        "affine",
        [x],
        [out],
        [s, bias],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class FnEngine:
    """An edge.engine.Engine whose run() is a numpy function (fake graphs for the sampler tests)."""

    def __new__(cls, *a, **k):
        from edge.engine import Engine

        if not issubclass(cls, Engine):  # build the subclass lazily so importing this file stays cheap
            cls = type("FnEngine", (cls, Engine), {})
        return object.__new__(cls)

    def __init__(self, name, inputs, outputs, fn):
        from edge.engine import TensorSpec

        self.name = name
        self.input_specs = {n: TensorSpec(n, tuple(s), np.dtype(d)) for n, (s, d) in inputs.items()}
        self.output_specs = {n: TensorSpec(n, tuple(s), np.dtype(d)) for n, (s, d) in outputs.items()}
        self._alloc()
        self.fn = fn
        self.runs = 0

    def _run_impl(self):
        self.fn(self.inputs, self.outputs)


def fake_adapter(method="legato", n=5, *, h=16, a=3, s=6, image_hw=(8, 8), max_tokens=4, norm=None,
                 time="t0-noise", action_pad=None, per_chunk_time=False, cameras=("top",), mask=False,
                 d_max=4, r_max=8):  # fmt: skip
    """An edge.adapter.AdapterSpec as an adapter would declare it, for fake graphs."""
    from edge.adapter import AdapterSpec
    from edge.normalize import Normalizer

    rng = np.random.default_rng(0)
    nm = norm or Normalizer(
        rng.normal(size=s).astype(np.float32),
        rng.uniform(0.5, 2, s).astype(np.float32),
        rng.normal(size=(h, a)).astype(np.float32) * 0.1,
        rng.uniform(0.1, 1, (h, a)).astype(np.float32),
    )
    hi, wi = image_hw
    cams = [{"name": c, "input": "image" if len(cameras) == 1 else f"image_{c}", "height": hi, "width": wi}
            for c in cameras]  # fmt: skip
    d = {
        "name": "fake", "method": method, "time_convention": time, "horizon": h, "num_steps": n,
        "action_dim": a, "action_pad": action_pad or a, "state_dim": s, "state_pad": s, "control_hz": 50.0,
        "schedule": {"shape": "linear", "d_max": d_max, "r_max": r_max},
        "capabilities": {"omega": True, "hard_prefix": not per_chunk_time, "fused": False},
        "observation": {"cameras": cams, "state": "state",
                        "language": {"tokens": "tokens", "mask": "mask" if mask else None,
                                     "max_tokens": max_tokens, "vocab_size": 10, "pad_id": 0,
                                     "tokenizer": None, "append": ""}},
        "normalization": nm.to_dict(),
        "graphs": {"prefix": {"outputs": ["kv", "mod", "cond"]},
                   "flow_head": {"x": "y", "t": "t", "omega": "omega", "velocity": "v",
                                 "context": {"kv": "kv", "mod": "mod", "cond": "cond"}}, "fused": None},
    }  # fmt: skip
    return AdapterSpec.from_dict(d)


def true_velocity(y, t, omega, kv_mean, cond0, mod_row):
    """The fake field in t = 0 noise: v = tanh(y (1 + kv) + cond) (1 + mod[t index]) - omega / 2."""
    return np.tanh(y * (1.0 + kv_mean) + cond0) * (1.0 + mod_row)[None, :, None] - omega[..., None] / 2


def fake_graphs(ad, c=4, layers=1, p=3):
    """A prefix and a flow head with the adapter's I/O names whose velocity depends on every input
    (true_velocity), in the adapter's time convention: a t1-noise head receives 1 - t and returns
    -v, a per-chunk-time head one t per chunk."""
    h, ap, n = ad.horizon, ad.action_pad, ad.num_steps
    f = "float32"
    kv_s, mod_s, cond_s = (1, layers, 2, p, c), (1, n + 1, layers, 6, c), (1, h, c)
    obs = ad.observation
    flip = ad.time_convention == "t1-noise"
    t_shape = (1, h) if ad.hard_prefix else (1,)

    def prefix_fn(i, o):
        m = sum(float(i[cam.input].mean()) / 255.0 * (k + 1) for k, cam in enumerate(obs.cameras))
        m += 0.1 * float(i["tokens"].sum() % 7)
        if obs.language.mask:
            m += 0.01 * float(i["mask"].sum())
        o["kv"][...] = m
        k = np.arange(n + 1, dtype=np.float32)[None, :, None, None, None]
        o["mod"][...] = 0.1 * k + 0.01 * float(i["state"].sum())
        o["cond"][...] = 0.05 * np.arange(h, dtype=np.float32)[None, :, None] + 0.1 * float(i["state"][0, 0])

    def head_fn(i, o):
        t = np.broadcast_to(i["t"], (1, h))
        t = 1.0 - t if flip else t
        k = np.rint(t[0] * n).astype(int)  # (h,)
        v = true_velocity(i["y"], t, i["omega"], i["kv"].mean(), i["cond"][..., :1], i["mod"][0, k, 0, 0, 0])
        o["v"][...] = -v if flip else v

    ins = {cam.input: ((1, cam.height, cam.width, 3), "uint8") for cam in obs.cameras}
    ins.update({"tokens": ((1, obs.language.max_tokens), "int64"), "state": ((1, ad.state_pad), f)})
    if obs.language.mask:
        ins["mask"] = ((1, obs.language.max_tokens), "bool")
    prefix = FnEngine("prefix", ins, {"kv": (kv_s, f), "mod": (mod_s, f), "cond": (cond_s, f)}, prefix_fn)
    head = FnEngine(
        "flow_head",
        {"y": ((1, h, ap), f), "t": (t_shape, f), "omega": ((1, h), f), "kv": (kv_s, f), "mod": (mod_s, f),
         "cond": (cond_s, f)},
        {"v": ((1, h, ap), f)},
        head_fn,
    )  # fmt: skip
    return prefix, head


def fake_denoiser(ad=None, mode=None, **kw):
    """A ChunkDenoiser over fake graphs (the runtime tests' model)."""
    from edge.denoiser import denoiser_for

    ad = ad or fake_adapter(**kw)
    prefix, head = fake_graphs(ad)
    return denoiser_for(ad, {"prefix": prefix, "flow_head": head}, mode=mode)
