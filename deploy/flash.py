"""`legato flash`: put a verified bundle on one or many targets, switch atomically, roll back.

For each target, in parallel (one summary line per device):
1. probe (writes nothing): the target's doctor facts, its releases, the files it already has
   (by sha256), its free disk;
2. refuse, with nothing changed, a profile whose [device] does not match those facts (board family,
   L4T by the TensorRT it ships, compute capability, memory: edge.device.profile_mismatch), or a
   disk without room for the files to send (plus engines when they are built there);
3. upload only the files the target lacks (scp for ssh targets) into its upload area;
4. install: the target assembles the release in a temporary folder (files it had are hard-linked,
   not sent), checks every sha256, builds TensorRT engines when the profile asks, swaps the
   release in and then switches `current` with one rename; `previous` keeps the one before.

The bundle itself is verified here (edge.bundle.verify: hashes, graph I/O), and its memory need
checked against the profile's device (edge.memory_budget), before any target is touched. The
target-side rules live in deploy/agent.py.
"""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.agent import CALIBRATION_FILE, MARGIN_BYTES
from deploy.targets import FlashError, LocalTarget, SshTarget, parse_target
from edge.errors import LegatoError


@dataclass(frozen=True)
class Payload:
    """What a flash sends: the bundle's files (relative path, sha256, size) and the release name."""

    bundle: Path
    release: str  # NAME-SHA12 of manifest.json
    manifest_sha256: str
    files: tuple[tuple[str, str, int], ...]  # (rel, sha256, size), manifest.json included
    profile_name: str
    profile_text: str
    profile_device: dict[str, Any]
    build_engines: bool
    onnx_bytes: int
    calibration_text: str | None = None  # the [robot] calibration, sent as CALIBRATION_FILE


def prepare(bundle: str | Path, profile: str | Path) -> Payload:
    """Verify the bundle and load the profile here, before any target is touched."""
    from edge.bundle import verify
    from edge.profiles import load_profile

    m = verify(bundle)
    prof = load_profile(profile)
    exported_for = m.profile_name
    if exported_for and exported_for != prof.name:
        raise FlashError(
            f"bundle {m.path} was exported for profile {exported_for!r}, not {prof.name!r}; flash it "
            f"with --profile {exported_for} or export it for {prof.name}"
        )
    memory_fit(m, prof)
    root = Path(m.path)
    mbytes = (root / "manifest.json").read_bytes()
    msha = hashlib.sha256(mbytes).hexdigest()
    files = [("manifest.json", msha, len(mbytes))]
    for rel, digest in sorted(m.files.items()):
        files.append((rel, digest, (root / rel).stat().st_size))
    onnx = sum(size for rel, _, size in files if rel.endswith(".onnx"))
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in m.name).strip(".-") or "bundle"
    text, calibration = Path(prof.path).read_text(), None
    if prof.robot.calibration is not None:  # load_profile resolved and checked it
        # The calibration names a file beside the profile (or in ~/.cache): it travels with the
        # release, else the device's `legato run` finds no calibration.
        calibration = Path(prof.robot.calibration).read_text()
        text = release_profile_text(text, CALIBRATION_FILE, where=str(prof.path))
    return Payload(
        root,
        f"{safe}-{msha[:12]}",
        msha,
        tuple(files),
        prof.name,
        text,
        prof.to_dict()["device"],
        prof.uses_tensorrt,
        onnx,
        calibration,
    )


_TABLE = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_CALIBRATION = re.compile(r"""^(\s*calibration\s*=\s*)("(?:[^"\\]|\\.)*"|'[^']*')""")


