"""The target side of `legato flash`: the only code that changes a flashed folder.

`legato flash` runs these operations on each target: in-process for a local folder, and as
``PYTHON -m deploy.agent`` over the user's own ssh for ``ssh://`` targets (a JSON request on
stdin, one JSON reply on stdout), so both kinds of target take exactly the same path.

Layout of a flashed folder DEST::

    DEST/releases/NAME-SHA12/   one folder per bundle (edge.outputs.atomic_folder, kind "release"):
                                manifest.json, the files it lists, engines/ built here, profile.toml
    DEST/current  -> releases/…  the release that runs (a symlink, switched with one rename)
    DEST/previous -> releases/…  the one before, for `legato flash --rollback`
    DEST/.incoming/NAME-SHA12/   files uploaded for a release not yet installed (resumable)
    DEST/cache/                  TensorRT timing caches (one per TensorRT version and GPU), kept
                                 across releases so a rebuild skips most tactic timing
    DEST/.flash.lock             flock held while a release is installed or switched

Guarantees: `probe` changes nothing; a release is assembled in a hidden temporary folder,
every sha256 checked there, engines built there, and only then swapped in; `current` changes
with one rename(2) of a fresh symlink, after the release folder is complete and synced. A
kill at any point leaves `current` naming a complete, verified release (the old one or the
new one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.errors import LegatoError
from edge.outputs import sha256_file

RELEASE_KIND = "release"
MANIFEST = "manifest.json"
PROFILE_FILE = "profile.toml"
CALIBRATION_FILE = "calibration.json"  # the profile's [robot] calibration, beside it in the release
RELEASE_EXTRAS = (PROFILE_FILE, CALIBRATION_FILE)  # what a release holds beside the bundle's files
LINKS = ("current", "previous")
CACHE_DIR = "cache"  # DEST/cache: TensorRT timing caches, kept across releases
MARGIN_BYTES = 16 << 20  # never fill a disk to the last byte: logs and the journal need room
_REMOTE = False  # run by `python -m deploy.agent` (over ssh): stdin stays open while flash waits


class AgentError(LegatoError):
    """A target-side failure, reported to the workstation as one line."""


def _free_bytes(dest: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem that holds (or will hold) dest."""
    p = dest
    while not p.exists():
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def _writable_anchor(dest: Path) -> Path:
    p = dest
    while not p.exists():
        p = p.parent
    return p


def _link_target(dest: Path, name: str) -> str | None:
    link = dest / name
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def read_marker_kind(folder: Path) -> str | None:
    from edge.outputs import read_marker

    m = read_marker(folder)
    return m.get("kind") if m else None


def _releases(dest: Path) -> list[str]:
    from edge.outputs import is_kind

    rel = dest / "releases"
    if not rel.is_dir():
        return []
    return sorted(p.name for p in rel.iterdir() if not p.name.startswith(".") and is_kind(p, RELEASE_KIND))


def _is_flashed(dest: Path) -> bool:
    """Only what flash itself writes there (or nothing): releases/, the links, the upload area,
    the lock and the links' temporaries. Anything else is someone else's folder."""
    ours = {"releases", *LINKS, ".incoming", ".flash.lock", CACHE_DIR}
    return all(
        p.name in ours or p.name.startswith((".current.tmp-", ".previous.tmp-")) for p in dest.iterdir()
    )


def _refuse_dangling(dest: Path) -> None:
    """A target that is a link to nothing (a moved or unmounted disk) is refused, not followed."""
    for p in (dest, *dest.parents):
        if p.is_symlink() and not p.exists():
            raise AgentError(
                f"{p} is a symbolic link to {os.readlink(p)}, which does not exist (an unmounted disk?); "
                f"mount or create it, or flash to another folder; nothing was changed"
            )


def probe(req: dict[str, Any]) -> dict[str, Any]:
    """What the target holds, how much room it has, and its doctor facts. Writes nothing.

    req: dest, release, need ([{rel, sha256, size}]). Reply `have`: sha256 -> an absolute path
    on the target whose content hashes to it (from any release or the upload area), so the
    workstation sends only the rest."""
    dest = Path(req["dest"]).expanduser()
    _refuse_dangling(dest)
    anchor = _writable_anchor(dest)
    if not anchor.is_dir():
        raise AgentError(f"{anchor} is a file, not a folder; cannot flash into {dest}")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise AgentError(
            f"cannot write {anchor} as {_user()} (fix: sudo mkdir -p {dest} && sudo chown {_user()} {dest})"
        )
    if dest.is_dir() and not _is_flashed(dest):
        raise AgentError(
            f"{dest} exists and is not a flashed folder (no releases/); refusing to touch it "
            "(choose another path)"
        )
    need = {n["sha256"]: n for n in req.get("need", [])}
    have: dict[str, str] = {}
    roots = [dest / "releases" / r for r in _releases(dest)]
    roots.append(dest / ".incoming" / str(req.get("release", "")))
    for root in roots:
        for n in need.values():
            if n["sha256"] in have:
                continue
            cand = root / n["rel"]
            with contextlib.suppress(OSError):
                if cand.is_file() and cand.stat().st_size == n["size"] and sha256_file(cand) == n["sha256"]:
                    have[n["sha256"]] = str(cand)
    facts: dict[str, Any] = {}
    if req.get("facts", True):
        from deploy import doctor

        facts = doctor.facts(Path("/"))
    return {
        "dest": str(dest),
        "free_bytes": _free_bytes(dest),
        "releases": _releases(dest),
        "current": _link_target(dest, "current"),
        "previous": _link_target(dest, "previous"),
        "have": have,
        "facts": facts,
        "python": sys.version.split()[0],
    }


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    dest.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest / ".flash.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentError(f"another flash of {dest} is running (it holds {dest}/.flash.lock)") from None
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_link(dest: Path, name: str, release: str) -> None:
    """Point DEST/name at releases/<release> with one rename of a fresh symlink (atomic)."""
    tmp = dest / f".{name}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(f"releases/{release}", tmp)
    os.replace(tmp, dest / name)
    _fsync_dir(dest)


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same filesystem: no copy, no extra disk
    except OSError:
        shutil.copyfile(src, dst)


