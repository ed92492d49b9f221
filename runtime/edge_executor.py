"""Runs `edge` artifacts (aarch64 Linux): on a board over TVM RPC, or here under qemu.

- `rpc="host:port"`: the standard TVM way. Connect with `tvm.rpc.connect`, upload
  `model.so`, load it remotely and run `main` with the Relax VM on the remote CPU. Any TVM
  RPC server on the board works (`python -m tvm.exec.rpc_server`, or `edge_rpc_server`
  from backends/tvm/edge_rpc.py, which needs no Python there).
- no rpc: the artifact's standalone `edge_runner` (the same `model.so` kernels, replayed in
  the Relax VM's order without a TVM runtime; see backends/tvm/edge_runner.c) under
  `qemu-aarch64`. The sysroot for qemu is $QEMU_LD_PREFIX or /usr/aarch64-linux-gnu.

Either way the model's inputs go to `main` in the manifest's order and its (flattened)
results come back as the manifest's outputs, in order. The runner reads and writes raw
little-endian bytes (aarch64 Linux): inputs are converted to that byte order first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from compiler.errors import EtchError
from runtime.executor import Executor

QEMU_NAMES = ("qemu-aarch64", "qemu-aarch64-static")
DEFAULT_SYSROOT = "/usr/aarch64-linux-gnu"
RUN_TIMEOUT_S = 3600


def find_qemu() -> tuple[str, str] | None:
    """(qemu-aarch64 path, sysroot) if both are on this machine, else None."""
    qemu = next((p for p in map(shutil.which, QEMU_NAMES) if p), None)
    sysroot = os.environ.get("QEMU_LD_PREFIX", DEFAULT_SYSROOT)
    if qemu is None or not Path(sysroot, "lib").is_dir():
        return None
    return qemu, sysroot


def parse_rpc(rpc: str) -> tuple[str, int]:
    """("host", port) from "host:port"; EtchError if it is not that."""
    host, sep, port = rpc.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EtchError(f"--rpc {rpc!r}: expected HOST:PORT, e.g. 192.168.1.20:9090")
    return host, int(port)


def _flatten(value) -> list:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flatten(v)]
    return [value]


class EdgeRpcExecutor(Executor):
    """Runs `model.so` with the Relax VM on a remote aarch64 device over TVM RPC."""

    def __init__(self, path: Path, manifest: dict, rpc: str) -> None:
        super().__init__(manifest)
        # TVM is imported here, not at module level: the qemu path does not need it.
        import tvm
        from tvm import rpc as tvm_rpc
        from tvm.runtime.vm import VirtualMachine

        host, port = parse_rpc(rpc)
        try:
            self.session = tvm_rpc.connect(host, port)
        except (OSError, RuntimeError) as e:
            raise EtchError(f"cannot reach a TVM RPC server at {rpc}: {e}") from e
        library = manifest["library"]
        self.session.upload(str(path / library))
        self.device = self.session.cpu()
        self.vm = VirtualMachine(self.session.load_module(library), self.device)
        self._tensor = tvm.runtime.tensor

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self._tensor(x, device=self.device) for x in inputs.values()]
        self.vm.set_input("main", *args)
        self.vm.invoke_stateful("main")
        results = _flatten(self.vm.get_outputs("main"))
        if len(results) != len(self.output_specs):
            raise EtchError(f"the remote model returned {len(results)} outputs, "
                            f"the manifest names {len(self.output_specs)}")
        return {s["name"]: r.numpy() for s, r in zip(self.output_specs, results)}


class EdgeQemuExecutor(Executor):
    """Runs the artifact's standalone `edge_runner` under qemu-aarch64."""

    def __init__(self, path: Path, manifest: dict, qemu: str, sysroot: str) -> None:
        super().__init__(manifest)
        self.path = path
        self.command = [qemu, "-L", sysroot, str(path / manifest["edge_runner"]),
                        str(path / manifest["library"]), str(path / manifest["edge_plan"]),
                        str(path / manifest["edge_consts"])]
        self.input_offsets = manifest["edge_io"]["input_offsets"]
        _check_io(manifest)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="etch-edge-") as tmp:
            in_path, out_path = Path(tmp, "inputs.bin"), Path(tmp, "outputs.bin")
            in_path.write_bytes(b"".join(_little_endian(x).tobytes() for x in inputs.values()))
            proc = subprocess.run([*self.command, str(in_path), str(out_path)],
                                  check=False, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT_S)
            if proc.returncode != 0:
                raise EtchError(f"edge runner under qemu failed ({proc.returncode}): "
                                f"{proc.stderr.strip()}")
            raw = out_path.read_bytes()
        return _split_outputs(raw, self.output_specs)


def _check_io(manifest: dict) -> None:
    """EtchError if the runner's plan and the manifest disagree on inputs or outputs."""
    io = manifest["edge_io"]
    for kind in ("inputs", "outputs"):
        plan = [(list(s["shape"]), np.dtype(s["dtype"]).name) for s in io[kind]]
        want = [(list(s["shape"]), np.dtype(s["dtype"]).name) for s in manifest[kind]]
        if plan != want:
            raise EtchError(f"edge artifact: the runner's {kind} {plan} do not match the "
                            f"manifest's {want}; recompile it")


def _little_endian(x: np.ndarray) -> np.ndarray:
    """x with its values in little-endian bytes: aarch64 Linux, the artifact's byte order,
    whatever the byte order of the array or of this machine."""
    return np.ascontiguousarray(x, x.dtype.newbyteorder("<"))


def _split_outputs(raw: bytes, specs: list[dict]) -> dict[str, np.ndarray]:
    """The runner's little-endian output bytes as native arrays, one per output spec."""
    out, offset = {}, 0
    for s in specs:
        dtype = np.dtype(s["dtype"]).newbyteorder("<")
        n = int(np.prod(s["shape"], dtype=np.int64))
        out[s["name"]] = np.frombuffer(raw, dtype, n, offset).reshape(s["shape"]).astype(
            dtype.newbyteorder("="))
        offset += n * dtype.itemsize
    if offset != len(raw):
        raise EtchError(f"edge runner wrote {len(raw)} bytes of outputs, expected {offset}")
    return out


def load(path: Path, manifest: dict, rpc: str | None = None) -> Executor:
    """An executor for edge artifact `path`: over RPC if `rpc` ("host:port"), else qemu.

    EtchError, saying what to do, when neither a board nor qemu can run it.
    """
    path = Path(path)
    if rpc:
        return EdgeRpcExecutor(path, manifest, rpc)
    if not manifest.get("edge_runner"):
        reason = manifest.get("edge_runner_unsupported", "no standalone runner was built")
        raise EtchError(f"edge artifact {path}: built for aarch64 and has no standalone runner "
                        f"({reason}); run it on a board with --rpc HOST:PORT")
    found = find_qemu()
    if found is None:
        raise EtchError(f"edge artifact {path}: built for aarch64; run it on a board with "
                        f"--rpc HOST:PORT, or install qemu-user and the aarch64 libc "
                        f"(Debian: apt-get install qemu-user libc6-arm64-cross) to run it here")
    return EdgeQemuExecutor(path, manifest, *found)
