"""Fixtures for the export tests: tiny exported bundles (seconds each), shared per session."""

from __future__ import annotations

import pytest


def _export_tiny(ck, out, precision="fp32", profile="x86-cpu", episodes=2, **kw):
    from export.pipeline import ExportOptions, export_bundle

    opt = ExportOptions(
        checkpoint=ck,
        profile=profile,
        out=out,
        precision=precision,
        episodes=episodes,
        parity_samples=4,
        calibration_samples=4,
        progress=lambda msg: None,
        **kw,
    )
    return export_bundle(opt)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoints, tmp_path_factory):
    """An fp32 bundle of the tiny Legato checkpoint (x86-cpu profile)."""
    return _export_tiny(tiny_checkpoints["legato"], tmp_path_factory.mktemp("bundles") / "tiny-fp32")


@pytest.fixture(scope="session")
def tiny_standard_bundle(tiny_checkpoints, tmp_path_factory):
    """The same with standard-op attention only (what TensorRT profiles get): onnx.reference runs it."""
    return _export_tiny(
        tiny_checkpoints["legato"], tmp_path_factory.mktemp("bundles") / "tiny-std", attention="standard"
    )


@pytest.fixture
def export_tiny():
    """export_tiny(checkpoint, out, precision="fp32", profile="x86-cpu", episodes=2, **options)."""
    return _export_tiny
