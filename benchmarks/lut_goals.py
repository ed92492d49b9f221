"""`etch bench lut`'s table rows and the issue's goals, computed as ratios within one run."""

from __future__ import annotations

import math

Row = dict


def _get(d: dict, *path: str) -> float:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return math.nan
        d = d[key]
    return float(d) if isinstance(d, (int, float)) else math.nan


def _line(name: str, us: float, nbytes: float, ops: float, cold: float = math.nan,
          note: str = "") -> str:
    gbps, gops = nbytes / us / 1e3, ops / us / 1e3
    cold_txt = f"{cold:>10.1f}{nbytes / cold / 1e3:>8.1f}" if not math.isnan(cold) else \
        f"{'':>10}{'':>8}"
    return f"  {name:<30}{us:>10.1f}{gbps:>8.1f}{gops:>8.1f}{cold_txt}  {note}"


def row_lines(row: Row) -> list[str]:
    """One shape/batch/threads block of the table."""
    k, n, b = row["k"], row["n"], row["batch"]
    ops = 2.0 * b * k * n
    out = [f"{k}x{n} batch {b}, {row['threads']} thread(s)",
           f"  {'runtime':<30}{'us':>10}{'GB/s':>8}{'GOPS':>8}{'cold us':>10}{'GB/s':>8}"]
    for part in ("etch", "ort", "numpy"):
        if "error" in row.get(part, {}):
            out.append(f"  {part}: {row[part]['error']}")
    for bits, r in (row.get("etch") or {}).items():
        if not isinstance(r, dict) or "lut_us" not in r:
            continue
        note = f"err {r['int8_rel_rms']:.4f}, werr {r.get('weight_rel_rms', math.nan):.4f}, " \
            f"pass picks {r['pass_picks']}, {r.get('scales', 'float32')} scales, " \
            f"CPU {r.get('lut_cpu_us', math.nan):.1f} us" + (
                f", cold CPU {r['lut_cold_cpu_us']:.1f} us" if "lut_cold_cpu_us" in r else "") + (
                f", stream beside the cold run {r['cold_stream_gbps']:.1f} GB/s (CPU "
                f"{r['cold_stream_cpu_gbps']:.1f})" if "cold_stream_gbps" in r else "")
        out.append(_line(f"etch lut {bits}", r["lut_us"], r["lut_bytes"], ops,
                         r.get("lut_cold_us", math.nan), note))
        for alt in ("fp16", "fp32"):
            a = r.get(f"{alt}_scales")
            if isinstance(a, dict) and "lut_us" in a:
                out.append(_line(f"etch lut {bits}, {alt} scales", a["lut_us"], a["lut_bytes"],
                                 ops, note=f"werr {a.get('weight_rel_rms', math.nan):.4f}, "
                                           f"CPU {a['lut_cpu_us']:.1f} us"))
        if "dequant_us" in r:
            cpu = r.get("dequant_cpu_us")
            out.append(_line(f"etch dequant {bits}", r["dequant_us"], r["dequant_bytes"], ops,
                             note=f"CPU {cpu:.1f} us" if cpu is not None else ""))
    for name, r in (row.get("ort") or {}).items():
        if isinstance(r, dict) and "us" in r:
            note = f"err {r['rel_rms_vs_float']:.4f}" if "rel_rms_vs_float" in r else ""
            note += "".join(f", {what} {r[key]:.1f} us" for what, key in (
                ("CPU", "cpu_us"), ("cold CPU", "cold_cpu_us")) if key in r)
            out.append(_line(f"ORT {name}", r["us"], r["bytes"], ops, r.get("cold_us",
                                                                            math.nan), note))
    r = (row.get("numpy") or {}).get("fp32")
    if isinstance(r, dict) and "us" in r:
        out.append(_line("numpy fp32", r["us"], r["bytes"], ops, r.get("cold_us", math.nan)))
    return out


