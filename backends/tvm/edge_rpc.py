"""A TVM RPC server for aarch64 (`edge_rpc_server.cc`), and running it under qemu-aarch64.

An edge artifact's `model.so` runs on a board with the Relax VM over TVM RPC. The board
needs a TVM runtime of the same version as the host: PyPI's apache-tvm and apache-tvm-ffi
publish manylinux aarch64 wheels, and their libtvm_runtime.so and libtvm_ffi.so are all the
server needs. This module

- `fetch_runtime()`: `pip download`s those two wheels (the installed versions) and keeps
  the two libraries in the cache (<repo>/.cache/edge/, or $ETCH_AARCH64_TVM to use a
  directory that already has them);
- `build_server()`: cross-compiles edge_rpc_server.cc against them (copy the directory to
  a board and run `./edge_rpc_server 0.0.0.0 9090 /tmp`);
- `serve_under_qemu()`: starts it under qemu-aarch64 on 127.0.0.1, for tests and demos.

`python -m backends.tvm.edge_rpc fetch` prepares the cache (e.g. from `make system-deps`);
`python -m backends.tvm.edge_rpc serve` serves under qemu until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import tvm_ffi.libinfo

from backends.tvm.edge import CROSS_CXX, cross_tool
from compiler.errors import EtchError

SERVER_SOURCE = Path(__file__).with_name("edge_rpc_server.cc")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
# wheel -> library inside it
LIBRARIES = {"apache-tvm": "tvm/lib/libtvm_runtime.so", "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so"}
START_TIMEOUT_S = 120


def runtime_dir() -> Path:
    """Where the aarch64 TVM runtime for the installed TVM version lives (or will)."""
    env = os.environ.get("ETCH_AARCH64_TVM")
    if env:
        return Path(env)
    versions = "-".join(f"{d}-{metadata.version(d)}" for d in LIBRARIES)
    return Path(__file__).resolve().parents[2] / ".cache" / "edge" / f"aarch64-{versions}"


def _has_runtime(directory: Path) -> bool:
    return all((directory / Path(lib).name).is_file() for lib in LIBRARIES.values())


def fetch_runtime() -> Path:
    """The directory holding aarch64 libtvm_runtime.so and libtvm_ffi.so, fetched if need be.

    EtchError if pip cannot download the wheels (no network, no such wheel).
    """
    directory = runtime_dir()
    if _has_runtime(directory):
        return directory
    pins = [f"{d}=={metadata.version(d)}" for d in LIBRARIES]
    python = f"{sys.version_info.major}{sys.version_info.minor}"
    with tempfile.TemporaryDirectory(prefix="etch-aarch64-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", python, "-d", tmp, *pins]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EtchError(f"could not download the aarch64 TVM runtime ({' '.join(pins)}): "
                            f"{proc.stderr.strip().splitlines()[-1:]}")
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=_parent(directory)))
        staging.chmod(0o755)
        for wheel in Path(tmp).glob("*.whl"):
            _extract_libraries(wheel, staging)
        if not _has_runtime(staging):
            raise EtchError(f"the aarch64 wheels of {pins} lack {list(LIBRARIES.values())}")
        staging.rename(directory)  # atomic: a half-fetched runtime is never seen
    return directory


def _parent(directory: Path) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    return directory.parent


def _extract_libraries(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        for member in set(z.namelist()) & set(LIBRARIES.values()):
            (dest / Path(member).name).write_bytes(z.read(member))


def build_server(directory: Path | None = None) -> Path:
    """edge_rpc_server for aarch64, next to the runtime libraries it loads ($ORIGIN)."""
    directory = fetch_runtime() if directory is None else directory
    digest = hashlib.sha256(SERVER_SOURCE.read_bytes()).hexdigest()[:12]
    server = directory / f"edge_rpc_server-{digest}"
    if server.is_file():
        return server
    tmp = server.with_suffix(".tmp")
    cmd = [cross_tool(CROSS_CXX), "-std=c++17", "-O2", f"-I{tvm_ffi.libinfo.find_include_path()}",
           str(SERVER_SOURCE), "-o", str(tmp), f"-L{directory}", "-Wl,--no-as-needed",
           "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling edge_rpc_server failed:\n{proc.stderr}")
    tmp.rename(server)
    return server


@contextlib.contextmanager
def serve_under_qemu(qemu: str, sysroot: str, server: Path | None = None) -> Iterator[str]:
    """Run edge_rpc_server under qemu-aarch64 on 127.0.0.1 (a free port); yield "host:port".

    The server is stopped (by its process id) when the block exits.
    """
    server = build_server() if server is None else server
    with tempfile.TemporaryDirectory(prefix="etch-rpc-") as workdir:
        log = Path(workdir, "server.log")
        with log.open("w") as err:
            proc = subprocess.Popen([qemu, "-L", sysroot, str(server), "127.0.0.1", "0", workdir],
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            yield _wait_listening(proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(proc: subprocess.Popen, log: Path) -> str:
    """The "host:port" the server prints once it listens; RuntimeError if it does not."""
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("listening on "):
        raise RuntimeError(f"edge_rpc_server did not start within {START_TIMEOUT_S} s: "
                           f"{line}{log.read_text()}")
    return line.split()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.tvm.edge_rpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["fetch", "serve"])
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(build_server())
        return 0
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise SystemExit("qemu-aarch64 not found (Debian: apt-get install qemu-user)")
    with serve_under_qemu(qemu, os.environ.get("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")) as a:
        print(f"serving on {a}; etch run OUT --rpc {a}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
