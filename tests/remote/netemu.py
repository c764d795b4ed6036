"""An emulated network between this namespace and one the test creates: delay, jitter and loss.

``EmulatedLink`` makes a network namespace and joins it to this one with a point-to-point link
(``here`` and ``there``: a /30 of 198.18.0.0/15, RFC 2544's benchmarking range, chosen from the
process id so that two links at once do not collide; used only inside this pair):
- where the kernel has ``sch_netem``: a veth pair with ``tc qdisc ... netem delay D J loss L`` on
  this side's egress (the robot's requests and ACKs);
- where it has not (CONFIG_NET_SCH_NETEM unset, as on this project's machines): two TUN devices,
  one each side, and a forwarder process that copies IP packets between them the way netem does:
  each packet of the emulated direction delayed by D + U(-J, J) (independently, so jitter
  reorders, as netem's does), dropped with probability L; the other direction passes at once.
  TCP over it sees real loss (retransmissions) and real reordering.
Needs root (CAP_NET_ADMIN) and network namespaces; :func:`unavailable` says why not where not.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

NET = 0xC6120000  # 198.18.0.0/15


def _addr(n: int) -> str:
    return ".".join(str((n >> s) & 0xFF) for s in (24, 16, 8, 0))


TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
CLONE_NEWNET = 0x40000000


def _run(*cmd: str, ns: str | None = None) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    return subprocess.run(full, capture_output=True, text=True, timeout=20)


def has_netem() -> bool:
    """Whether tc can make a netem qdisc here (tried on a throwaway namespace's loopback)."""
    ns = f"lgr-probe-{os.getpid()}"
    if _run("ip", "netns", "add", ns).returncode != 0:
        return False
    try:
        return _run("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", ns=ns).returncode == 0
    finally:
        _run("ip", "netns", "del", ns)


def unavailable() -> str | None:
    """Why an emulated link cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for a network namespace"
    if not shutil.which("ip"):
        return "needs iproute2 (ip, tc): apt-get install iproute2"
    ns = f"lgr-check-{os.getpid()}"
    r = _run("ip", "netns", "add", ns)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    _run("ip", "netns", "del", ns)
    if not has_netem() and not Path("/dev/net/tun").exists():
        return "the kernel has neither sch_netem nor /dev/net/tun"
    return None


class EmulatedLink:
    """``with EmulatedLink(30, 10, 0.01) as link:`` run a server in ``link.ns`` bound to ``link.there``."""

    def __init__(
        self,
        delay_ms: float,
        jitter_ms: float,
        loss: float,
        seed: int = 0,
        both: bool = False,
        force_tun: bool = False,
    ) -> None:
        self.delay_ms, self.jitter_ms, self.loss, self.seed, self.both = delay_ms, jitter_ms, loss, seed, both
        tag = f"{os.getpid() % 100000}"
        self.ns, self.dev_here, self.dev_there = f"lgr-{tag}", f"lgrA{tag}", f"lgrB{tag}"
        self.kind = "tun" if force_tun or not has_netem() else "netem"
        base = NET + 4 * (os.getpid() % (1 << 15))
        self.here, self.there = _addr(base + 1), _addr(base + 2)
        self.forwarder: subprocess.Popen | None = None

    def __enter__(self) -> EmulatedLink:
        why = unavailable()
        if why:
            raise RuntimeError(why)
        self._check(_run("ip", "netns", "add", self.ns))
        try:
            self._check(_run("ip", "link", "set", "lo", "up", ns=self.ns))
            if self.kind == "netem":
                self._veth()
            else:
                self._tun()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _check(self, r: subprocess.CompletedProcess) -> None:
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(r.args)}: {r.stderr.strip()}")

    def _netem_args(self) -> list[str]:
        return ["netem", "delay", f"{self.delay_ms}ms", f"{self.jitter_ms}ms", "loss", f"{self.loss * 100}%"]

    def _veth(self) -> None:
        a, b = self.dev_here, self.dev_there
        self._check(_run("ip", "link", "add", a, "type", "veth", "peer", "name", b))
        self._check(_run("ip", "link", "set", b, "netns", self.ns))
        self._check(_run("ip", "addr", "add", f"{self.here}/30", "dev", a))
        self._check(_run("ip", "link", "set", a, "up"))
        self._check(_run("ip", "addr", "add", f"{self.there}/30", "dev", b, ns=self.ns))
        self._check(_run("ip", "link", "set", b, "up", ns=self.ns))
        self._check(_run("tc", "qdisc", "add", "dev", a, "root", *self._netem_args()))
        if self.both:
            self._check(_run("tc", "qdisc", "add", "dev", b, "root", *self._netem_args(), ns=self.ns))

    def _tun(self) -> None:
        a, b = self.dev_here, self.dev_there
        self._check(_run("ip", "tuntap", "add", "dev", a, "mode", "tun"))
        self._check(_run("ip", "tuntap", "add", "dev", b, "mode", "tun", ns=self.ns))
        self._check(_run("ip", "addr", "add", self.here, "peer", self.there, "dev", a))
        self._check(_run("ip", "addr", "add", self.there, "peer", self.here, "dev", b, ns=self.ns))
        cmd = [
            sys.executable,
            __file__,
            self.ns,
            a,
            b,
            str(self.delay_ms),
            str(self.jitter_ms),
            str(self.loss),
            str(self.seed),
            "1" if self.both else "0",
        ]
        self.forwarder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.forwarder.stdout is not None
        line = self.forwarder.stdout.readline()  # "ready" once both devices are attached
        if line.strip() != "ready":
            raise RuntimeError(f"TUN forwarder did not start: {line}{self.forwarder.stderr.read()}")  # type: ignore[union-attr]
        self._check(_run("ip", "link", "set", a, "up"))
        self._check(_run("ip", "link", "set", b, "up", ns=self.ns))

    def __exit__(self, *exc: object) -> None:
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.terminate()
            self.forwarder.wait(5)
        _run("ip", "link", "del", self.dev_here)
        _run("ip", "netns", "del", self.ns)

    def stats(self) -> dict[str, int]:
        """The forwarder's packet counts (TUN kind; empty for netem)."""
        return {}


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def forward(
    ns: str, a: str, b: str, delay_ms: float, jitter_ms: float, loss: float, seed: int, both: bool
) -> None:
    """Copy packets between TUN ``a`` (this namespace) and ``b`` (in ``ns``): a -> b delayed and
    lossy, b -> a too when ``both``, else at once. Runs until killed."""
    fa = _open_tun(a)
    # a network, not a process: where permitted, the scheduler must not make it slower
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
    _setns(f"/run/netns/{ns}")
    fb = _open_tun(b)
    print("ready", flush=True)
    rng = random.Random(seed)
    queue: list[tuple[float, int, int, bytes]] = []  # (due, order, fd out, packet)
    n = 0
    peer = {fa: fb, fb: fa}
    while True:
        wait = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        ready, _, _ = select.select([fa, fb], [], [], wait)
        now = time.monotonic()
        for fd in ready:
            pkt = os.read(fd, 65536)
            if fd == fa or both:
                if rng.random() < loss:
                    continue
                due = now + max(0.0, delay_ms + rng.uniform(-jitter_ms, jitter_ms)) / 1000.0
            else:
                due = now
            n += 1
            heapq.heappush(queue, (due, n, peer[fd], pkt))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, pkt = heapq.heappop(queue)
            try:
                os.write(out, pkt)
            except OSError:  # the device went down: the link is being torn down
                return


if __name__ == "__main__":
    ns_, a_, b_, d_, j_, l_, s_, both_ = sys.argv[1:9]
    forward(ns_, a_, b_, float(d_), float(j_), float(l_), int(s_), both_ == "1")