def _find(result: dict, batch: int, threads: int, shape: tuple[int, int] | None = None) -> Row:
    k, n = shape or (result["rows"][0]["k"], result["rows"][0]["n"])
    for r in result["rows"]:
        if (r["k"], r["n"], r["batch"], r["threads"]) == (k, n, batch, threads):
            return r
    return {}


def _goal(text: str, value: float, target: float, higher: bool = True) -> dict:
    met = (value >= target) if higher else (value <= target)
    return {"goal": text, "value": round(value, 3), "target": target,
            "met": bool(met) if not math.isnan(value) else None}


def _picked_us(r: dict, cpu: bool = False) -> float:
    """The time (wall, or process CPU) of the path the pass picks (the LUT kernel or the
    dequantising one)."""
    key = "lut" if r.get("pass_picks") == "lut" else "dequant"
    return float(r.get(f"{key}_cpu_us" if cpu else f"{key}_us", math.nan))


def _stream(result: dict, row: Row, t: int, key: str) -> float:
    """The streaming read (GB/s) beside the cold run (same process, right before and after),
    else the run's stream job's."""
    near = _get(row, "etch", "2", f"cold_stream_{key}")
    return near if not math.isnan(near) else _get(result, "stream", str(t), key)


def _cold_goals(result: dict) -> list[dict]:
    """Cold 2-bit GEMV GB/s over the streaming read's, per thread count on wall time, and
    for one thread on process CPU time too (the goal judged: on a shared machine a
    one-thread run's wall time includes waiting for a core, its CPU time does not)."""
    out = []
    for t in result["threads_run"]:
        row = _find(result, 1, t)
        nbytes = _get(row, "etch", "2", "lut_bytes")
        times = [("", "lut_cold_us", "gbps")] + \
            [(" (CPU time)", "lut_cold_cpu_us", "cpu_gbps")] * (t == 1)
        for what, mine, stream in times:
            cold = nbytes / lut(row, "2", mine) / 1e3
            out.append(_goal(f"cold 2-bit GEMV, {t} thread(s): GB/s / streaming GB/s{what}",
                             cold / _stream(result, row, t, stream), 0.8))
    return out


def lut(row: Row, bits: str, key: str = "lut_us") -> float:
    return _get(row, "etch", bits, key)


def ort(row: Row, name: str, key: str = "us") -> float:
    return _get(row, "ort", name, key)


def _gemv_goals(g1: Row, at: str = "") -> list[dict]:
    """The one-thread GEMV goals of one shape, from wall and from CPU time."""
    out = []
    for what, mine, theirs in (("", "lut_us", "us"), (" (CPU time)", "lut_cpu_us", "cpu_us")):
        what += at
        best2 = min((ort(g1, n, theirs) for n in (g1.get("ort") or {})
                     if n.startswith("nbits2_b32")), default=math.nan)
        out += [
            _goal(f"2-bit GEMV, 1 thread: MatMulNBits 4-bit acc4 b32 / etch 2-bit{what}",
                  ort(g1, "nbits4_b32_acc4_lut0", theirs) / lut(g1, "2", mine), 3.0),
            _goal(f"2-bit GEMV, 1 thread: ORT's best 2-bit b32 / etch 2-bit{what}",
                  best2 / lut(g1, "2", mine), 2.0),
            _goal(f"4-bit GEMV, 1 thread: etch 4-bit / MatMulNBits 4-bit acc4 b32{what}",
                  lut(g1, "4", mine) / ort(g1, "nbits4_b32_acc4_lut0", theirs), 1.0,
                  higher=False),
            _goal(f"GEMV, 1 thread: etch 1-bit / etch 2-bit{what}",
                  lut(g1, "1", mine) / lut(g1, "2", mine), 0.6, higher=False),
        ]
    return out


