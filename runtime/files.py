"""An artifact's files: their sha256 (the manifest's `files`), checked when it is loaded.

`verify(path, manifest)` hashes every file the manifest lists, once per load, before an
executor opens any of them: a truncated or corrupted `model.so` is one EtchError line
instead of a bus error inside the dynamic loader. The files an executor opens by manifest
key (`library`, `graph`, the edge runner's files, the `weights` entry's file) must be among
the listed ones, inside the artifact directory, so every byte an executor reads has been
checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from compiler.errors import EtchError

CHUNK = 1 << 20
# manifest keys naming a file an executor opens
OPENED = ("library", "graph", "edge_runner", "edge_plan", "edge_consts")


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def listed(path: Path) -> dict[str, str]:
    """{relative POSIX path: sha256} of every file under directory `path`, sorted."""
    return {p.relative_to(path).as_posix(): sha256(p)
            for p in sorted(path.rglob("*")) if p.is_file()}


def verify(path: Path, manifest: dict) -> None:
    """EtchError unless every file the manifest lists exists under `path` with its sha256,
    and every file an executor opens is one of them."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise EtchError(f"{path}: the manifest's `files` is not a table of sha256 digests")
    weights = manifest.get("weights")
    opened = [(key, manifest.get(key)) for key in OPENED]
    opened.append(("weights", weights.get("file") if isinstance(weights, dict) else weights))
    for key, name in opened:
        if name is not None and (not isinstance(name, str) or name not in files):
            raise EtchError(f"{path}: the manifest's {key} {name!r} is not among its files")
    for rel, digest in files.items():
        file = _inside(path, rel)
        if not file.is_file():
            raise EtchError(f"{path}: {rel} is missing; the artifact is incomplete "
                            f"(copy it again or recompile)")
        if sha256(file) != digest:
            raise EtchError(f"{path}: {rel} does not match the sha256 in its manifest "
                            f"(truncated or corrupted); copy it again or recompile")


def _inside(path: Path, rel: str) -> Path:
    """`path / rel`, refusing a name that leaves the artifact directory."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise EtchError(f"{path}: the manifest lists a file outside the artifact: {rel!r}")
    return path.joinpath(*parts)
