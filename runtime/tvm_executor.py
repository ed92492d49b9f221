"""Runs `cpu` and `cuda` artifacts: model.so through the Relax VM (edge artifacts go to
`runtime.edge_executor`, which knows RPC and qemu).

The manifest names the library, the device and the thread count. TVM's CPU thread pool
reads TVM_NUM_THREADS when a thread first launches parallel work, and a pool only shrinks
afterwards: set here at load, before any kernel runs, it holds for this process. Threads are
not pinned to cores (TVM_BIND_THREADS=0) unless the environment says otherwise. A CUDA
artifact where no CUDA device exists fails at load with an EtchError, not inside TVM; so
does a cpu artifact built for a vector feature this CPU lacks (`host_cpu.check_runs_here`:
AVX-512 kernels on an AVX2-only machine), not with an illegal instruction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from compiler.errors import EtchError
from runtime import host_cpu, weights
from runtime.executor import Executor, check_inputs
from runtime.profile import Profile, profile


def _apply_threads(threads: int | None) -> None:
    """Run kernels on `threads` threads; None: TVM_NUM_THREADS if set, else every CPU this
    process may use (TVM's own default is half the CPUs, assuming hyper-threads)."""
    import tvm

    # TVM pins each worker, and the calling thread, to a core of its choosing; on a shared
    # or virtual machine a pinned thread waits for its core while another is idle (measured:
    # 2x slower single-threaded kernels on a busy 2-vCPU VM). Unless asked, let the OS place.
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    if not threads:
        if "TVM_NUM_THREADS" in os.environ:
            return
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    # Shrink a pool this thread already started with more workers (1 = no affinity mode).
    tvm.get_global_func("runtime.config_threadpool")(1, int(threads))


def _device(kind: str):
    import tvm

    if kind == "cpu":
        return tvm.cpu(0)
    if kind == "cuda":
        dev = tvm.cuda(0)
        if not dev.exist:
            raise EtchError("this artifact runs on CUDA, but there is no CUDA device here "
                            "(no NVIDIA GPU or driver); compile with --target cpu")
        return dev
    raise EtchError(f"unknown device {kind!r} in the manifest")


# Element types numpy cannot exchange through DLPack (ml_dtypes), by the integer type that
# carries their bits across.
_BITS = {"bfloat16": np.uint16}


def _to_numpy(tensor, dtype: str) -> np.ndarray:
    """A copy of a CPU output tensor as a numpy array."""
    if dtype in _BITS:
        raw = np.from_dlpack(tensor._create_view(tuple(tensor.shape), _BITS[dtype]().dtype.name))
        return np.array(raw).view(np.dtype(dtype))
    return np.array(np.from_dlpack(tensor))


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is 64-byte aligned (what TVM requires
    of memory it borrows through DLPack)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = (-raw.ctypes.data) % 64
    # An explicit offset: slicing would lose the alignment of an array with no elements.
    return np.ndarray(shape, dtype, buffer=raw, offset=offset)


class TvmExecutor(Executor):
    """Loads model.so once, and weights.bin when the artifact has one (`runtime.weights`). On CPU, inputs are copied into aligned staging arrays that TVM
    borrows (DLPack, no copy), so a call costs two memcpys more than the kernels; outputs are
    copied out (an output may be a constant or an input of the module, which must not be
    handed to the caller)."""

    def __init__(self, path: Path, manifest: dict) -> None:
        super().__init__(manifest)
        import tvm
        from tvm.runtime.vm import VirtualMachine  # runtime-only TVM has no relax

        self.device = _device(manifest["device"])
        if manifest["device"] == "cpu":
            host_cpu.check_runs_here(manifest)  # not an illegal instruction in a kernel
            _apply_threads(manifest.get("threads"))
        lib_path = path / manifest["library"]
        if not lib_path.is_file():
            raise EtchError(f"{path}: the artifact's library {manifest['library']} is missing")
        try:
            lib = tvm.runtime.load_module(str(lib_path))
        except Exception as e:  # TVM raises its own error types for a bad library
            raise EtchError(f"{lib_path}: cannot load the library: {str(e).splitlines()[0]}") \
                from e
        self.vm = VirtualMachine(lib, self.device)
        self.main = self.vm[manifest.get("entry", "main")]
        # Inputs/outputs of a narrow type (int4, float8, ...) are held in a wider one.
        self._held = manifest.get("storage_dtypes", {})
        self._specs = [(s["name"], tuple(s["shape"]), np.dtype(s["dtype"]))
                       for s in self.input_specs]
        self._cpu = manifest["device"] == "cpu"
        self._staging = [aligned_empty(shape, np.dtype(self._held.get(name, dt.name)))
                         for name, shape, dt in self._specs]
        self._args = [self._borrow(a) for a in self._staging] if self._cpu else None
        # weights.bin (format 2): main's parameters after the inputs, lent to TVM once
        self._weights = [self._borrow(a, dtype) if self._cpu else self._on_device(a, dtype)
                         for a, dtype in weights.read(path, manifest["weights"])] \
            if "weights" in manifest else []
        self._check_weights(path)
        self._lock = threading.Lock()

    def _check_weights(self, path: Path) -> None:
        """The weights' types and shapes against the library's, once (`main` checks only
        its inputs on each call: backends/tvm/weights.py). Libraries built before that
        check every call and have no such function."""
        try:
            check = self.vm[weights.CHECK]
        except (AttributeError, KeyError, ValueError):
            return
        try:
            check(*self._weights)
        except Exception as e:  # TVM's own error types: the weights do not fit the library
            raise EtchError(f"{path}: weights.bin does not fit the library: "
                            f"{str(e).splitlines()[0]}") from e

    def _borrow(self, array: np.ndarray, dtype: str | None = None):
        """A TVM view of `array` (as `dtype`, when the array holds that type's raw bits)."""
        import tvm_ffi

        dtype = dtype or array.dtype.name
        if dtype in _BITS:  # numpy's DLPack has no such type: lend the raw bits
            raw = tvm_ffi.from_dlpack(array.view(_BITS[dtype]), require_alignment=64,
                                      require_contiguous=True)
            return raw._create_view(array.shape, dtype)
        return tvm_ffi.from_dlpack(array, require_alignment=64, require_contiguous=True)

    def _on_device(self, array: np.ndarray, dtype: str):
        import tvm

        return tvm.runtime.tensor(self._borrow(array, dtype).numpy() if dtype in _BITS
                                  else array, self.device)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """As Executor.run, with a fast path for inputs that already match exactly."""
        if len(inputs) != len(self._specs) or not all(
                isinstance(inputs.get(n), np.ndarray) and inputs[n].dtype == dt
                and inputs[n].shape == shape for n, shape, dt in self._specs):
            inputs = check_inputs(self.input_specs, inputs, self.bound)
        return self._run(inputs)

    def profile(self, inputs: Mapping[str, np.ndarray], runs: int) -> Profile:
        """Per-kernel times of `runs` runs after one untimed run (`runtime.profile`): CPU
        time where the artifact runs on one thread, else wall time."""
        if not self._cpu:
            return super().profile(inputs, runs)
        checked = check_inputs(self.input_specs, inputs, self.bound)
        self._run(checked)
        return profile(self.vm.set_instrument, self._run, checked, runs,
                       cpu=os.environ.get("TVM_NUM_THREADS") == "1")

    def kernel_seconds(self, inputs: Mapping[str, np.ndarray], number: int,
                       repeat: int) -> list[float]:
        """Seconds per call of the entry function alone, `repeat` means of `number` calls
        each (TVM's time_evaluator, which synchronises the device): inputs already on the
        device, outputs left there; what `run` adds is the copies in and out."""
        import tvm

        checked = check_inputs(self.input_specs, inputs, self.bound)
        with self._lock:
            self._stage(checked)
            args = self._args if self._cpu else \
                [tvm.runtime.tensor(a, self.device) for a in self._staging]
            timer = self.vm.time_evaluator(self.manifest.get("entry", "main"), self.device,
                                           number=number, repeat=repeat)
            return [float(t) for t in timer(*args, *self._weights).results]

    def _stage(self, inputs: Mapping[str, np.ndarray]) -> None:
        for (name, _, _), stage in zip(self._specs, self._staging):
            if name in self._held:  # exact: the storage type holds every value
                stage[...] = inputs[name].astype(stage.dtype)
            else:
                np.copyto(stage, inputs[name])

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self._stage(inputs)
            if self._cpu:
                result = self.main(*self._args, *self._weights)
            else:
                import tvm

                result = self.main(*[tvm.runtime.tensor(a, self.device) for a in self._staging],
                                   *self._weights)
            outs = list(result) if len(self.output_specs) > 1 else [result]
            if self._cpu:
                got = [_to_numpy(o, self._held.get(s["name"], s["dtype"]))
                       for s, o in zip(self.output_specs, outs)]
            else:
                got = [o.numpy() for o in outs]
            return {s["name"]: g.astype(s["dtype"]) if s["name"] in self._held else g
                    for s, g in zip(self.output_specs, got)}


def load(path: Path, manifest: dict, **kwargs) -> Executor:
    """The executor for a TVM artifact: cpu/cuda here, edge in runtime.edge_executor."""
    if manifest.get("device") == "edge":
        from runtime import edge_executor

        return edge_executor.load(path, manifest, **kwargs)
    if kwargs.get("rpc"):
        raise EtchError("--rpc runs edge artifacts; this one runs locally on "
                        f"{manifest.get('device')}")
    return TvmExecutor(Path(path), manifest)
