"""`etch bench cuda`: the cuda target on a real GPU, checked and timed beside PyTorch.

Two steps, which may run on two machines (building needs nvcc and TVM's compiler, no GPU;
running needs a GPU and only TVM's runtime, `TVM_USE_RUNTIME_LIB=1`):

- `--cuda-build DIR`: compile every case for `--cuda-arch` (default sm_90) into DIR, with
  its sample inputs and the outputs it must reproduce: ONNX Runtime's for float models, the
  `ref` target's for quantised ones (`--bits`, `--lut`: the same options, run here by the
  integer/LUT reference). DIR/plan.json lists the cases.
- `--cuda-from DIR`: load each artifact on the GPU, compare its outputs with the expected
  ones, and time it two ways: `run` (numpy in, numpy out: copies to and from the device
  included) and the kernels alone (`kernel_seconds`: TVM's time_evaluator, inputs resident).
  Peers in the same process: PyTorch eager on the same GPU (the zoo's ImageNet
  architectures from `models.imagenet`, random weights, cuDNN, TF32 off so both are fp32;
  and GEMVs as fp32 and fp16 `torch.matmul` with weights resident).

With neither option, both steps run here, in a temporary directory. Result: results/cuda.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_tvm import best_latency_us, cpu_name
from compiler.errors import EtchError

# (case name, zoo model, compile options). Float cases are checked against ONNX Runtime,
# quantised ones against the ref target with the same options.
FLOAT = ("resnet_block", "mobilenet", "tiny_encoder", "tiny_decoder", "squeezenet1_1",
         "shufflenet_v2", "mobilenet_v2", "efficientnet_b0")
GEMV = "gemv_k4096_n4096_b1"
QUANT: tuple[tuple[str, str, dict], ...] = (
    ("tiny_decoder.w2.lut", "tiny_decoder", {"bits": 2, "lut": True}),
    ("tiny_decoder.w4.lut", "tiny_decoder", {"bits": 4, "lut": True}),
    ("tiny_decoder.w4", "tiny_decoder", {"bits": 4}),
    (f"{GEMV}.w1.lut", GEMV, {"bits": 1, "lut": True}),
    (f"{GEMV}.w2.lut", GEMV, {"bits": 2, "lut": True}),
    (f"{GEMV}.w2.lut.float", GEMV, {"bits": 2, "lut": True, "lut_table": "float"}),
    (f"{GEMV}.w4.lut", GEMV, {"bits": 4, "lut": True}),
    (f"{GEMV}.w2", GEMV, {"bits": 2}),
    (f"{GEMV}.w4", GEMV, {"bits": 4}),
    ("gemv_k4096_n4096_b8.w2.lut", "gemv_k4096_n4096_b8", {"bits": 2, "lut": True}),
)
DEFAULT_ARCH = "sm_90"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cuda-build", type=Path, metavar="DIR",
                   help="cuda: only build the cases into DIR (needs nvcc, no GPU)")
    p.add_argument("--cuda-from", type=Path, metavar="DIR",
                   help="cuda: only run the cases built in DIR (needs a GPU)")
    p.add_argument("--cuda-arch", default=DEFAULT_ARCH, help="cuda: sm_XX to build for")
    p.add_argument("--cuda-cases", nargs="+", help="cuda: case names (default all)")


def cases(names: list[str] | None = None) -> list[tuple[str, str, dict]]:
    every = [(m, m, {}) for m in FLOAT] + list(QUANT)
    if not names:
        return every
    unknown = set(names) - {c[0] for c in every}
    if unknown:
        raise EtchError(f"unknown cuda case(s) {sorted(unknown)}; known: "
                        f"{', '.join(c[0] for c in every)}")
    return [c for c in every if c[0] in names]


def build(out: Path, arch: str, names: list[str] | None = None) -> dict:
    """Compile the cases into `out`; returns the plan (also written to out/plan.json)."""
    import compiler
    from models import zoo

    out.mkdir(parents=True, exist_ok=True)
    plan = {"arch": arch, "cases": []}
    for case, model, options in cases(names):
        inputs, ort_out = zoo.load_sample(model)
        t0 = time.perf_counter()
        art = compiler.compile(zoo.model_path(model), target="cuda", mcpu=arch, **options)
        seconds = time.perf_counter() - t0
        expected = ort_out if not options else \
            compiler.compile(zoo.model_path(model), target="ref", **options).run(inputs)
        art.save(out / case)
        np.savez(out / f"{case}.npz", **{f"in.{k}": v for k, v in inputs.items()},
                 **{f"out.{k}": v for k, v in expected.items()})
        plan["cases"].append({"case": case, "model": model, "options": options,
                              "expected": "ref" if options else "ort",
                              "compile_s": round(seconds, 2),
                              "artifact_bytes": _artifact_bytes(out / case)})
        print(f"built {case} ({seconds:.1f} s)", flush=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def _artifact_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _split(npz: Path) -> tuple[dict, dict]:
    with np.load(npz) as f:
        return ({k[3:]: f[k] for k in f.files if k.startswith("in.")},
                {k[4:]: f[k] for k in f.files if k.startswith("out.")})


def _compare(got: dict, want: dict) -> dict:
    err = max(float(np.max(np.abs(got[k].astype(np.float64) - want[k]))) for k in want)
    scale = max(float(np.max(np.abs(want[k]))) for k in want)
    close = all(np.allclose(got[k], want[k], rtol=1e-3, atol=1e-4) for k in want)
    exact = all(np.array_equal(got[k], want[k]) for k in want)
    return {"max_abs_err": err, "max_abs": scale, "close": bool(close), "exact": bool(exact)}


def run_cases(src: Path, seconds: float) -> dict:
    """Check and time every case built in `src` on this machine's GPU."""
    import runtime

    plan = json.loads((src / "plan.json").read_text())
    rows = []
    for c in plan["cases"]:
        row = dict(c)
        inputs, want = _split(src / f"{c['case']}.npz")
        try:
            ex = runtime.load(src / c["case"])
            row.update(_compare(ex.run(inputs), want))
            row["etch_run_us"] = best_latency_us(lambda ex=ex, x=inputs: ex.run(x), seconds)
            ks = ex.kernel_seconds(inputs, number=_number(ex, inputs), repeat=5)
            row["etch_kernels_us"] = min(ks) * 1e6
        except Exception as e:  # noqa: BLE001 - a failing case is a row, not the end
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        row.update(_torch_peer(c["model"], c["options"], inputs, seconds))
        rows.append(row)
        print(_row(row), flush=True)
    return {"benchmark": "cuda", "arch": plan["arch"], "gpu": _gpu_name(), "host": cpu_name(),
            "method": "best of 5 rounds' mean per call; run = numpy in/out, kernels = "
                      "TVM time_evaluator / CUDA events with inputs on the GPU; PyTorch "
                      "eager fp32 (TF32 off), cuDNN benchmark off",
            "rows": rows}


