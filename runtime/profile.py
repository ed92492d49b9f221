"""`etch run --profile`: where a cpu artifact's time goes, kernel by kernel.

The Relax VM calls every kernel (and each of its own builtins: allocation, reshapes) through
a Call instruction; an instrument hooked on the VM (`VirtualMachine.set_instrument`, this
TVM has no `profile=True` VM) sees each call before and after it runs, and the wall time
between the two is the kernel's. The hook costs a few microseconds per call, counted in the
run's total but not in the kernels' times. A kernel shared by several layers (kernels are
deduplicated by content) is one row with several calls per run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KernelTime:
    """One function the VM called: its symbol, calls and wall seconds per run."""

    name: str
    calls: float
    seconds: float


@dataclass(frozen=True)
class Profile:
    """Per-run averages over `runs` instrumented runs, slowest kernel first."""

    runs: int
    seconds: float  # one whole run, the hook included
    kernels: list[KernelTime]
    clock: str  # "thread CPU" or "wall"


def profile(set_instrument: Callable[[Callable | None], None],
            run: Callable[[Mapping[str, np.ndarray]], object],
            inputs: Mapping[str, np.ndarray], runs: int, cpu: bool) -> Profile:
    """Time every VM call of `runs` calls of `run(inputs)` with `set_instrument` hooked
    (cleared afterwards), by this thread's CPU time if `cpu`, else wall time. The caller
    runs once before, so no first-call cost is counted."""
    clock = time.thread_time if cpu else time.perf_counter
    calls: dict[str, int] = {}
    spent: dict[str, float] = {}
    started: list[float] = []

    def hook(func: object, symbol: str, before: bool, ret: object, *args: object) -> int:
        if before:
            started.append(clock())
        else:  # calls nest only through VM closures: a stack pairs them
            spent[symbol] = spent.get(symbol, 0.0) + clock() - started.pop()
            calls[symbol] = calls.get(symbol, 0) + 1
        return 0  # VMInstrumentReturnKind.kNoOp: run the call

    set_instrument(hook)
    try:
        t0 = clock()
        for _ in range(runs):
            run(inputs)
        total = clock() - t0
    finally:
        set_instrument(None)
    kernels = [KernelTime(s, calls[s] / runs, spent[s] / runs) for s in spent]
    kernels.sort(key=lambda k: (-k.seconds, k.name))
    return Profile(runs, total / runs, kernels, "thread CPU" if cpu else "wall")


def table(p: Profile) -> str:
    """The profile as text: one row per kernel (name, calls, us per run, % of the run), then
    the time between calls (the VM's interpreter and the hook)."""
    run_us = max(p.seconds * 1e6, 1e-3)
    kernels_us = sum(k.seconds for k in p.kernels) * 1e6
    width = max([len("kernel"), *(len(k.name) for k in p.kernels)]) + 2
    head = (f"profile: {p.runs} runs, {p.clock} time, {run_us / 1e3:.3f} ms per run, kernels "
            f"{kernels_us / 1e3:.3f} ms ({100 * kernels_us / run_us:.1f}%)")
    lines = [head, f"{'kernel':<{width}}{'calls':>7}{'us/run':>12}{'% of run':>10}"]
    for k in p.kernels:
        us = k.seconds * 1e6
        lines.append(f"{k.name:<{width}}{k.calls:>7g}{us:>12.1f}{100 * us / run_us:>10.1f}")
    other = run_us - kernels_us
    lines.append(f"{'(VM and hook between calls)':<{width}}{'':>7}{other:>12.1f}"
                 f"{100 * other / run_us:>10.1f}")
    return "\n".join(lines)
