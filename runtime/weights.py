"""Reading `weights.bin`, the large constants of a cpu artifact that `main` takes as
parameters after its inputs (written by `backends.tvm.weights`; format_version 2).

The manifest's `weights` entry names the file, its size and each tensor's offset, shape and
dtype. The file is listed in the manifest's `files`, so `runtime.files.verify` has checked
its sha256 before this reads it; here the layout itself is checked (every tensor 64-byte
aligned and inside the file, the file the size the manifest says), so a manifest that does
not describe its file is one EtchError, not a crash inside a kernel; and the executor runs
the library's `CHECK` on the tensors once (their types and shapes against the library's:
`main` checks only its inputs on every call). The file is read once
into a 64-byte-aligned buffer; each tensor is a view of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import EtchError

ALIGN = 64
CHECK = "check_weights"  # the library's function that checks the weights' types and shapes
# element types numpy cannot hold: read as the unsigned integers of their width
RAW = {"bfloat16": np.uint16}


def _aligned_buffer(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return raw[offset:offset + nbytes]


def read(path: Path, entry: object) -> list[tuple[np.ndarray, str]]:
    """[(array, dtype)] of the weights described by manifest entry `entry`, in parameter
    order; `array` holds raw bits (RAW) where numpy lacks the dtype."""
    tensors = _checked(path, entry)
    file = path / entry["file"]
    try:
        size = file.stat().st_size
    except OSError as e:
        raise EtchError(f"{file}: cannot read the artifact's weights: {e.strerror}") from e
    if size != entry["bytes"]:
        raise EtchError(f"{file}: {size} bytes, the manifest says {entry['bytes']} "
                        f"(truncated or corrupted); copy it again or recompile")
    buf = _aligned_buffer(size)
    with open(file, "rb") as f:
        if f.readinto(memoryview(buf)) != size:
            raise EtchError(f"{file}: short read; copy it again or recompile")
    out = []
    for t in tensors:
        dtype = np.dtype(RAW.get(t["dtype"], t["dtype"]))
        out.append((np.ndarray(tuple(t["shape"]), dtype, buffer=buf, offset=t["offset"]),
                    t["dtype"]))
    return out


def _checked(path: Path, entry: object) -> list[dict]:
    """The tensor table of a well-formed `weights` entry; EtchError otherwise."""
    bad = EtchError(f"{path}: the manifest's `weights` entry is malformed; recompile")
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
            or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("tensors"),
                                                                         list):
        raise bad
    for t in entry["tensors"]:
        if not (isinstance(t, dict) and isinstance(t.get("offset"), int)
                and isinstance(t.get("dtype"), str) and isinstance(t.get("shape"), list)
                and all(isinstance(d, int) and d >= 0 for d in t["shape"])):
            raise bad
        try:
            itemsize = np.dtype(RAW.get(t["dtype"], t["dtype"])).itemsize
        except TypeError:
            raise bad from None
        nbytes = int(np.prod(t["shape"], dtype=np.int64)) * itemsize
        if t["offset"] < 0 or t["offset"] % ALIGN or t["offset"] + nbytes > entry["bytes"]:
            raise bad
    return entry["tensors"]
