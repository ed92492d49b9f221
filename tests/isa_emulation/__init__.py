"""The tests as an AVX2-only host runs them: pytest under qemu-user with an emulated CPU.

`python -m tests.isa_emulation` (`make test-avx2`) runs the host-dependent tests (SELECTION in
`__main__.py`) in `qemu-x86_64 -cpu EPYC-Milan` (AMD Zen 3: AVX2 + FMA, no AVX-512), so
etch's CPU detection, its kernel choice and every compiled kernel meet a CPU without AVX-512;
an instruction the emulated CPU lacks is SIGILL, as on the real machine. `plugin.py` runs
inside the emulated pytest: it checks that the detected CPU is the emulated one and makes the
CLI subprocesses the tests start (`sys.executable`) run emulated too.
"""
