"""`etch bench conformance`: ONNX's backend node cases through etch's cpu target and ONNX
Runtime, side by side (`benchmarks/node_cases.py` runs and compares them).

Counted: the cases whose ops etch lists (its op table), each run as generated. For each
runtime: passes, wrong answers, refusals (etch: an `EtchError` at import, where the opset or
a shape-deciding input is refused, or at compile/run; ORT: an exception) and foreign errors
(an exception escaping etch: a bug). Also the pass rate over the cases without an input that
decides an output shape (which a static-shape compiler cannot take as generated). A case with
such inputs runs a second time through etch with them bound at compile time to the case's
values (`etch compile --bind`; the other inputs fed at run time): "pass with --bind" counts
the cases etch passes either way, and the overall pass rate is printed both ways. Refusals at
import are counted by reason; other failures per op (charged to the ops the reason names,
else to every op of the case; a bound run's failures marked "with --bind"). `--cases` runs a
subset (names or substrings).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections import Counter, defaultdict

from benchmarks import node_cases

GOAL = 0.85  # issue 12: etch cpu passes >= 85% of the listed cases
STATUSES = ("pass", "wrong", "refused", "error")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", nargs="+", help="conformance: only cases whose name contains one "
                                              "of these strings")


def _selected(args: argparse.Namespace) -> list[str]:
    names = node_cases.listed_case_names()
    wanted = getattr(args, "cases", None)
    return [n for n in names if not wanted or any(w in n for w in wanted)]


def run(args: argparse.Namespace) -> dict:
    import onnx
    import onnxruntime
    import tvm

    from benchmarks.bench_tvm import cpu_name

    cases: dict[str, dict] = {}
    seconds = {"etch": 0.0, "ort": 0.0}
    for name in _selected(args):
        case = node_cases.load_case(name)
        if case is None:
            cases[name] = {"ops": [], "shape_deciding": False, "etch": _seq(), "ort": _seq()}
            continue
        deciding = bool(node_cases.shape_deciding_inputs(case.model))
        t0 = time.perf_counter()
        etch = node_cases.run_etch(case, "cpu")
        bound = node_cases.run_etch(case, "cpu", bind=True) if deciding else None
        t1 = time.perf_counter()
        ort = node_cases.run_ort(case)
        seconds["etch"] += t1 - t0
        seconds["ort"] += time.perf_counter() - t1
        cases[name] = {"ops": sorted(case.ops), "opset": case.opset, "shape_deciding": deciding,
                       "etch": etch.to_json(), "ort": ort.to_json()}
        if bound is not None:
            cases[name]["etch_bind"] = bound.to_json()
    return {"benchmark": "conformance", "cpu": cpu_name(), "machine": platform.machine(),
            "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "tvm": tvm.__version__, "goal": GOAL, "seconds": {k: round(v, 1)
                                                             for k, v in seconds.items()},
            "summary": {rt: summary(cases, rt) for rt in ("etch", "ort")},
            "import_refusals": import_refusals(cases), "per_op": per_op(cases), "cases": cases}


def _seq() -> dict:
    return node_cases.Outcome("refused", "import", "sequence or optional values").to_json()


def summary(cases: dict[str, dict], runtime: str) -> dict:
    """Counts of each status (and etch's refusals at import) for one runtime."""
    out = Counter(c[runtime]["status"] for c in cases.values())
    result = {s: out.get(s, 0) for s in STATUSES}
    result["total"] = len(cases)
    result["refused_at_import"] = sum(1 for c in cases.values() if _at_import(c[runtime]))
    static = [c for c in cases.values() if not c["shape_deciding"]]
    result["static_total"] = len(static)
    result["static_pass"] = sum(1 for c in static if c[runtime]["status"] == "pass")
    if runtime == "etch":
        result["pass_bind"] = sum(1 for c in cases.values() if _passes_bound(c))
    return result


def _passes_bound(case: dict) -> bool:
    """etch passes the case as generated, or with its shape-deciding inputs bound."""
    return case["etch"]["status"] == "pass" or case.get("etch_bind", {}).get("status") == "pass"


def _at_import(outcome: dict) -> bool:
    return outcome["status"] == "refused" and outcome["stage"] == "import"


def import_refusals(cases: dict[str, dict]) -> dict[str, int]:
    """etch's refusals at import, by reason (an opset the importer does not read yet, an input
    that decides an output shape, ...)."""
    reasons = Counter(normalise(c["etch"]["reason"]) for c in cases.values()
                      if _at_import(c["etch"]))
    return dict(reasons.most_common())


def normalise(reason: str) -> str:
    """A reason with node names, numbers (but a model's opset) and quoted names blanked, so
    alike reasons group."""
    reason = re.sub(r"node \S+", "node _", reason)
    reason = re.sub(r"'[^']*'|%\S+|(?<!ONNX opset )\b\d+(\.\d+)?(e-?\d+)?\b", "#", reason)
    return reason[:160]


def _charged(case: dict, key: str = "etch") -> list[str]:
    """The ops a failure is charged to: those its reason names, else all of the case's."""
    reason = case[key]["reason"]
    named = [op for op in case["ops"] if re.search(rf"\b{re.escape(op)}\b", reason)]
    return named or case["ops"]


def per_op(cases: dict[str, dict]) -> dict[str, dict]:
    """Per op: cases holding it, etch passes, ORT passes, and etch's failure reasons."""
    table: dict[str, dict] = defaultdict(lambda: {"cases": 0, "etch_pass": 0, "etch_bind_pass": 0,
                                                  "ort_pass": 0, "failures": Counter()})
    for c in cases.values():
        for op in c["ops"]:
            row = table[op]
            row["cases"] += 1
            row["etch_pass"] += c["etch"]["status"] == "pass"
            row["etch_bind_pass"] += _passes_bound(c)
            row["ort_pass"] += c["ort"]["status"] == "pass"
        for key, mark in (("etch", ""), ("etch_bind", " with --bind")):
            out = c.get(key)
            if out and out["status"] != "pass" and not (key == "etch" and _at_import(out)):
                for op in _charged(c, key):
                    table[op]["failures"][f"{out['status']}{mark}: "
                                          f"{normalise(out['reason'])}"] += 1
    return {op: {**row, "failures": dict(row["failures"].most_common())}
            for op, row in sorted(table.items())}


def table(result: dict) -> str:
    """Pass counts side by side, etch's refusals at import by reason, then its other failures
    per op with their main reason."""
    etch, ort = result["summary"]["etch"], result["summary"]["ort"]
    total = max(etch["total"], 1)
    head = (f"ONNX {result['onnx']} backend node cases whose ops etch lists: {etch['total']} -- "
            f"{result['cpu']}, {result['cores']} cores; ORT {result['onnxruntime']}, "
            f"TVM {result['tvm']}")
    lines = [head, f"{'':<34}{'etch cpu':>16}{'ONNX Runtime':>16}"]
    for key, label in (("pass", "pass"), ("wrong", "wrong answer"), ("refused", "refused"),
                       ("refused_at_import", "  of which at import"),
                       ("error", "foreign exception")):
        lines.append(f"{label:<34}{_pct(etch[key], total):>16}{_pct(ort[key], total):>16}")
    lines.append(f"{'pass with --bind':<34}{_pct(etch['pass_bind'], total):>16}"
                 f"{_pct(ort['pass'], total):>16}  (shape-deciding inputs bound at compile time)")
    static = max(etch["static_total"], 1)
    lines.append(f"{'pass, no shape-deciding input':<34}{_pct(etch['static_pass'], static):>16}"
                 f"{_pct(ort['static_pass'], static):>16}  of {etch['static_total']}")

    def met(n: int) -> str:
        return "met" if n >= result["goal"] * total else "not met"

    lines.append(f"overall pass rate: etch cpu {_pct(etch['pass'], total)} as generated, "
                 f"{_pct(etch['pass_bind'], total)} with --bind; ONNX Runtime "
                 f"{_pct(ort['pass'], total)}")
    lines.append(f"goal: etch cpu passes >= {result['goal']:.0%} of all (as generated: "
                 f"{met(etch['pass'])}; with --bind: {met(etch['pass_bind'])}); seconds: "
                 f"etch {result['seconds']['etch']}, ORT {result['seconds']['ort']}")
    lines += ["", "etch's refusals at import (count: reason)"]
    lines += [f"{n:>6}: {reason[:110]}" for reason, n in result["import_refusals"].items()]
    lines += ["", f"{'op':<28}{'cases':>6}{'etch':>6}{'bind':>6}{'ORT':>6}  " +
              "etch failures after import (count: reason)"]
    for op, row in sorted(result["per_op"].items(), key=lambda kv: -sum(kv[1]["failures"]
                                                                        .values())):
        if not row["failures"]:
            continue
        top = next(iter(row["failures"].items()))
        more = len(row["failures"]) - 1
        lines.append(f"{op:<28}{row['cases']:>6}{row['etch_pass']:>6}"
                     f"{row.get('etch_bind_pass', row['etch_pass']):>6}{row['ort_pass']:>6}  "
                     f"{top[1]}: {top[0][:90]}" + (f" (+{more} more)" if more else ""))
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)"