def verify_release(folder: Path, load_graphs: bool = False) -> dict[str, Any]:
    """edge.bundle.verify on a release (every sha256 the manifest lists, engine plans included),
    with the count of files checked."""
    from edge.bundle import verify
    from edge.outputs import read_marker

    m = verify(folder, load_graphs=load_graphs, extra_files=RELEASE_EXTRAS)  # the flashed profile too
    plans = sum(
        1 for e in m.engines.values() if isinstance(e, dict) and e.get("file") not in (None, *m.files)
    )
    # the profile and calibration the flash wrote: hashed in the release's marker (older releases
    # have none), since the motors' limits and zero offsets come from them
    extras = (read_marker(folder) or {}).get("extras_sha256") or {}
    for name, want in sorted(extras.items()):
        f = folder / name
        if not f.is_file():
            raise AgentError(f"{name} is missing: flash the release again")
        if sha256_file(f) != want:
            raise AgentError(
                f"{name} is corrupt or edited since the flash (sha256 differs): flash the release again"
            )
    return {"name": m.name, "files": len(m.files) + 1 + plans + len(extras), "manifest": m}


def _remove_leftovers(dest: Path) -> list[str]:
    """Temporaries of killed flashes: hidden release folders (``releases/.NAME.tmp-*``, ``.old-*``)
    and link temporaries (``.current.tmp-PID``). Called with the flash lock held, so no other
    flash is writing any of them."""
    gone = []
    rel = dest / "releases"
    cands = list(rel.iterdir()) if rel.is_dir() else []
    cands += [p for p in dest.iterdir() if p.name.startswith((".current.tmp-", ".previous.tmp-"))]
    for p in cands:
        if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def _sync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def install(req: dict[str, Any]) -> dict[str, Any]:
    """Assemble, verify and switch to a release.

    req: dest, release, files ([{rel, sha256, src}] where src is an absolute path on the target,
    from probe's `have` or the upload area), profile_text, calibration_text (optional: the
    profile's LeRobot calibration, which profile_text names as CALIBRATION_FILE), profile_name,
    build_engines (bool), keep (releases kept besides current and previous), switch (bool)."""
    from edge.outputs import atomic_folder, is_kind

    dest = Path(req["dest"]).expanduser()
    _refuse_dangling(dest)
    release = str(req["release"])
    if "/" in release or release.startswith("."):
        raise AgentError(f"bad release name {release!r}")
    target = dest / "releases" / release
    with _locked(dest):
        leftovers = _remove_leftovers(dest)
        old = _link_target(dest, "current")
        reuse = False
        if is_kind(target, RELEASE_KIND):
            try:
                verify_release(target)
                reuse = True
            except LegatoError:
                reuse = False  # a damaged copy of this release: rebuild it below
        if not reuse:
            extras = {
                name: text.encode("utf-8")
                for name, text in ((PROFILE_FILE, req.get("profile_text")),
                                   (CALIBRATION_FILE, req.get("calibration_text")))
                if text is not None
            }  # fmt: skip
            meta = {
                "release": release,
                "profile": req.get("profile_name"),
                "flashed_by": _user(),
                "manifest_sha256": req.get("manifest_sha256"),
                "extras_sha256": {name: hashlib.sha256(b).hexdigest() for name, b in extras.items()},
            }
            with atomic_folder(target, RELEASE_KIND, replace=True, meta=meta) as tmp:
                for f in req["files"]:
                    src = Path(f["src"])
                    if not src.is_file():
                        raise AgentError(f"{f['rel']} did not arrive on the target ({src} is missing)")
                    _place(src, tmp / f["rel"])
                for name, b in extras.items():
                    (tmp / name).write_bytes(b)
                verify_release(tmp)
                if req.get("build_engines"):
                    _build_engines(tmp, tmp / PROFILE_FILE, dest / CACHE_DIR)
                    verify_release(tmp)
                _sync_tree(tmp)
        if _client_gone():
            raise AgentError(f"the flash was interrupted before the switch; {old} stays current")
        if req.get("switch", True) and old != release:
            if old is not None:
                _set_link(dest, "previous", old)
            _set_link(dest, "current", release)
        shutil.rmtree(dest / ".incoming" / release, ignore_errors=True)
        with contextlib.suppress(OSError):
            (dest / ".incoming").rmdir()  # only when empty
        pruned = _prune(dest, int(req.get("keep", 1)))
    return {"release": release, "previous": old, "reused": reuse, "pruned": pruned, "leftovers": leftovers}


