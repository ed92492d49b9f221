"""`etch bench verilog`'s options and table, without simulating: every benchmark's options
share one parser (a clash breaks `etch bench` for all of them), and the table prints a row
and the goals line from a result."""

from __future__ import annotations

from benchmarks import bench_verilog, run


def test_options_share_the_bench_parser() -> None:
    args = run.parser().parse_args(["verilog", "--bits", "4", "--clock-mhz", "100"])
    assert args.bits == [4] and args.clock_mhz == 100.0 and args.engines == ["systolic",
                                                                             "adder-tree"]


def test_table() -> None:
    row = {"model": "digits_mlp", "engine": "systolic", "pe": "bitserial", "bits": 4,
           "array": "8x8", "inferences": 450, "sim_seconds": 9.0, "cycles": 1000.0, "cycles_estimate": 1000, "inferences_per_s": 50.0,
           "hw_inferences_per_s": 200000.0, "accuracy": 0.9, "exact": True,
           "plane_skipping": {"saved": 0.25},
           "layers": [{"layer": "fc", "cycles": 900.0, "macs": 4096, "utilisation": 0.57,
                       "gemm_heavy": True}]}
    result = {"cpu": "cpu", "cores": 2, "load_average": [1.0, 2.0, 3.0], "clock_mhz": 200.0,
              "rows": [row], "goals": bench_verilog._goals([row])}
    text = bench_verilog.table(result)
    assert "200,000" in text and "0.57" in text and "0.25" in text and "2 cores" in text
    assert result["goals"]["utilisation_over_80"] is False
