"""`python -m tests.isa_emulation [--cpu CPU] [PYTEST_ARGS...]` (`make test-avx2`): run the
host-dependent tests (SELECTION) in this virtualenv's Python under `qemu-x86_64 -cpu CPU`.

An emulated CPU is one qemu's TCG runs (qemu 7.2 and later implement AVX2, FMA and F16C);
its CPUID bits TCG cannot implement are switched off as qemu would (silently, not with 20
warnings). Test paths among PYTEST_ARGS replace SELECTION; other arguments go to pytest.
Exit status: pytest's, or 2 with one line when qemu-x86_64 or an x86-64 host is missing.
Under emulation the compute runs ~10-50x slower and importing TVM takes ~20-40 s, so the
selection is the tests whose result depends on the host's ISA, not the whole suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# qemu CPU model -> what etch must detect on it (LLVM features, vector width)
AVX2_ONLY = {"requires": ["avx", "avx2", "fma"], "lacks": ["avx512f", "avx512bw",
                                                           "avx512vnni", "avxvnni"], "bits": 256}
ISAS = {"EPYC-Milan": AVX2_ONLY, "Haswell": AVX2_ONLY}

# Each test here runs on the host's CPU (detected, no --mcpu) or CPU-dependent code (numpy,
# ONNX Runtime, the int8/LUT/float kernels chosen by the detected features) and checks
# results against ONNX Runtime or the integer reference. Assembly tests compile for a named
# CPU and read the text: they give the same answer on any host, so they are not here.
SELECTION = [
    "tests/isa_emulation/test_emulated_host.py",          # the CLI, manifests, refusal
    "tests/runtime/test_host_cpu.py",                     # detection vs what the CPU runs
    # int8 kernels: vpmaddubsw + vpmaddwd (8 and 4 bits), requantisation at 8 lanes
    "tests/backends/test_tvm_int.py::test_qgemm_requantized",
    "tests/backends/test_tvm_int.py::test_qgemm_group_multipliers_and_weight_zero_points",
    "tests/backends/test_tvm_int.py::test_qgemm_of_two_activations",
    "tests/backends/test_tvm_int.py::test_qconv",
    "tests/backends/test_tvm_int.py::test_qconv_int32_output_and_group_multipliers",
    "tests/backends/test_tvm_int.py::test_depthwise_without_bias",
    "tests/backends/test_tvm_int.py::test_a_group_on_the_avx2_kernels",
    "tests/backends/test_tvm_int.py::test_zoo_int8_bit_exact",
    "tests/backends/test_tvm_int.py::test_zoo_w4a8_bit_exact",
    "tests/backends/test_tvm_int.py::test_weight_only_matches_reference",
    "tests/backends/test_tvm_int_batched.py::test_two_activations_are_exact",
    "tests/backends/test_tvm_int_batched.py::test_batched_on_the_avx2_kernels",
    "tests/backends/test_tvm_int_norm.py",
    # LUT kernels: vpshufb on 32-byte vectors (HOST_ISAS: avx2 and generic here)
    "tests/backends/test_lut_kernels.py::test_every_code_kind_bit_exact",
    "tests/backends/test_lut_kernels.py::test_float_tables_to_float_rounding",
    # float kernels at 256 bits (the only width): dense, conv tiles, GEMM convs, Winograd
    "tests/backends/test_tvm_dense.py::test_transformer_ops_match_ort",
    "tests/backends/test_tvm_conv_tiles.py::test_tiles_match_onnx_runtime",
    "tests/backends/test_tvm_conv_tiles.py::test_padded_pools_are_tiled_and_match_onnx_runtime",
    "tests/backends/test_tvm_conv_gemm.py::test_gemm_layers_match_onnx_runtime",
    "tests/backends/test_tvm_conv_gemm.py::test_explain_lists_pointwise_and_im2col",
    # the channel-vector kernels (chosen for 16 lanes) built at the host's 8 lanes
    "tests/backends/test_tvm_conv_gemm.py::test_channel_tiles_match_onnx_runtime_on_the_host",
    "tests/backends/test_tvm_winograd.py::test_winograd_layers_match_onnx_runtime",
    # the in-place depthwise kernel at 8 lanes (`depthwise_cpu`), vector row pools
    "tests/backends/test_tvm_depthwise_kernel.py::test_depthwise_kernel_matches_the_reference",
    ("tests/backends/test_tvm_depthwise_kernel.py::"
     "test_one_dimensional_depthwise_conv_takes_the_kernel"),
    "tests/backends/test_tvm_conv_tiles.py::test_ragged_rows_match_onnx_runtime",
    "tests/backends/test_tvm_nan.py",                      # vmaxps/vminps NaN order
    "tests/backends/test_tvm_dtypes.py",                   # float16 by F16C, not AVX512-FP16
    # the zoo end to end on the detected CPU (float), and the manifest's features
    "tests/backends/test_tvm_cpu.py::test_zoo_model_matches_ort",
    "tests/backends/test_tvm_cpu.py::test_manifest_records_target_features_threads",
    "tests/backends/test_tvm_cpu.py::test_fused_nodes_are_one_kernel_each",
]


def qemu_cpu(qemu: str, cpu: str) -> str:
    """`cpu` with the CPUID features qemu's TCG does not implement switched off."""
    probe = subprocess.run([qemu, "-cpu", cpu, "/bin/true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        raise SystemExit(f"isa_emulation: qemu-x86_64 -cpu {cpu} fails: "
                         f"{probe.stderr.strip().splitlines()[-1:]}")
    off = re.findall(r"TCG doesn't support requested feature: \S+\.([\w.-]+) \[bit",
                     probe.stderr)
    return ",".join([cpu, *(f"{f}=off" for f in dict.fromkeys(off))])


def wrapper(qemu: str, cpu: str, folder: Path) -> Path:
    """A `python` script that runs this interpreter under the emulated CPU."""
    path = folder / "python"
    path.write_text(f'#!/bin/sh\nexec {qemu} -cpu {cpu} {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.isa_emulation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", default="EPYC-Milan", choices=sorted(ISAS),
                        help="the qemu CPU model to emulate (default EPYC-Milan: Zen 3)")
    args, rest = parser.parse_known_args(argv)
    qemu = shutil.which("qemu-x86_64")
    if qemu is None or platform.machine() != "x86_64":
        print("isa_emulation: needs qemu-x86_64 (Debian: qemu-user) on an x86-64 host",
              file=sys.stderr)
        return 2
    cpu = qemu_cpu(qemu, args.cpu)
    tests = [] if any(a.startswith("tests/") for a in rest) else SELECTION
    with tempfile.TemporaryDirectory(prefix="etch-isa-") as tmp:
        python = wrapper(qemu, cpu, Path(tmp))
        env = {**os.environ, "ETCH_EMULATION_PYTHON": str(python),
               "ETCH_EMULATED_ISA": json.dumps({"cpu": args.cpu, **ISAS[args.cpu]})}
        cmd = [str(python), "-m", "pytest", "-p", "tests.isa_emulation.plugin", "-m", "",
               "-p", "no:cacheprovider", *tests, *rest]
        return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