def goals(result: dict) -> list[dict]:
    """The issue's goals on the first shape, and the GEMV goals on every other shape
    (ratios within this run)."""
    one, allt = 1, max(result["threads_run"])
    g1 = _find(result, 1, one)
    out = _gemv_goals(g1)
    shapes = list(dict.fromkeys((r["k"], r["n"]) for r in result["rows"]))
    for k, n in shapes[1:]:
        out += _gemv_goals(_find(result, 1, one, (k, n)), f" at {k}x{n}")
    out += _cold_goals(result)
    for b in (8, 64):
        row = _find(result, b, one)
        for bits in ("2", "4"):
            for what, cpu in (("", False), (" (CPU time)", True)):
                mine = _picked_us(row.get("etch", {}).get(bits, {}), cpu)
                theirs = ort(row, f"nbits{bits}_b32_acc4_lut0", "cpu_us" if cpu else "us")
                out.append(_goal(f"batch {b}, {bits}-bit, 1 thread: etch (pass's path) / "
                                 f"MatMulNBits acc4 b32{what}", mine / theirs, 1.0,
                                 higher=False))
    if allt > one:
        c1, ca = lut(_find(result, 1, one), "2", "lut_cold_us"), \
            lut(_find(result, 1, allt), "2", "lut_cold_us")
        out.append(_goal(f"cold 2-bit GEMV: {allt} threads vs 1", c1 / ca, 1.7))
    worst = max((_get(g1, "etch", b, "int8_rel_rms") for b in (g1.get("etch") or {})),
                default=math.nan)
    out.append(_goal("int8 tables: worst relative RMS error vs exact product", worst, 0.015,
                     higher=False))
    return out


def context(result: dict) -> list[dict]:
    """What bounds the goals on this machine now: the warm 2-bit kernel against a hot-loop
    stream of the same bytes (CPU time: at 1.0 the kernel streams as fast as the caches
    deliver), and the parallelism a compute-bound kernel gets (all threads vs one: on a
    shared machine the scheduler may give a process less than all its CPUs)."""
    one, allt = 1, max(result["threads_run"])
    g1 = _find(result, 1, one)
    warm = _get(g1, "etch", "2", "lut_bytes") / _get(g1, "etch", "2", "lut_cpu_us") / 1e3
    out = [{"text": "warm 2-bit GEMV, 1 thread, CPU time: GB/s / hot-loop stream GB/s of "
                    "the same bytes", "value": warm / _get(result, "stream", "1",
                                                           "warm_cpu_gbps")},
           {"text": "warm 2-bit GEMV, 1 thread, CPU time: fp32 scales / the run's scales",
            "value": _get(g1, "etch", "2", "fp32_scales", "lut_cpu_us") /
            _get(g1, "etch", "2", "lut_cpu_us")}]
    for bits in ("1", "2"):
        out.append({"text": f"warm {bits}-bit GEMV, 1 thread, CPU time: fp16 scales / the "
                            f"run's scales", "value": _get(g1, "etch", bits, "fp16_scales",
                                                           "lut_cpu_us") /
                    _get(g1, "etch", bits, "lut_cpu_us")})
    if allt > one:
        spin = _get(result, "stream", "1", "spin_us") / \
            _get(result, "stream", str(allt), "spin_us")
        out.append({"text": f"compute-bound kernel: {allt} threads vs 1 (the parallelism "
                            f"this process got)", "value": spin})
        out.append({"text": f"streaming read: {allt} threads vs 1",
                    "value": _get(result, "stream", str(allt), "gbps") /
                    _get(result, "stream", "1", "gbps")})
        warm2 = _get(_find(result, 1, one), "etch", "2", "lut_us") / \
            _get(_find(result, 1, allt), "etch", "2", "lut_us")
        out.append({"text": f"warm 2-bit GEMV: {allt} threads vs 1", "value": warm2})
    return [{**c, "value": round(c["value"], 3)} for c in out]


def context_lines(cs: list[dict]) -> list[str]:
    return ["context (this run):"] + [f"  {c['text']:<72} {c['value']:>8.3f}" for c in cs]


def goal_lines(gs: list[dict]) -> list[str]:
    out = ["goals (ratios in this run):"]
    for g in gs:
        mark = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        out.append(f"  {g['goal']:<72} {g['value']:>8.3f}  target {g['target']}: {mark}")
    return out
