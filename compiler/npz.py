""".npz files of named arrays: `--inputs`, `--calib` and `--out` of the CLI.

`load(path, what)` reads every array (no pickles) and turns whatever a bad file raises
(a truncated or corrupted zip or member, a plain .npy, a directory, no permission) into one
EtchError naming the option; `save(path, arrays)` writes atomically (a temporary file beside
it, then a rename) and refuses a directory. `split_batch` reads --inputs that stack many
inferences (one more leading axis than the model's inputs), `stack` writes their outputs.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from compiler import interrupts
from compiler.errors import EtchError

# What numpy and zipfile raise for a damaged archive or member.
_BAD_FILE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def load(path: str | os.PathLike, what: str = "--inputs") -> dict[str, np.ndarray]:
    """The arrays of .npz `path`, keyed by name; EtchError (naming `what`) if unreadable."""
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise EtchError(f"{what} {path} is a .npy file (one unnamed array); etch reads "
                                f".npz files keyed by the model's input names "
                                f"(numpy.savez(path, NAME=array))")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except _BAD_FILE as e:
        raise EtchError(f"{what} {path}: cannot read .npz: {getattr(e, 'strerror', None) or e}"
                        ) from e


def save(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz atomically; EtchError if `path` is a directory or cannot be written."""
    dest = Path(path)
    if dest.is_dir():
        raise EtchError(f"--out {path} is a directory; name the .npz file to write")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        interrupts.check()
        os.replace(tmp, dest)
    except OSError as e:
        raise EtchError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def split_batch(specs: list[dict], inputs: dict[str, np.ndarray]
                ) -> list[dict[str, np.ndarray]] | None:
    """Inputs that each carry one more leading axis than the model's (the same length N)
    as N separate inferences; None when the inputs are one inference."""
    extra = [np.asarray(inputs[s["name"]]).ndim == len(s["shape"]) + 1 for s in specs
             if s["name"] in inputs]
    if not extra or not all(extra) or len(extra) != len(specs):
        return None
    n = {np.asarray(inputs[s["name"]]).shape[0] for s in specs}
    if len(n) != 1:
        raise EtchError(f"batched --inputs of different lengths {sorted(n)}")
    return [{k: np.asarray(v)[i] for k, v in inputs.items()} for i in range(n.pop())]


def stack(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-inference outputs stacked along a new leading axis."""
    return {k: np.stack([o[k] for o in outputs]) for k in outputs[0]}
