"""pytest plugin for runs under qemu-user (`python -m tests.isa_emulation` loads it with -p).

- `sys.executable` becomes the wrapper script that runs this virtualenv's Python under the
  same emulated CPU ($ETCH_EMULATION_PYTHON), so the CLI runs the tests start (`[sys.executable,
  "-m", "compiler.cli", ...]`, read at import) are emulated too. (Grandchildren started
  from those use their own `sys.executable`, the real interpreter: they run natively.)
- The session stops at once unless etch's detection, as `etch compile` does it, sees the
  CPU the run is meant to have ($ETCH_EMULATED_ISA: its LLVM features must include
  `requires` and none of `lacks`, see `__main__.ISAS`): a run that silently used the host's
  AVX-512 would prove nothing.
"""

from __future__ import annotations

import json
import os
import sys

import pytest


def _detected() -> tuple[str, tuple[str, ...], int]:
    """The CPU, features and vector width `etch compile --target cpu` would build for."""
    from backends.tvm import target
    from compiler.options import CompileOptions

    info, _ = target.cpu_info(CompileOptions(target="cpu"))
    return info.mcpu, info.features, info.vector_bits


def pytest_configure(config: pytest.Config) -> None:
    python = os.environ.get("ETCH_EMULATION_PYTHON")
    spec = os.environ.get("ETCH_EMULATED_ISA")
    if not python or not spec:
        raise pytest.UsageError("tests.isa_emulation.plugin runs under "
                                "`python -m tests.isa_emulation`, which sets its environment")
    sys.executable = python
    want = json.loads(spec)
    mcpu, features, bits = _detected()
    missing = set(want["requires"]) - set(features)
    extra = set(want["lacks"]) & set(features)
    if missing or extra or bits != want["bits"]:
        pytest.exit(f"not the emulated CPU {want['cpu']}: etch detects {mcpu} "
                    f"({', '.join(features)}; {bits}-bit vectors)", returncode=3)
    config.stash[_KEY] = f"{want['cpu']}: etch detects {mcpu} ({', '.join(features)}), " \
                         f"{bits}-bit vectors"


_KEY = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"emulated CPU (qemu-user) {config.stash.get(_KEY, '?')}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """The emulated CPU, also in quiet runs (where pytest prints no header)."""
    terminalreporter.write_line(pytest_report_header(config))