def _number(ex, inputs: dict) -> int:
    """Calls per timed repeat of etch's kernels (`_calls`)."""
    return _calls(ex.kernel_seconds(inputs, number=1, repeat=1)[0])


def _calls(one: float) -> int:
    """Calls per timed repeat: about 50 ms of work at `one` second a call, 1 to 1000."""
    return max(1, min(1000, int(0.05 / max(one, 1e-6))))


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - the name is a label only
        return "unknown"


def _torch_peer(model: str, options: dict, inputs: dict, seconds: float) -> dict:
    """PyTorch eager on the GPU for the same architecture: ImageNet zoo models (random
    weights: a timing peer, its outputs are not compared) and the GEMV's matmul."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    from models import zoo

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.from_numpy(next(iter(inputs.values())))
    peers = {}
    if model in zoo.IMAGENET and not options:
        from models import imagenet

        net = getattr(imagenet, model)().eval().cuda()
        peers["torch_fp32"] = (net, x)
    elif model.startswith("gemv_"):
        k, n = x.shape[-1], int(model.split("_n")[1].split("_")[0])
        w32 = torch.randn(k, n).cuda()
        w16 = w32.half()
        peers["torch_fp32"] = (lambda a: a @ w32, x)
        peers["torch_fp16"] = (lambda a: a @ w16, x.half())
    out = {}
    with torch.inference_mode():
        for name, (fn, arg) in peers.items():
            dev = arg.cuda()

            def host_to_host(fn=fn, arg=arg):
                return fn(arg.cuda()).cpu()

            out[f"{name}_run_us"] = best_latency_us(host_to_host, seconds)
            out[f"{name}_kernels_us"] = _events_us(fn, dev)
    return out


def _events_us(fn, arg) -> float:
    """Best of 5 means over ~50 ms of calls, timed with CUDA events."""
    import torch

    fn(arg)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(arg)
    torch.cuda.synchronize()
    number = _calls(time.perf_counter() - t0)
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            fn(arg)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / number)
    return best


def run(args: argparse.Namespace) -> dict:
    seconds = float(getattr(args, "seconds", 0.3))
    arch = getattr(args, "cuda_arch", DEFAULT_ARCH)
    names = getattr(args, "cuda_cases", None)
    if getattr(args, "cuda_build", None):
        return {"benchmark": "cuda", "built": build(args.cuda_build, arch, names),
                "skipped": f"built only: the cases and their plan are in {args.cuda_build}"}
    if getattr(args, "cuda_from", None):
        if not (args.cuda_from / "plan.json").is_file():
            raise EtchError(f"{args.cuda_from}: no plan.json (build the cases there with "
                            f"--cuda-build DIR first)")
        return run_cases(args.cuda_from, seconds)
    missing = _missing()
    if missing:
        return {"benchmark": "cuda", "skipped": missing}
    tmp = Path(tempfile.mkdtemp(prefix="etch-bench-cuda-"))
    try:
        build(tmp, arch, names)
        return run_cases(tmp, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing() -> str | None:
    """Why both steps cannot run here, or None."""
    if shutil.which("nvcc") is None:
        return "no nvcc here (build with --cuda-build DIR where there is one)"
    import tvm

    if not tvm.cuda(0).exist:
        return ("no CUDA device here (build with --cuda-build DIR, run with --cuda-from DIR "
                "where there is one)")
    return None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['case']:<34} error: {r['error']}"
    check = "exact" if r["exact"] else "close" if r["close"] else "DIFFERS"
    ratio = (f"{r['etch_kernels_us'] / r['torch_fp32_kernels_us']:.2f}"
             if r.get("torch_fp32_kernels_us") else "-")
    return (f"{r['case']:<34} {check:<7} {r['max_abs_err']:9.2e} "
            f"{_fmt(r['etch_run_us']):>9} {_fmt(r['etch_kernels_us']):>9} "
            f"{_fmt(r.get('torch_fp32_kernels_us')):>9} {_fmt(r.get('torch_fp16_kernels_us')):>9}"
            f" {ratio:>6}")


def table(result: dict) -> str:
    if "built" in result:
        plan = result["built"]
        return "\n".join([f"built {len(plan['cases'])} cuda cases for {plan['arch']}"] +
                         [f"  {c['case']:<34} {c['compile_s']:6.1f} s "
                          f"{c['artifact_bytes'] / 1e6:8.2f} MB" for c in plan["cases"]])
    if "skipped" in result:
        return f"cuda: skipped: {result['skipped']}"
    head = (f"etch cuda on {result['gpu']} ({result['arch']}), host {result['host']}\n"
            f"{'case':<34} {'check':<7} {'max err':>9} {'run us':>9} {'kern us':>9} "
            f"{'torch32':>9} {'torch16':>9} {'/t32':>6}")
    return "\n".join([head] + [_row(r) for r in result["rows"]])


if __name__ == "__main__":  # the GPU step without the etch console script
    import sys

    from benchmarks import run as bench_run

    sys.exit(bench_run.main(["cuda", *sys.argv[1:]]))
