"""The one helper that writes every folder and file the `legato` CLI produces.

Rules (issue 8, docs/cli-safety.md):
- A folder output carries a marker file (``.legato-output.json``: its kind and who wrote it).
  A target that exists is replaced only when it is a folder of the same kind *and* the
  caller passed the override flag (``--force``); a foreign folder, a file or a symlink is
  refused with a one-line :class:`OutputError` that names the path and the flag.
- The new folder is written beside the target (``.NAME.tmp-XXXX``) and swapped in with one
  ``renameat2(RENAME_EXCHANGE)``: a reader polling the path sees the old folder or the new
  one, complete, never neither. A kill at any step leaves the old or the new folder whole;
  leftovers are hidden temporaries that the next write of that target removes.
- Files get 0644 and folders 0755 whatever the umask or mkdtemp's 0700, so a service user
  can read what was published.

Folders written before markers existed are recognised by their contents (LEGACY below), so
the committed checkpoints count as checkpoints. Linux only for the exchange; elsewhere (or on
a filesystem without it) the fallback renames the old folder aside first, and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from edge.errors import OutputError

MARKER = ".legato-output.json"
FILE_MODE, DIR_MODE = 0o644, 0o755
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100

# Outputs written before the marker existed, recognised by the files they always hold.
LEGACY: dict[str, tuple[str, ...]] = {
    "checkpoint": ("config.json", "model.safetensors"),
    "run": ("config.json", "model.safetensors", "trainer.json"),
    "report": ("results.json", "results.md"),
}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (datasets, weights, bundle files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_marker(path: Path) -> dict | None:
    """The marker of an output folder, or None (absent or unreadable)."""
    try:
        data = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_kind(path: str | Path, kinds: str | tuple[str, ...]) -> bool:
    """True if `path` is a real folder (not a link) written as one of `kinds`."""
    path = Path(path)
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    if path.is_symlink() or not path.is_dir():
        return False
    marker = read_marker(path)
    if marker is not None:
        return marker.get("kind") in kinds
    return any(k in LEGACY and all((path / f).is_file() for f in LEGACY[k]) for k in kinds)


TEMP_SUFFIX = len(".tmp-") + 9  # what a temporary sibling adds to a name: "." + ".tmp-" + 8 random


def check_path_length(path: str | Path) -> None:
    """Refuse, in one line, a path the filesystem cannot hold: a name longer than NAME_MAX (its
    temporary sibling included) or a whole path beyond PATH_MAX. Without this, ENAMETOOLONG
    surfaces from whichever call meets it first, as a traceback or a half-written output."""
    full = Path(os.path.abspath(path))
    anchor = full
    while True:
        try:
            if anchor.exists():
                break
        except OSError:
            pass
        if anchor == anchor.parent:
            break
        anchor = anchor.parent
    try:
        name_max = os.pathconf(anchor, "PC_NAME_MAX")
        path_max = os.pathconf(anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for i, part in enumerate(full.parts[1:], 1):
        n = len(os.fsencode(part))
        extra = TEMP_SUFFIX if i == len(full.parts) - 1 else 0
        if n + extra > name_max:
            shown = part if len(part) <= 40 else part[:37] + "..."
            raise OutputError(
                f"cannot write {shown!r}: the name is {n} bytes and the filesystem allows {name_max} "
                f"(less {TEMP_SUFFIX} for the temporary it is written through); choose a shorter name"
            )
    total = len(os.fsencode(str(full))) + TEMP_SUFFIX
    if total > path_max:
        raise OutputError(
            f"cannot write {str(full)[:60]}...: the path is {total - TEMP_SUFFIX} bytes and the filesystem "
            f"allows {path_max - TEMP_SUFFIX}; choose a shorter path"
        )


def check_target(path: str | Path, kind: str, *, replace: bool = False, flag: str = "--force",
                 also: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Refuse a target that this write must not touch; one line naming the path and the flag.

    Allowed: absent, an empty folder, or a folder of `kind` (or of `also`) when `replace`.
    """
    check_path_length(path)
    try:
        _check_target(Path(path), kind, replace, flag, also)
    except OutputError:
        raise
    except OSError as e:  # unreadable parent, a loop of links: still one line
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def _check_target(path: Path, kind: str, replace: bool, flag: str, also: tuple[str, ...]) -> None:
    if path.is_symlink():
        raise OutputError(
            f"{path} is a symbolic link; refusing to replace it with a {kind} (choose another path)"
        )
    if not path.exists():
        if path.parent.exists() and not path.parent.is_dir():
            raise OutputError(f"{path.parent} is a file, not a folder; cannot write {path}")
        return
    if not path.is_dir():
        raise OutputError(f"{path} is a file; a {kind} is a folder and the file will not be replaced")
    if not any(path.iterdir()):
        return
    if not is_kind(path, (kind, *also)):
        raise OutputError(f"{path} exists and is not a {kind} written by legato; refusing to touch it "
                          "(choose another path)")  # fmt: skip
    if not replace:
        raise OutputError(f"{path} already holds a {kind}; pass {flag} to replace it")


