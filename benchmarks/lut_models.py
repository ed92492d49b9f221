"""`etch bench lut`'s whole-model job: a zoo model (the tiny decoder) compiled with `--lut`
at each bit width beside the same weights without `--lut`, ONNX Runtime on the float model
and on MatMulNBits models of it (ORT's own quantiser, block 32, accuracy_level 4 and 0),
one process per thread count (`lut_peers.py` spawns it as kind "model").

Per configuration: wall and CPU microseconds per call (the whole model, inputs in and
outputs out) and the output's SNR against the float model (dB).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.lut_peers import best_times

ETCH_BITS = ("1", "2", "3", "4", "t")
NBITS = ((4, 4), (4, 0), (2, 4), (2, 0))  # (bits, accuracy_level), block 32


def snr_db(y: np.ndarray, ref: np.ndarray) -> float:
    noise = float(((y.astype(np.float64) - ref) ** 2).sum())
    return float(10 * math.log10(float((ref.astype(np.float64) ** 2).sum()) / max(noise, 1e-30)))


def model_job(job: dict) -> dict:
    """Every etch and ORT configuration of the job's zoo model (see the module docstring)."""
    import onnx

    from models import zoo
    from models.nbits import quantize_nbits, set_accuracy_level

    path = zoo.build([job["model"]])[job["model"]]
    x = dict(np.load(path.parent / f"{path.stem}.inputs.npz"))
    model = onnx.load(path)
    ref = _ort(model, x, job)
    out = {"ort fp32": ref}
    want = ref.pop("y")
    for bits in job.get("bits", ETCH_BITS):
        for lut in (True, False):
            name = f"etch {bits}b{' lut' if lut else ''}"
            out[name] = _etch(path, x, bits, lut, job)
            out[name]["snr_db"] = snr_db(out[name].pop("y"), want)
    for bits, level in NBITS:
        q = set_accuracy_level(quantize_nbits(model, bits, 32, 0), level)
        name = f"ORT MatMulNBits {bits}b b32 acc{level}"
        out[name] = _ort(q, x, job)
        out[name]["snr_db"] = snr_db(out[name].pop("y"), want)
    return out


def _etch(path, x: dict, bits: str, lut: bool, job: dict) -> dict:
    import compiler

    kw = {"ternary": True} if bits == "t" else {"bits": int(bits)}
    art = compiler.compile(str(path), "cpu", group_size=32, lut=lut, threads=job["threads"],
                           **kw)
    us, cpu = best_times(lambda: art.run(x), job["seconds"])
    [y] = art.run(x).values()
    return {"us": us, "cpu_us": cpu, "y": y}


def _ort(model, x: dict, job: dict) -> dict:
    from benchmarks.lut_peers import _session

    sess = _session(model, job["threads"])
    us, cpu = best_times(lambda: sess.run(None, x), job["seconds"])
    return {"us": us, "cpu_us": cpu, "y": sess.run(None, x)[0]}


def model_lines(model: str, rows: dict) -> list[str]:
    """The whole-model table: one line per configuration and thread count."""
    out = [f"{model}, whole model (us per call; CPU us; output SNR vs float dB)",
           f"  {'configuration':<34}" + "".join(f"{t + ' thr':>12}{'cpu':>9}"
                                                  for t in rows) + f"{'SNR':>8}"]
    for t, per in rows.items():
        if "error" in per:
            out.append(f"  {t} thread(s): {per['error']}")
    names = next((list(per) for per in rows.values() if "error" not in per), [])
    for name in names:
        cells, snr = "", math.nan
        for per in rows.values():
            r = per.get(name, {})
            cells += f"{r.get('us', math.nan):>12.1f}{r.get('cpu_us', math.nan):>9.1f}"
            snr = r.get("snr_db", snr)
        out.append(f"  {name:<34}{cells}{'-' if math.isnan(snr) else f'{snr:.1f}':>8}")
    return out
