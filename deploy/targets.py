"""Where `legato flash` writes: a local folder, or ssh://[user@]host[:port]/path through the user's own
OpenSSH client.

Both kinds offer the same two operations: ``call(op, request) -> reply`` runs one operation of
deploy.agent on the target, and ``put(files, release)`` places files in the target's upload
area. A local target runs the agent in this process; an ssh target runs
``PYTHON -m deploy.agent OP`` through ``ssh`` and uploads with ``scp``, so the user's keys, agent,
~/.ssh/config (or --ssh-config), jump hosts and known_hosts all apply.

A host key is never trusted silently: every ssh and scp runs with BatchMode=yes (never a
prompt), and with StrictHostKeyChecking=yes unless the user's configuration chose another
value (``ssh -G`` says). One master connection (ControlMaster, started in the foreground with
``-f -N`` so no background process holds our pipes) carries every call to a target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge.errors import LegatoError

DEFAULT_TARGET_PYTHON = "~/legato-edge/.venv/bin/python"  # docs/jetson.md installs there


class FlashError(LegatoError):
    """A flash, rollback or check that failed on one target; nothing was switched."""


@dataclass
class LocalTarget:
    """A folder on this machine."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def call(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        from deploy import agent

        reply = agent.handle(op, {"dest": str(self.path), **req})
        if not reply.get("ok"):
            raise FlashError(f"{self.name}: {reply.get('error')}")
        return reply

    def put(self, files: list[tuple[Path, str]], release: str) -> None:
        up = self.path / ".incoming" / release
        for src, rel in files:
            dst = up / rel
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            except OSError as e:
                raise FlashError(f"{self.name}: cannot copy {rel}: {e.strerror or e}") from None


def _classify_ssh_failure(name: str, host: str, port: int | None, stderr: str) -> str:
    """One line that says what went wrong with ssh and what fixes it."""
    text = " ".join(stderr.split())
    keyscan = f"ssh-keyscan{f' -p {port}' if port else ''} {host}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (
            f"{name}: the host key of {host} has CHANGED since it was recorded in known_hosts; nothing was "
            f"changed (if the device was reinstalled, check its new fingerprint, then ssh-keygen -R {host})"
        )
    if (
        "Host key verification failed" in text
        or "No ED25519 host key is known" in text
        or "host key is known" in text
    ):
        return (
            f"{name}: unknown host key for {host}; nothing was changed (connect once with ssh to check the "
            f"fingerprint and record it, or add it with {keyscan} >> ~/.ssh/known_hosts after checking it)"
        )
    if any(
        s in text
        for s in (
            "timed out",
            "Connection refused",
            "No route to host",
            "Network is unreachable",
            "Could not resolve",
            "Connection closed by",
            "Connection reset",
        )
    ):
        why = re.sub(r"^ssh: ", "", text.split("\r")[0])[-160:]
        return f"{name}: target does not answer ({why}); nothing was changed"
    if "Permission denied" in text:
        return (
            f"{name}: ssh login refused ({text[-120:]}); nothing was changed (check the user and that your "
            "key is in the device's ~/.ssh/authorized_keys)"
        )
    last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return f"{name}: ssh failed ({last[-1].strip()[:200] if last else 'no message'}); nothing was changed"


