"""tegrastats lines -> numbers (GPU load, memory, temperatures, power), and a recorder for
`legato profile` on a Jetson.

A line (``tegrastats --interval <ms>``) is a sequence of tokens; the parser walks them and keeps
what it knows, skipping the rest (new engines and rails appear with every release):
- optional leading timestamp ``MM-DD-YYYY HH:MM:SS``;
- ``RAM used/totalMB (lfb ...)``, optional ``SWAP used/totalMB (cached NMB)``;
- ``CPU [p%@f,off,...]`` (``off`` cores are None);
- ``GR3D_FREQ N%``, ``N%@F``, ``N%@[F,F]`` or ``@[F,F,F]`` (Thor: no utilisation -> None);
- ``EMC_FREQ N%@F``; other engines (``NVDEC off``, ``VIC 31%@115``, ``NAME_FREQ @F``, ``APE 174``)
  are skipped;
- temperatures ``name@T C`` in either case, ``-256C`` (powered off) -> None, JetPack 7.2's
  ``name@A C/B C`` (first value kept);
- power rails ``NAME cur mW/avg mW`` or JetPack 7.2's triple (first two kept), unit optional.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

_TS = re.compile(r"^\d\d-\d\d-\d{4}$")
_RAM = re.compile(r"^(\d+)/(\d+)MB$")
_TEMP = re.compile(r"^([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?$")
_POWER = re.compile(r"^(\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?$")
_GR3D = re.compile(r"^(?:(\d+)%)?(?:@\[?([\d,]*)\]?)?$")
_PCT_AT = re.compile(r"^(\d+)%@(\d+)$")


@dataclass
class TegraSample:
    time: str | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load: list[int | None] = field(default_factory=list)  # % per core, None = off
    cpu_freq_mhz: list[int | None] = field(default_factory=list)
    gpu_load: int | None = None  # GR3D %, None where tegrastats gives none (Thor)
    gpu_freq_mhz: list[int] = field(default_factory=list)
    emc_load: int | None = None
    temps_c: dict[str, float | None] = field(default_factory=dict)  # lower-cased sensor -> C
    power_mw: dict[str, int] = field(default_factory=dict)  # rail -> current mW
    power_avg_mw: dict[str, int] = field(default_factory=dict)  # rail -> average mW


def parse_line(line: str) -> TegraSample:
    """Parse one tegrastats line; unknown tokens are skipped, never fatal."""
    tok = line.split()
    s = TegraSample()
    i = 0
    if len(tok) >= 2 and _TS.match(tok[0]):
        s.time = f"{tok[0]} {tok[1]}"
        i = 2
    while i < len(tok):
        t = tok[i]
        nxt = tok[i + 1] if i + 1 < len(tok) else ""
        if t in ("RAM", "SWAP") and _RAM.match(nxt):
            m = _RAM.match(nxt)
            assert m is not None
            used, total = int(m.group(1)), int(m.group(2))
            if t == "RAM":
                s.ram_used_mb, s.ram_total_mb = used, total
            else:
                s.swap_used_mb, s.swap_total_mb = used, total
            i += 2
            # skip the parenthesised note: "(lfb 25x4MB)" or "(cached 174MB)"
            if i < len(tok) and tok[i].startswith("("):
                while i < len(tok) and not tok[i].endswith(")"):
                    i += 1
                i += 1
            continue
        if t == "CPU" and nxt.startswith("["):
            for core in nxt.strip("[]").split(","):
                if "%@" in core:
                    p, f = core.split("%@", 1)
                    s.cpu_load.append(_int(p))
                    s.cpu_freq_mhz.append(_int(f))
                else:  # "off"
                    s.cpu_load.append(None)
                    s.cpu_freq_mhz.append(None)
            i += 2
            continue
        if t == "GR3D_FREQ":
            m = _GR3D.match(nxt)
            if m:
                s.gpu_load = int(m.group(1)) if m.group(1) is not None else None
                s.gpu_freq_mhz = [int(x) for x in (m.group(2) or "").split(",") if x]
                i += 2
                continue
        if t == "EMC_FREQ":
            m = _PCT_AT.match(nxt)
            if m:
                s.emc_load = int(m.group(1))
                i += 2
                continue
        m = _TEMP.match(t)
        if m:
            v = float(m.group(2))
            s.temps_c[m.group(1).lower()] = None if v <= -256 else v
            i += 1
            continue
        pm = _POWER.match(nxt)
        if re.match(r"^[A-Z][A-Z0-9_]*$", t) and pm:
            s.power_mw[t] = int(pm.group(1))
            s.power_avg_mw[t] = int(pm.group(2))
            i += 2
            continue
        i += 1
    return s


def _int(x: str) -> int | None:
    try:
        return int(x)
    except ValueError:
        return None


class TegrastatsRecorder:
    """Runs ``tegrastats --interval ms`` in a thread and parses every line (Jetson only)."""

    def __init__(self, interval_ms: int = 100, exe: str = "tegrastats") -> None:
        self.proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        self.samples: list[TegraSample] = []
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()

    @staticmethod
    def start_if_available(interval_ms: int = 100) -> TegrastatsRecorder | None:
        exe = shutil.which("tegrastats")
        return TegrastatsRecorder(interval_ms, exe) if exe else None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.samples.append(parse_line(line))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._thread.join(timeout=2.0)

    def summary(self) -> dict[str, Any]:
        """Dotted keys: tegra.gpu_load.mean/max, tegra.ram_used_mb.max, tegra.temp_c.<s>.max,
        tegra.power_mw.<rail>.mean."""
        out: dict[str, Any] = {"tegra.samples": len(self.samples)}
        ss = self.samples
        g = [x.gpu_load for x in ss if x.gpu_load is not None]
        if g:
            out["tegra.gpu_load.mean"], out["tegra.gpu_load.max"] = sum(g) / len(g), max(g)
        r = [x.ram_used_mb for x in ss if x.ram_used_mb is not None]
        if r:
            out["tegra.ram_used_mb.max"] = max(r)
        for name in sorted({k for x in ss for k in x.temps_c}):
            v = [x.temps_c[name] for x in ss if x.temps_c.get(name) is not None]
            if v:
                out[f"tegra.temp_c.{name}.max"] = max(v)  # type: ignore[type-var]
        for rail in sorted({k for x in ss for k in x.power_mw}):
            v2 = [x.power_mw[rail] for x in ss if rail in x.power_mw]
            out[f"tegra.power_mw.{rail}.mean"] = sum(v2) / len(v2)
        return out
