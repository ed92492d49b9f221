"""Writing an artifact directory to its destination: atomically, safely, one writer at a time.

`save(src, dest)` copies directory `src` to `dest`:
- *only over an artifact*: an existing `dest` is replaced only when it is entirely an etch
  artifact, that is, it holds a `manifest.json` (a JSON object with a `files` table) and
  every other file under it is listed in that table (no symlinks, no other files). An empty
  directory is taken too; anything else (a file, a user's directory that merely holds some
  manifest.json beside other files) is refused with an EtchError, untouched;
- *atomically*: the copy is written to a hidden temporary directory beside `dest`
  (`.NAME.XXXXXXXX`), then renamed into place; the old artifact is renamed aside
  (`.NAME.old-PID`) and removed. SIGINT/SIGTERM/SIGHUP are held back during the renames, so
  an interrupted save leaves either the old artifact or the new one, and no hidden directory
  (the copy itself is removed when interrupted, by the exception the signal raises; a
  signal received earlier whose exception Python dropped is raised before the swap:
  compiler.interrupts);
- *one writer at a time*: saves into one parent directory take an exclusive `flock` on that
  directory (no lock file is left behind), so concurrent saves to one `-o` take turns and
  the last one wins.
Errors of the file system (a read-only place, /proc, a missing permission) are EtchErrors.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from compiler import interrupts
from compiler.errors import EtchError


def save(src: Path, dest: Path) -> Path:
    """Copy directory `src` to `dest` as described in the module docstring; returns `dest`."""
    dest = Path(os.path.abspath(dest))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _locked(dest.parent):
            reason = not_an_artifact(dest)
            if reason:
                raise EtchError(f"{dest} exists and is not an etch artifact ({reason}); "
                                f"not overwriting it")
            _replace(src, dest)
    except OSError as e:
        raise EtchError(f"cannot write the artifact to {dest}: {e.strerror or e}") from e
    return dest


def not_an_artifact(path: Path) -> str | None:
    """None when `path` may be replaced (absent, an empty directory, or entirely an etch
    artifact), else the reason it may not."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_dir():
        return "it is not a directory"
    entries = sorted(_entries(path))
    if not entries:
        return None
    listed = _listed_files(path / "manifest.json")
    if listed is None:
        return "no etch manifest.json"
    extra = [e for e in entries if e != "manifest.json" and e not in listed]
    if extra:
        shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
        return f"its manifest does not list {shown}"
    return None


def _entries(root: Path) -> Iterator[str]:
    """Relative POSIX paths of every file and symlink under `root` (symlinks not followed)."""
    for base, dirs, files in os.walk(root, followlinks=False):
        rel = Path(base).relative_to(root)
        links = [d for d in dirs if Path(base, d).is_symlink()]
        for name in files + links:
            yield (rel / name).as_posix()


def _listed_files(manifest: Path) -> set[str] | None:
    """The files an etch manifest lists, or None if `manifest` is not one."""
    if manifest.is_symlink() or not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return set(data["files"])


def _replace(src: Path, dest: Path) -> None:
    """Copy src beside dest, then swap it in with signals held back."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        with _signals_held():
            interrupts.check()  # a signal whose exception was dropped: write nothing
            old = None
            if dest.exists() or dest.is_symlink():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
            os.replace(tmp, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock on `directory` for the duration (released when the fd closes)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back: a signal that arrives inside the block is recorded
    and raised again, to the handlers in force before, when the block ends. (Python runs
    signal handlers in the main thread only, so elsewhere there is nothing to hold back; a
    thread mask would not do, as TVM's worker threads may take the signal.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {sig: signal.signal(sig, lambda n, frame: pending.append(n))
             for sig in interrupts.SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)