@dataclass
class SshTarget:
    """ssh://[user@]host[:port]/path: the path is absolute, or ~/... for the login's home."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None
    ssh_config: str | None = None
    connect_timeout: int = 10
    python: str = DEFAULT_TARGET_PYTHON
    # probe / check / rollback answer within this; uploads and installs (an engine build on an Orin
    # Nano takes minutes) have no wall-clock bound: ServerAlive* ends a dead connection in ~15 s
    op_timeout: float = 120.0
    _ctl: str | None = field(default=None, repr=False)
    _dir: str | None = field(default=None, repr=False)
    _strict: list[str] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{who}{self.host}{port}{self.path if self.path.startswith('/') else '/' + self.path}"

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _config_opts(self) -> list[str]:
        return ["-F", self.ssh_config] if self.ssh_config else []

    def _strict_opts(self) -> list[str]:
        """StrictHostKeyChecking=yes unless the user's own configuration set something else."""
        cmd = ["ssh", "-G", *self._config_opts(), *(["-p", str(self.port)] if self.port else []), self.login]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            raise FlashError(f"{self.name}: cannot run the ssh client ({e}); install OpenSSH") from None
        m = re.search(r"^stricthostkeychecking (\S+)$", out.stdout, re.M)
        value = m.group(1) if m else "ask"
        return ["-o", "StrictHostKeyChecking=yes"] if value in ("ask", "true") else []

    def _common(self) -> list[str]:
        opts = [
            *self._config_opts(),
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            *self._strict,
        ]
        if self._ctl:
            opts += ["-o", f"ControlPath={self._ctl}", "-o", "ControlMaster=no"]
        return opts

    def open(self) -> None:
        """Start the master connection: host key, login and reachability are settled here."""
        if shutil.which("ssh") is None:
            raise FlashError(f"{self.name}: no ssh client on this machine (install openssh-client)")
        self._strict = self._strict_opts()
        self._dir = tempfile.mkdtemp(prefix="lf-")  # short: a unix socket path has ~100 bytes
        ctl = os.path.join(self._dir, "m")
        cmd = [
            "ssh",
            *self._common(),
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPath={ctl}",
            "-o",
            "ControlPersist=60",
            "-f",
            "-N",
            *(["-p", str(self.port)] if self.port else []),
            self.login,
        ]
        with tempfile.TemporaryFile() as err:
            try:
                rc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    timeout=self.connect_timeout * 3 + 10,
                ).returncode
            except subprocess.TimeoutExpired:
                self.close()
                raise FlashError(
                    f"{self.name}: target does not answer (no ssh session after "
                    f"{self.connect_timeout * 3 + 10} s); nothing was changed"
                ) from None
            err.seek(0)
            msg = err.read().decode(errors="replace")
        if rc != 0:
            self.close()
            raise FlashError(_classify_ssh_failure(self.name, self.host, self.port, msg))
        self._ctl = ctl

    def close(self) -> None:
        if self._ctl:
            subprocess.run(
                ["ssh", "-o", f"ControlPath={self._ctl}", "-O", "exit", self.login],
                capture_output=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            )
            self._ctl = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _remote_path(self, p: str) -> str:
        """Quote a path for the remote shell, keeping a leading ~/ expandable."""
        if p == "~":
            return '"$HOME"'
        if p.startswith("~/"):
            return '"$HOME"/' + shlex.quote(p[2:])
        return shlex.quote(p)

    def _ssh(self, remote: str, stdin: str, timeout: float | None) -> subprocess.CompletedProcess:
        """Run `remote`; `stdin` is sent as one line and the pipe stays open until the command has
        answered, so the target can tell a live workstation from a killed one (agent._client_gone)."""
        cmd = ["ssh", *self._common(), *(["-p", str(self.port)] if self.port else []), self.login, remote]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdin is not None and proc.stdout is not None  # internal invariant: pipes requested
            fired = threading.Event()

            def expire() -> None:
                fired.set()
                proc.kill()

            timer = threading.Timer(timeout, expire) if timeout else None
            try:
                if timer:
                    timer.start()
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(stdin.encode() + b"\n")
                    proc.stdin.flush()
                out = proc.stdout.read()
            finally:
                if timer:
                    timer.cancel()
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                rc = proc.wait()
            if fired.is_set():
                raise FlashError(f"{self.name}: no answer from the target within {timeout:.0f} s")
            err.seek(0)
            return subprocess.CompletedProcess(
                cmd, rc, out.decode(errors="replace"), err.read().decode(errors="replace")
            )

    def call(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        remote = f"{self._remote_path(self.python)} -m deploy.agent {op}"
        timeout = None if op == "install" else self.op_timeout
        out = self._ssh(remote, json.dumps({"dest": self.path, **req}), timeout)
        if out.returncode == 255:
            raise FlashError(_classify_ssh_failure(self.name, self.host, self.port, out.stderr))
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        try:
            reply = json.loads(line)
        except ValueError:
            err = " ".join(out.stderr.split())[-200:]
            if "No module named" in err or "not found" in err or out.returncode == 127:
                raise FlashError(
                    f"{self.name}: no legato-edge for {self.python} on the target ({err}); install it "
                    "there (docs/jetson.md) or pass --target-python"
                ) from None
            raise FlashError(
                f"{self.name}: the target's agent failed (exit {out.returncode}: {err})"
            ) from None
        if not reply.get("ok"):
            raise FlashError(f"{self.name}: {reply.get('error')}")
        return reply

    def put(self, files: list[tuple[Path, str]], release: str) -> None:
        """Upload with scp into DEST/.incoming/RELEASE (a staging copy keeps the relative paths)."""
        if not files:
            return
        if shutil.which("scp") is None:
            raise FlashError(f"{self.name}: no scp on this machine (install openssh-client)")
        incoming = f"{self.path.rstrip('/')}/.incoming"
        mk = self._ssh(f"mkdir -p -- {self._remote_path(incoming)}", "", 60)
        if mk.returncode != 0:
            raise FlashError(f"{self.name}: cannot create {incoming} ({' '.join(mk.stderr.split())[-160:]})")
        with tempfile.TemporaryDirectory(prefix="legato-flash-") as tmp:
            stage = Path(tmp) / release
            for src, rel in files:
                dst = stage / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            cmd = [
                "scp",
                "-q",
                "-r",
                *self._common(),
                *(["-P", str(self.port)] if self.port else []),
                str(stage),
                f"{self.login}:{incoming}/",
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            text = " ".join(out.stderr.split())
            if "No space left" in text:
                raise FlashError(
                    f"{self.name}: the target's disk is full (scp: {text[-160:]}); the current "
                    "release is untouched"
                )
            raise FlashError(_classify_ssh_failure(self.name, self.host, self.port, out.stderr))


def parse_target(text: str, **ssh_opts: Any) -> LocalTarget | SshTarget:
    """A --target value: ssh://[user@]host[:port]/path, or a local folder."""
    if "://" not in text:
        if text.startswith("ssh:"):
            raise FlashError(f"target {text!r}: write ssh targets as ssh://[user@]host[:port]/path")
        return LocalTarget(Path(text).expanduser().absolute())
    u = urlsplit(text)
    if u.scheme != "ssh":
        raise FlashError(
            f"target {text!r}: unknown scheme {u.scheme!r} (use a folder or ssh://user@host/path)"
        )
    if not u.hostname:
        raise FlashError(f"target {text!r} names no host (ssh://[user@]host[:port]/path)")
    try:
        port = u.port
    except ValueError:
        raise FlashError(f"target {text!r}: the port is not a number in 1..65535") from None
    path = unquote(u.path)
    if path.startswith("/~"):
        path = path[1:]  # ssh://host/~/legato: relative to the login's home
    if path in ("", "/"):
        raise FlashError(f"target {text!r} names no folder (ssh://host/opt/legato, or ssh://host/~/legato)")
    return SshTarget(
        host=u.hostname, path=path, user=unquote(u.username) if u.username else None, port=port, **ssh_opts
    )
