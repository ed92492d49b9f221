"""`etch compile --lut` as a user runs it: the zoo's tiny decoder at 1-4 bits and ternary on
cpu (and edge under qemu), ORT MatMulNBits models matching ONNX Runtime, `--explain`
naming each layer's kernel, layout and table mode, and bad option combinations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import compiler
from models import gemv, zoo
from models.nbits import quantize_nbits
from tests.e2e.test_cli import _assert_one_line_error, _mlp, etch
from tests.edge_tools import needs_edge
from tests.golden import run_ort


def snr_db(y: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / max(((y - ref) ** 2).sum(), 1e-30)))


def compile_and_run(model: Path, tmp: Path, target: str, *opts: str) -> tuple[dict, str]:
    """`etch compile` then `etch run` on the model's saved sample; (outputs, stdout)."""
    out = tmp / f"art.{target}"
    r = etch("compile", model, "--target", target, "-o", out, *opts)
    assert r.returncode == 0, r.stderr
    r2 = etch("run", out, "--inputs", _inputs(model), "--out", tmp / f"{target}.npz")
    assert r2.returncode == 0, r2.stderr
    return dict(np.load(tmp / f"{target}.npz")), r.stdout


def _inputs(model: Path) -> Path:
    """The sample saved beside a model: X.onnx -> X.inputs.npz."""
    return model.parent / f"{model.stem}.inputs.npz"


@pytest.fixture(scope="module")
def decoder() -> Path:
    return zoo.build(["tiny_decoder"])["tiny_decoder"]


def _decoder_case(decoder: Path, tmp_path: Path, target: str, quant: list[str]) -> None:
    """--lut on `target` vs the reference interpreter of the same --lut graph (int8 tables:
    an activation that lands on a rounding tie of a table may move one table step, so the
    comparison is an SNR), and the LUT output's SNR vs float beside the non-LUT one."""
    opts = [*quant, "--group-size", "32"]
    lut, stdout = compile_and_run(decoder, tmp_path, target, *opts, "--lut", "--explain")
    kw = {"ternary": True} if "--ternary" in quant else {"bits": int(quant[1])}
    x = dict(np.load(_inputs(decoder)))
    ref = compiler.compile(str(decoder), "ref", group_size=32, lut=True, **kw).run(x)
    plain = compiler.compile(str(decoder), "ref", group_size=32, **kw).run(x)
    float_out = dict(np.load(zoo.cache_file("tiny_decoder", "ort.npz")))
    y, want = lut["output"], ref["output"]
    assert snr_db(y, want) > 40
    assert abs(snr_db(y, float_out["output"]) - snr_db(plain["output"], float_out["output"])) < 1
    assert "LUT GEMM" in stdout and stdout.count(" lut ") == 12
    assert "int8" in stdout


@pytest.mark.parametrize("quant", [["--bits", "2"]])
def test_tiny_decoder_cpu(decoder: Path, tmp_path: Path, quant: list[str]) -> None:
    _decoder_case(decoder, tmp_path, "cpu", quant)


@pytest.mark.slow
@pytest.mark.parametrize("quant", [["--bits", "1"], ["--bits", "3"], ["--bits", "4"],
                                   ["--ternary"]])
def test_tiny_decoder_cpu_other_bits(decoder: Path, tmp_path: Path, quant: list[str]) -> None:
    _decoder_case(decoder, tmp_path, "cpu", quant)


@needs_edge
@pytest.mark.slow
@pytest.mark.parametrize("quant", [["--bits", "2"], ["--bits", "1"], ["--bits", "3"],
                                   ["--bits", "4"], ["--ternary"]])
def test_tiny_decoder_edge(decoder: Path, tmp_path: Path, quant: list[str]) -> None:
    _decoder_case(decoder, tmp_path, "edge", quant)


def test_tiny_decoder_two_level_scales(decoder: Path, tmp_path: Path) -> None:
    """--scale-format u8: uint8 block scales x float16 super-block scales in every layer,
    the kernel's output that of the reference of the same graph, and the SNR vs float that
    of float16 scales."""
    opts = ["--bits", "2", "--group-size", "32", "--lut", "--scale-format", "u8"]
    lut, stdout = compile_and_run(decoder, tmp_path, "cpu", *opts, "--explain")
    assert stdout.count("uint8 x float16/8 scales") == 12
    x = dict(np.load(_inputs(decoder)))
    kw = {"bits": 2, "group_size": 32, "lut": True}
    ref = compiler.compile(str(decoder), "ref", scale_format="u8", **kw).run(x)["output"]
    half = compiler.compile(str(decoder), "ref", **kw).run(x)["output"]
    float_out = dict(np.load(zoo.cache_file("tiny_decoder", "ort.npz")))["output"]
    assert snr_db(lut["output"], ref) > 40
    assert abs(snr_db(ref, float_out) - snr_db(half, float_out)) < 0.5


@pytest.mark.parametrize("bits", [4, pytest.param(2, marks=pytest.mark.slow)])
def test_matmul_nbits_model_matches_onnx_runtime(tmp_path: Path, bits: int) -> None:
    """accuracy_level 0: ORT computes in float (level 4 quantises the activations to int8,
    its own approximation)."""
    model = quantize_nbits(gemv.build_gemv(512, 384, 1).model, bits=bits, block_size=32,
                           accuracy_level=0)
    path = tmp_path / "nbits.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(bits).standard_normal((1, 512)).astype(np.float32)
    np.savez(tmp_path / "nbits.inputs.npz", input=x)
    want = run_ort(model, {"input": x})["output"]
    exact, stdout = compile_and_run(path, tmp_path, "cpu", "--lut", "--lut-table", "float",
                                    "--explain")
    np.testing.assert_allclose(exact["output"], want, rtol=1e-4,
                               atol=2e-5 * float(np.abs(want).max()))
    assert " lut " in stdout and "float" in stdout
    quant = compiler.compile(str(path), "cpu", lut=True).run({"input": x})["output"]
    rel = np.sqrt(((quant - want) ** 2).mean() / (want ** 2).mean())
    assert rel < 0.015


@pytest.mark.parametrize("opts,needles", [  # --int and verilog: tests/passes, test_cli.py
    (["--bits", "8", "--lut"], ["1-4-bit"]),
    (["--lut-table", "float"], ["--lut-table", "--lut"]),
    (["--lut"], ["no layer", "--bits"]),
    (["--bits", "2", "--lut", "--scale-format", "u8"], ["--scale-format", "--group-size"]),
])
def test_bad_lut_options(tmp_path: Path, opts: list[str], needles: list[str]) -> None:
    model = _mlp(tmp_path / "m.onnx")
    r = etch("compile", model, "-o", tmp_path / "art", *opts)
    _assert_one_line_error(r, *needles)
    assert not (tmp_path / "art").exists()
