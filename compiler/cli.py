"""The `etch` command line: compile, run, sim, inspect, models, bench, demo.

Every user error is one line on stderr (`etch: error: ...`) and exit status 1; an internal
error says so in one line and exits 2; `--debug` shows the traceback instead. SIGINT,
SIGTERM and SIGHUP unwind like exceptions (exit 130 / 128 + signal; compiler.interrupts), so
a compile that is stopped removes its temporary directories and writes nothing.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from compiler import interrupts, npz
from compiler.errors import EtchError
from compiler.interrupts import Terminated

BIND_HELP = ("make the graph inputs named in this .npz constants holding its values: what they "
             "decide (output shapes, ...) folds at compile time, and the artifact no longer "
             "takes them")


def _add_compile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile an ONNX model for a target",
                       description="Compile MODEL.onnx into an artifact directory.")
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("--target", "-t", default="cpu", choices=["cpu", "cuda", "edge", "verilog",
                                                              "ref"])
    p.add_argument("-o", "--output", help="artifact directory (default: MODEL.TARGET.etch)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="fix or override an input's dims (repeatable)")
    p.add_argument("--bind", metavar="VALUES.npz", help=BIND_HELP)
    q = p.add_argument_group("quantisation")
    q.add_argument("--bits", type=int, help="weight bits (1-8)")
    q.add_argument("--ternary", action="store_true", help="ternary weights {-1,0,+1}")
    q.add_argument("--group-size", type=int, help="quantisation group size along K")
    q.add_argument("--quant", default="rtn", choices=["rtn", "gptq"])
    q.add_argument("--per", default="oc", choices=["oc", "ic", "auto"])
    q.add_argument("--calib", help="calibration inputs (.npz keyed like --inputs)")
    q.add_argument("--int", action="store_true", help="cpu/edge: run the integer graph (WbA8)")
    q.add_argument("--lut", action="store_true", help="LUT bit-serial GEMM for low-bit weights")
    q.add_argument("--lut-table", default="int8", choices=["int8", "float"],
                   help="--lut activation tables: int8-quantised (default) or exact float")
    q.add_argument("--scale-format", default="fp16", choices=["fp16", "u8"],
                   help="weight-only block scales: float16 values (default) or two-level, "
                        "a uint8 per block times a float16 per super-block of 8 blocks")
    q.add_argument("--rearrange", action="store_true",
                   help="rearrange channels to group outliers before quantising")
    h = p.add_argument_group("hardware (verilog)")
    h.add_argument("--engine", default="systolic", choices=["systolic", "adder-tree",
                                                            "hardwired"])
    h.add_argument("--pe", default="mac", choices=["mac", "booth", "bitserial"])
    h.add_argument("--array", default="8x8", metavar="RxC")
    h.add_argument("--max-cells", type=int, metavar="N",
                   help="refuse a design whose estimated cell count exceeds N")
    h.add_argument("--neuron", default="auto", choices=["csd", "grouped", "auto"],
                   help="hardwired neurons: CSD shift-adds with shared subexpressions, "
                        "grouped (accumulate-then-multiply), or the cheaper per layer")
    h.add_argument("--pipeline", type=int, default=0, metavar="N",
                   help="hardwired: a register stage every N adder levels (0: none)")
    h.add_argument("--fold", type=int, default=1, metavar="K",
                   help="hardwired: time-multiplex output neurons over K cycles")
    h.add_argument("--area", action="store_true", help="run yosys for an area estimate")
    b = p.add_argument_group("build")
    b.add_argument("--tune", type=int, default=0, metavar="N", help="MetaSchedule trials")
    b.add_argument("--no-fuse", action="store_true", help="skip layer fusion")
    b.add_argument("--threads", type=int, help="CPU threads the artifact uses")
    b.add_argument("--mcpu", help="override the detected CPU (e.g. znver3, cortex-a72)")
    b.add_argument("--vector-bits", type=int, choices=[128, 256, 512],
                   help="kernel vector width (default: the CPU's; 512 with AVX-512)")
    b.add_argument("--explain", action="store_true", help="print the pass list and node counts")
    b.add_argument("--print-after", action="append", default=[], metavar="PASS")
    b.add_argument("--dump-dir", help="write the graph as ONNX after every pass")
    p.set_defaults(func=cmd_compile)


def _compile_options(a: argparse.Namespace) -> dict:
    from compiler.onnx_import import parse_shape

    try:
        rows, cols = (int(x) for x in a.array.lower().split("x"))
    except ValueError:
        raise EtchError(f"bad --array {a.array!r}: expected RxC, e.g. 8x8") from None
    same = ("bind", "bits", "ternary", "group_size", "quant", "per", "calib", "int", "lut",
            "lut_table", "scale_format", "rearrange", "engine", "pe", "max_cells", "neuron", "pipeline", "fold",
            "area", "tune", "threads", "mcpu", "vector_bits", "dump_dir", "print_after")
    return {**{k: getattr(a, k) for k in same},
            "input_shapes": dict(parse_shape(s) for s in a.input_shape),
            "array": (rows, cols), "fuse": not a.no_fuse}


def cmd_compile(a: argparse.Namespace) -> int:
    from compiler import driver

    out = Path(a.output or f"{Path(a.model).stem}.{a.target}.etch")
    with _progress("compile") as say:
        art = driver.compile(a.model, a.target, progress=say, **_compile_options(a))
        dest = art.save(out)
    if a.explain:
        print(art.explain())
    print(f"wrote {dest} ({a.target}, {len(art.manifest['files'])} files, "
          f"{art.manifest['compile_seconds']:.1f} s)")
    return 0


def _add_run(sub: argparse._SubParsersAction, name: str, helptext: str) -> None:
    p = sub.add_parser(name, help=helptext, description=helptext)
    p.add_argument("artifact", help="artifact directory written by `etch compile`")
    p.add_argument("--inputs", required=True, help=".npz keyed by the model's input names")
    p.add_argument("--out", required=True, help=".npz to write, keyed by output names")
    if name == "run":
        p.add_argument("--rpc", metavar="HOST:PORT", help="run on a remote TVM RPC server")
        p.add_argument("--profile", nargs="?", const=10, type=int, metavar="RUNS",
                       help="cpu: then time every kernel over RUNS runs (default 10) and print "
                            "a table, slowest first")
    else:
        p.add_argument("--vcd", metavar="WAVE.vcd", help="dump waveforms")
    p.set_defaults(func=cmd_run)


def cmd_run(a: argparse.Namespace) -> int:
    import runtime

    profiled = getattr(a, "profile", None) is not None
    if profiled and a.profile < 1:
        raise EtchError(f"--profile {a.profile}: the number of runs must be at least 1")
    manifest = runtime.read_manifest(a.artifact)
    if profiled and manifest.get("device") != "cpu":
        raise EtchError(f"--profile times the kernels of cpu artifacts; {a.artifact} runs on "
                        f"{manifest.get('device') or manifest.get('runtime')}")
    kwargs = {}
    if getattr(a, "rpc", None):
        kwargs["rpc"] = a.rpc
    if a.command == "sim":
        if manifest.get("target") != "verilog":
            raise EtchError(f"`etch sim` runs verilog artifacts; {a.artifact} is "
                            f"{manifest.get('target')} (use `etch run`)")
        kwargs["vcd"] = a.vcd
    inputs = npz.load(a.inputs, "--inputs")
    with _progress(a.command) as say:
        if manifest["runtime"] == "verilator":
            kwargs["progress"] = say
        ex = runtime.load(a.artifact, **kwargs)
        if manifest["runtime"] == "verilator":
            ex.build()  # the simulator, from the cache or compiled now
        say("running")
        batch = npz.split_batch(manifest["inputs"], inputs)
        t0 = time.perf_counter()
        outputs = ex.run(inputs) if batch is None else npz.stack(ex.run_batch(batch))
        seconds = time.perf_counter() - t0
    npz.save(a.out, outputs)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items()))
    if profiled:
        from runtime.profile import table

        print(table(ex.profile(inputs if batch is None else batch[0], a.profile)))
    if getattr(ex, "stats", None):
        print(sim_report(ex.stats, seconds))
    return 0


def sim_report(stats: dict[str, dict], seconds: float) -> str:
    """Cycles per inference and per layer of a simulated run, per segment."""
    lines = []
    for seg, st in stats.items():
        n = max(1, st["n"])
        lines.append(f"{seg}: {st['cycles'] / n:,.0f} cycles per inference ({st['n']} "
                     f"simulated, {st['n'] / max(seconds, 1e-9):,.0f} inferences/s wall)")
        total = sum(st["layers"].values()) or 1
        for name, c in st["layers"].items():
            lines.append(f"  {name:<36}{c / n:>12,.0f}{100 * c / total:>7.1f}%")
    return "\n".join(lines)


def cmd_inspect(a: argparse.Namespace) -> int:
    from compiler import inspect_model

    print(inspect_model.report(a.model, dict(_shapes(a.input_shape)), a.bind))
    return 0


def _shapes(specs: list[str]) -> list[tuple[str, tuple[int, ...]]]:
    from compiler.onnx_import import parse_shape

    return [parse_shape(s) for s in specs]


def cmd_models(a: argparse.Namespace) -> int:
    from models import zoo

    names = a.names or None
    if names:
        unknown = sorted(set(names) - set(zoo.MODELS))
        if unknown:
            raise EtchError(f"unknown model(s) {unknown}; known: {', '.join(zoo.MODELS)}")
    with _progress("models") as say:
        paths = zoo.build(names, cache_dir=Path(a.cache) if a.cache else None,
                          include_large=a.large, force=a.force, progress=say)
    for name, path in paths.items():
        print(f"{name:<28} {path}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from benchmarks import run as bench

    return bench.main(a.rest)


def cmd_compare(a: argparse.Namespace) -> int:
    from compiler import compare

    out = Path(a.output) if a.output else Path(Path(a.model).stem + ".compare")
    with _progress("compare") as say:
        result = compare.run(a.model, a.bits, a.ternary, a.calib, a.clock_mhz, out, say,
                             a.config or None, not a.no_area)
    print(compare.table(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from compiler.compare import CONFIGS

    p = sub.add_parser("compare", help="tensor engine vs hardwired: area, cycles, throughput",
                       description="Build the tensor engine and hardwired designs of one "
                                   "model with the same weights and compare them.")
    p.add_argument("model")
    p.add_argument("--bits", type=int, help="weight bits (default 8)")
    p.add_argument("--ternary", action="store_true")
    p.add_argument("--calib", help="calibration inputs (default: MODEL.inputs.npz beside it)")
    p.add_argument("--clock-mhz", type=float, default=200.0,
                   help="nominal clock for inferences/s (default 200)")
    p.add_argument("--config", action="append", choices=[c for c, _ in CONFIGS],
                   help="only these configurations (repeatable; default all)")
    p.add_argument("--no-area", action="store_true",
                   help="skip Yosys: report the backends' cell estimates")
    p.add_argument("-o", "--output", help="OUT: writes OUT.json and OUT.png "
                                          "(default MODEL.compare)")
    p.set_defaults(func=cmd_compare)


def cmd_demo(a: argparse.Namespace) -> int:
    from compiler import demo

    return demo.main(model=a.model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etch", description="etch: ONNX -> TVM and Verilog.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compile(sub)
    _add_run(sub, "run", "run an artifact on inputs from an .npz")
    _add_run(sub, "sim", "simulate a verilog artifact with Verilator")
    p = sub.add_parser("inspect", help="list a model's ops, shapes and target support")
    p.add_argument("model")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224")
    p.add_argument("--bind", metavar="VALUES.npz", help=BIND_HELP)
    p.set_defaults(func=cmd_inspect)
    _add_compare(sub)
    p = sub.add_parser("models", help="build the model zoo")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="build")
    b = msub.add_parser("build", help="build zoo models into the cache")
    b.add_argument("names", nargs="*", help="models to build (default: all but large)")
    b.add_argument("--large", action="store_true",
                   help="also build the large models (4096/11008 GEMVs, ImageNet-size)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--cache", help="cache directory (default: $ETCH_CACHE or .cache/models)")
    b.set_defaults(func=cmd_models)
    p = sub.add_parser("bench", help="run benchmarks (see benchmarks/)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("demo", help="compile the digits model for every target and compare")
    p.add_argument("--model", default="digits_mlp")
    p.set_defaults(func=cmd_demo)
    return parser


class _progress:
    """A progress line on stderr for steps that take a while (tqdm; silent when not a tty)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.bar = None

    def __enter__(self) -> Callable[[str], None]:
        from tqdm import tqdm

        self.bar = tqdm(desc=self.what, bar_format="{desc}: {postfix} [{elapsed}]",
                        disable=not sys.stderr.isatty(), leave=False)
        return lambda step: self.bar.set_postfix_str(step)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _settled() -> None:
    """After an interrupt has decided the exit status, ignore further SIGINT/SIGTERM/SIGHUP
    while the process exits (it still joins the build threads, TVM compiling a part), and
    clear CPython's record of an unhandled KeyboardInterrupt. CPython notes one whenever a
    KeyboardInterrupt leaves code it runs from a string (`exec`/`eval` of source: dataclasses
    and namedtuples build their methods that way, so a SIGINT during an import can leave
    one) and never clears it when the exception is then caught; at exit `python -m` sees
    the note and kills itself by SIGINT instead of returning the status. Seen in `make test`
    (1 in 60-80 interrupted compiles): "etch: interrupted", then death by SIGINT, not 130;
    strace showed CPython's own `kill(getpid(), SIGINT)` at exit. Running source through
    `exec` resets the note (`run_eval_code_obj`), so an empty `exec` clears it."""
    if threading.current_thread() is threading.main_thread():
        for sig in interrupts.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    exec("")  # noqa: S102 -- clears CPython's unhandled-KeyboardInterrupt note (above)


def _signal_behind(e: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or Terminated that `e` was raised from, if any: a signal that
    arrives while Python runs a class body's `__set_name__` (a dataclass defined by a module
    the compile imports late) comes out as a RuntimeError caused by it (seen once in `make
    test`: SIGINT reported as an internal error, exit 2)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (KeyboardInterrupt, Terminated)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _signalled(e: BaseException) -> int:
    """Exit status and one line for an interrupt (130) or SIGTERM/SIGHUP (128 + signal)."""
    _settled()
    if isinstance(e, Terminated):
        print(f"etch: terminated by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    print("etch: interrupted", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    interrupts.install()
    try:
        args = parser.parse_args(argv)
        status = int(args.func(args) or 0)
        interrupts.check()
        return status
    except EtchError as e:
        if debug:
            raise
        print(f"etch: error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as signalled:
        return _signalled(signalled)
    except Exception as e:  # a bug in etch: one line, the traceback with --debug
        signalled = _signal_behind(e)
        if signalled is not None:
            return _signalled(signalled)
        if debug:
            raise
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"etch: internal error: {type(e).__name__}: {msg} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
