"""The vocabulary of `legato doctor`: a :class:`Check` (ok / warn / FAIL, what was found, the fix),
the injectable :class:`Env` every check reads the device through, and the :class:`Ctx` a check
receives (env, profile, device facts, bundle folder, port)."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str  # what was checked ("serial port")
    status: str  # ok | warn | FAIL
    detail: str  # what was found, with the values
    fix: str = ""  # the command (or the step) that fixes it; empty when ok

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def find_module(name: str) -> Any:
    """The imported module `name` ("tensorrt", "cuda.bindings"), or None when absent or broken.

    A top-level name that resolves only to a namespace package (an empty leftover folder called
    tensorrt) counts as absent; a dotted name is found inside a namespace parent (``cuda`` is one
    since cuda-python split into cuda-bindings, so ``cuda.bindings`` is what is probed)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # the parent is missing, or a broken parent package
        return None
    if spec is None or spec.origin in (None, "namespace"):
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install may raise anything on import
        return None


@dataclass
class Env:
    """Everything doctor reads, injectable."""

    root: Path = Path("/")
    runner: Callable[..., Any] = subprocess.run
    module: Callable[[str], Any] = find_module
    machine: str = field(default_factory=platform.machine)
    python: tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    user: str | None = None  # None: the current user
    groups: tuple[str, ...] | None = None  # None: the current user's groups
    disk_free: Callable[[Path], int] | None = None

    def path(self, where: str | Path) -> Path:
        """A device path under the root; a relative path is this machine's, from the working
        directory (``--bundle-dir bundles/x``), never re-rooted."""
        p = Path(where)
        if not p.is_absolute():
            return p.absolute()
        return self.root / str(p).lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None

    def run(self, argv: list[str]) -> tuple[int, str] | None:
        if self.runner is subprocess.run and shutil.which(argv[0]) is None:
            return None
        try:
            out = self.runner(argv, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.returncode, (out.stdout or "") + (out.stderr or "")


@dataclass(frozen=True)
class Ctx:
    """What every check receives."""

    env: Env
    profile: Any  # edge.profiles.Profile or None
    facts: dict[str, Any]  # deploy.doctor.facts
    bundle_dir: Path  # as the user gave it (messages); read through env.path
    port: str | None = None

    @property
    def uses_tensorrt(self) -> bool:
        return bool(self.profile is not None and self.profile.uses_tensorrt)

    @property
    def jetson(self) -> bool:
        return self.facts.get("l4t") is not None