def _build_engines(folder: Path, profile_file: Path, cache_dir: Path) -> None:
    """Run the project's own TensorRT engine builder (export.tensorrt_build) on this device,
    inside the release being assembled: the plans land in engines/ and their keys in the
    manifest before the switch. The timing cache lives in DEST/cache, outside the releases, so
    the next flash of this device reuses it."""
    from edge.profiles import load_profile

    try:
        from export.tensorrt_build import build_engines  # imports tensorrt inside, never torch
    except ImportError as e:
        raise AgentError(
            f"this target cannot build TensorRT engines: its legato-edge lacks the engine builder "
            f"({e}); update legato-edge on the device"
        ) from None
    try:
        engines = build_engines(
            load_profile(profile_file), folder, say=lambda line: None, cache_dir=cache_dir
        )
    except LegatoError as e:
        raise AgentError(f"engine build on the target failed: {e}") from None
    mpath = folder / MANIFEST
    data = json.loads(mpath.read_text())
    data["engines"] = engines
    mpath.write_text(json.dumps(data, indent=1) + "\n")


def _prune(dest: Path, keep: int) -> list[str]:
    """Remove old releases beyond `keep`, never current or previous; also stale uploads."""
    live = {_link_target(dest, n) for n in LINKS}
    rel_dir = dest / "releases"
    others = [r for r in _releases(dest) if r not in live]
    others.sort(key=lambda r: (rel_dir / r).stat().st_mtime, reverse=True)
    gone = others[keep:]
    for r in gone:
        shutil.rmtree(rel_dir / r, ignore_errors=True)
    incoming = dest / ".incoming"
    if incoming.is_dir():
        for p in incoming.iterdir():
            if time.time() - p.stat().st_mtime > 7 * 86400:
                shutil.rmtree(p, ignore_errors=True)
    return gone


def rollback(req: dict[str, Any]) -> dict[str, Any]:
    """Make `previous` current again (and the current one previous)."""
    dest = Path(req["dest"]).expanduser()
    with _locked(dest):
        cur, prev = _link_target(dest, "current"), _link_target(dest, "previous")
        if prev is None or not (dest / "releases" / prev).is_dir():
            raise AgentError(f"{dest} has no previous release to roll back to")
        verify_release(dest / "releases" / prev)
        if cur is not None:
            _set_link(dest, "previous", cur)
        _set_link(dest, "current", prev)
    return {"release": prev, "previous": cur}


def check(req: dict[str, Any]) -> dict[str, Any]:
    """Verify the current release on the target (every sha256)."""
    dest = Path(req["dest"]).expanduser()
    cur = _link_target(dest, "current")
    if cur is None:
        raise AgentError(f"{dest} has no current release (flash one first)")
    info = verify_release(dest / "current")
    return {
        "release": cur,
        "previous": _link_target(dest, "previous"),
        "name": info["name"],
        "files": info["files"],
    }


OPS = {"probe": probe, "install": install, "rollback": rollback, "check": check}


def handle(op: str, req: dict[str, Any]) -> dict[str, Any]:
    """One operation; a known failure comes back as {"error": "..."} (never a traceback)."""
    try:
        return {"ok": True, **OPS[op](req)}
    except LegatoError as e:
        return {"ok": False, "error": " ".join(str(e).split())}
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        if e.errno == errno.ENOSPC:
            return {
                "ok": False,
                "error": f"the target's disk is full{where}; the current release is untouched "
                "(free space, or flash with --keep 0)",
                "errno": e.errno,
            }
        return {"ok": False, "error": f"{e.strerror or e}{where}", "errno": e.errno}


def _client_gone() -> bool:
    """Over ssh the workstation keeps our stdin open until it has our reply: end of file on it
    means the flash was killed or the link dropped (a multiplexed ssh keeps our parent alive, so
    the parent process tells nothing)."""
    if not _REMOTE:
        return False
    import select

    fd = sys.stdin.fileno()
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable) and os.read(fd, 1) == b""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in OPS:
        print(f"usage: python -m deploy.agent {{{','.join(OPS)}}} < request.json", file=sys.stderr)
        return 2
    global _REMOTE
    _REMOTE = True
    line = sys.stdin.buffer.readline()  # one JSON line; the sender keeps stdin open (see _client_gone)
    req = json.loads(line or b"{}")
    reply = handle(argv[0], req)
    sys.stdout.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