def release_profile_text(text: str, calibration: str, where: str) -> str:
    """The profile's TOML text with its [robot] ``calibration`` pointing at ``calibration`` (a file
    beside the profile in the release), everything else byte for byte (comments kept). Checked by
    parsing: nothing but that one value may differ, else FlashError."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
        import tomli as tomllib

    lines, table, done = text.splitlines(keepends=True), None, False
    for i, line in enumerate(lines):
        head = _TABLE.match(line)
        if head:
            table = head.group(1).strip()
            continue
        hit = _CALIBRATION.match(line) if table == "robot" and not done else None
        if hit:
            lines[i] = f'{hit.group(1)}"{calibration}"{line[hit.end() :]}'
            done = True
    out = "".join(lines)
    want = tomllib.loads(text)
    want["robot"]["calibration"] = calibration
    if not done or tomllib.loads(out) != want:
        raise FlashError(
            f"{where}: cannot point its [robot] calibration at the flashed copy; write it as one "
            'line `calibration = "FILE"` under [robot]; nothing was flashed'
        )
    return out


def memory_fit(m: Any, prof: Any) -> None:
    """Refuse a bundle that does not fit the profile's device memory (edge.memory_budget)."""
    from edge import memory_budget as mb

    total = int(prof.device.memory_gb * 1e9)
    reserve = mb.reserve_bytes(total, prof.device.memory_reserve_gb)
    need = mb.bundle_need(m.data, Path(m.path), getattr(prof.control, "graph", None), where=str(m.path))
    problem = mb.fit_problem(need, total, reserve, f"profile {prof.name} ({prof.device.model})")
    if problem:
        raise FlashError(f"bundle {m.path}: {problem}; nothing was flashed")


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def flash_one(target: LocalTarget | SshTarget, p: Payload, keep: int = 1) -> str:
    """Flash one target; returns its summary line or raises FlashError (nothing switched)."""
    from edge.device import profile_mismatch

    t0 = time.monotonic()
    need = [{"rel": rel, "sha256": sha, "size": size} for rel, sha, size in p.files]
    target.open()
    try:
        info = target.call("probe", {"release": p.release, "need": need})
        bad = profile_mismatch(p.profile_device, info["facts"])
        if bad:
            raise FlashError(
                f"{target.name}: profile {p.profile_name} does not match the target ("
                f"{'; '.join(bad)}); nothing was changed (choose the profile for this device; "
                "`legato doctor` on it shows its answers)"
            )
        have: dict[str, str] = info["have"]
        send = [(rel, sha, size) for rel, sha, size in p.files if sha not in have]
        send_bytes = sum(size for _, _, size in send)
        engines = 2 * p.onnx_bytes if p.build_engines else 0
        want = send_bytes + engines + MARGIN_BYTES
        if info["current"] != p.release and p.release not in info["releases"] and info["free_bytes"] < want:
            raise FlashError(
                f"{target.name}: the target's disk is too full: {_mb(info['free_bytes'])} free at "
                f"{info['dest']}, this flash needs {_mb(want)} (files {_mb(send_bytes)}"
                f"{f', engines ~{_mb(engines)}' if engines else ''}, {_mb(MARGIN_BYTES)} spare); "
                "nothing was changed (free space, or pass --keep 0 on the next flash)"
            )
        target.put([(p.bundle / rel, rel) for rel, _, _ in send], p.release)
        incoming = f"{info['dest'].rstrip('/')}/.incoming/{p.release}"
        files = [
            {"rel": rel, "sha256": sha, "src": have.get(sha, f"{incoming}/{rel}")} for rel, sha, _ in p.files
        ]
        done = target.call(
            "install",
            {
                "release": p.release,
                "files": files,
                "profile_text": p.profile_text,
                "calibration_text": p.calibration_text,
                "profile_name": p.profile_name,
                "manifest_sha256": p.manifest_sha256,
                "build_engines": p.build_engines,
                "keep": keep,
            },
        )
    finally:
        target.close()
    dt = time.monotonic() - t0
    what = f"{p.release} was already current" if done["previous"] == p.release else f"current -> {p.release}"
    reused = len(p.files) - len(send)
    built = ", engines built" if p.build_engines and not done["reused"] else ""
    prev = f"; previous {done['previous']}" if done["previous"] and done["previous"] != p.release else ""
    return (
        f"{target.name}: ok, {what} ({len(send)} files sent, {_mb(send_bytes)}; {reused} already there"
        f"{built}; every sha256 verified{prev}) in {dt:.1f} s"
    )


def rollback_one(target: LocalTarget | SshTarget) -> str:
    target.open()
    try:
        r = target.call("rollback", {})
    finally:
        target.close()
    return f"{target.name}: ok, rolled back: current -> {r['release']} (previous {r['previous']})"


def check_one(target: LocalTarget | SshTarget) -> str:
    target.open()
    try:
        r = target.call("check", {})
    finally:
        target.close()
    return f"{target.name}: ok, current {r['release']} verifies ({r['files']} files, every sha256)"


def run_all(
    targets: list[str], job, *, jobs: int = 8, ssh_opts: dict[str, Any] | None = None, out=print
) -> int:
    """Run `job(target)` on every target in parallel; one line per target as each finishes.

    One target: its failure is raised (the CLI prints one line). Several: every line is printed
    and the return code is 1 when any failed."""
    parsed = [parse_target(t, **(ssh_opts or {})) for t in targets]
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise FlashError(
            f"a target is named twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}"
        )
    if len(parsed) == 1:
        out(job(parsed[0]))
        return 0
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(parsed)))) as pool:
        futures = {pool.submit(job, t): t for t in parsed}
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                out(fut.result())
            except LegatoError as e:
                failed += 1
                msg = " ".join(str(e).split())
                out(f"{t.name}: FAILED, {msg.removeprefix(t.name + ': ')}")
    out(f"{len(parsed) - failed} of {len(parsed)} targets ok" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0
