"""bench/bench_smolvla.py's ceilings and guards at toy sizes: the numbers in docs/performance.md
divide by these ceilings, so they must compute what they claim (timings stay in the bench)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_smolvla.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_smolvla", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


@pytest.mark.parametrize("threads", [1, 2])
def test_the_mlp_chain_is_the_swiglu_blocks_it_counts(bench, threads):
    sess, feeds, flops = bench.onnx_mlp_chain(tokens=5, width=8, ff=12, layers=3, threads=threads)
    assert flops == 3 * 3 * 2 * 5 * 8 * 12  # three (5 x 8) x (8 x 12)-sized GEMMs per block
    assert [i.name for i in sess.get_inputs()] == ["x"]  # the weights are constants, as in the step
    # The same weights, drawn as the bench draws them, through numpy.
    rng = np.random.default_rng(3)
    x = feeds["x"].astype(np.float64)
    weights = [
        [rng.standard_normal(s) / np.sqrt(s[0]) for s in ((8, 12), (8, 12), (12, 8))] for _ in range(3)
    ]
    for g, u, d in weights:
        x = x + (_silu(x @ g.astype(np.float32)) * (x @ u.astype(np.float32))) @ d.astype(np.float32)
    np.testing.assert_allclose(sess.run(None, feeds)[0], x, rtol=1e-4, atol=1e-4)


def test_the_gemm_ceiling_is_one_square_matmul(bench):
    sess, feeds = bench.onnx_gemm(threads=1, n=16)
    (out,) = sess.run(None, feeds)
    b = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)
    np.testing.assert_allclose(out, feeds["a"] @ b, rtol=1e-5, atol=1e-4)


def test_a_graphs_folder_of_other_weights_is_refused(bench, tmp_path):
    bench.weights_source(tmp_path / "g", "policy A")
    bench.weights_source(tmp_path / "g", "policy A")  # the same weights: reused
    with pytest.raises(SystemExit, match="holds graphs of policy A, not of policy B"):
        bench.weights_source(tmp_path / "g", "policy B")
    assert json.loads((tmp_path / "g" / "source.json").read_text()) == {"weights": "policy A"}


def test_threads_below_one_are_refused_before_any_work():
    r = subprocess.run([sys.executable, str(BENCH), "--threads", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--threads must be at least 1, not 0" in r.stderr


def test_the_step_bounds_divide_its_flops_by_each_ceiling(bench):
    b = bench.step_bounds(
        10e9, chain_gflops=100.0, gemm_gflops=250.0, eager_steps={"eager": 0.2, "lerobot": 0.25}
    )
    assert b["onnx_fp32_step_at_mlp_chain_rate_s"] == pytest.approx(0.1)
    assert b["onnx_fp32_step_at_gemm_peak_s"] == pytest.approx(0.04)
    assert b["max_speedup_over_eager"] == pytest.approx(2.0)  # the chain's floor, the older key
    assert b["max_speedup_over_lerobot_at_gemm_peak"] == pytest.approx(6.25)
    assert bench.step_bounds(10e9, 100.0, 250.0, {}).keys() == {
        "onnx_fp32_step_at_mlp_chain_rate_s",
        "onnx_fp32_step_at_gemm_peak_s",
    }