def set_modes(root: Path) -> None:
    """0755 for folders, 0644 for files (0755 for files that are already executable)."""
    os.chmod(root, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, DIR_MODE)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, DIR_MODE if os.stat(p).st_mode & 0o100 else FILE_MODE)


def _libc_renameat2() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name, use_errno=True).renameat2 if name else None
    except (OSError, AttributeError):
        return None
    return fn


_RENAMEAT2 = _libc_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE).

    Returns False when the platform or filesystem cannot (the caller falls back)."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(new: Path, target: Path) -> None:
    """Put the complete folder `new` at `target`; the old target (if any) is removed after."""
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
        return
    if target.is_dir() and not any(target.iterdir()):
        os.rename(new, target)  # rename(2) replaces an empty folder atomically
        return
    if exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old folder
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)  # fallback: a short window without the target
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(target: Path, older_than_s: float = 0.0) -> None:
    """Remove `.NAME.tmp-*` / `.NAME.old-*` left by a killed write of `target`."""
    now = time.time()
    for p in target.parent.glob(f".{target.name}.*"):
        if (".tmp-" in p.name or ".old-" in p.name) and now - p.stat().st_mtime >= older_than_s:
            _remove(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def write_marker(folder: Path, kind: str, meta: dict | None = None) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = f"legato-edge {version('legato-edge')}"
    except PackageNotFoundError:
        tool = "legato-edge"
    body = {"kind": kind, "tool": tool, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
    (folder / MARKER).write_text(json.dumps(body, indent=1) + "\n")


@contextlib.contextmanager
def atomic_folder(path: str | Path, kind: str, *, replace: bool = False, flag: str = "--force",
                  also: tuple[str, ...] = (), meta: dict | None = None) -> Iterator[Path]:  # fmt: skip
    """Write a folder output: ``with atomic_folder(out, "report", replace=a.force) as tmp: ...``.

    The target is checked first (nothing is written for a refused target), the body writes
    into `tmp`, and only a body that finishes is marked, given 0644/0755 modes and swapped
    in. An exception or Ctrl-C leaves the old target untouched and removes `tmp`.
    `also`: other kinds this write may replace (a training run replacing a checkpoint).
    """
    target = Path(path)
    check_target(target, kind, replace=replace, flag=flag, also=also)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target, older_than_s=3600.0)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        yield tmp
        write_marker(tmp, kind, meta)
        set_modes(tmp)
        check_target(target, kind, replace=True, flag=flag, also=also)  # nothing foreign appeared meanwhile
        swap_in(tmp, target)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
        raise


def check_file_target(
    path: str | Path,
    *,
    replace: bool = False,
    flag: str = "--force",
    what: str = "file",
    own: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse a file target that must not be touched: a link, a folder, an existing file that
    `own` does not recognise as this command's kind, or any existing file without `flag`."""
    check_path_length(path)
    try:
        _check_file_target(Path(path), replace, flag, what, own)
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def _check_file_target(
    target: Path, replace: bool, flag: str, what: str, own: Callable[[Path], bool] | None
) -> None:
    if target.is_symlink():
        raise OutputError(f"{target} is a symbolic link; refusing to replace it (choose another path)")
    if target.is_dir():
        raise OutputError(f"{target} is a folder; a {what} is a file and the folder will not be replaced")
    if target.exists() and own is not None and not own(target):
        raise OutputError(f"{target} exists and is not a {what} written by legato; refusing to replace it "
                          "(choose another path)")  # fmt: skip
    if target.exists() and not replace:
        raise OutputError(f"{target} exists; pass {flag} to replace it")
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{target.parent} is a file, not a folder; cannot write {target}")


def atomic_file(
    path: str | Path,
    write: bytes | Callable[[BinaryIO], object],
    *,
    replace: bool = False,
    flag: str = "--force",
    what: str = "file",
    own: Callable[[Path], bool] | None = None,
) -> Path:
    """Write one file through a temporary sibling and os.replace: never half a file.

    An existing file is replaced only with `replace`; a folder or a symlink never is."""
    target = Path(path)
    check_file_target(target, replace=replace, flag=flag, what=what, own=own)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
        raise
    return target


def open_stream_file(
    path: str | Path,
    *,
    replace: bool = False,
    flag: str = "--force",
    what: str = "file",
    own: Callable[[Path], bool] | None = None,
) -> BinaryIO:
    """Open a file that is written while a run goes on (a recording), at its own name from the
    first byte, so that whatever a kill leaves is where the user looks; the same refusals as
    :func:`atomic_file` (a link, a folder, a foreign file, an existing file without `flag`).
    Mode 0644; the caller writes and closes it."""
    target = Path(path)
    check_file_target(target, replace=replace, flag=flag, what=what, own=own)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = os.O_TRUNC if replace else os.O_EXCL
        flags = os.O_WRONLY | os.O_CREAT | mode | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    return os.fdopen(fd, "wb")
