"""SIGINT, SIGTERM and SIGHUP as exceptions that cannot be lost.

The command line (`install`, once per `main`) turns each signal into an exception raised in
the main thread -- KeyboardInterrupt for SIGINT, `Terminated` for the others -- so that
`finally` blocks and finalisers remove a compile's temporary directories. Python raises a
handler's exception wherever the main thread happens to be, and in a few places it is
printed and dropped ("Exception ignored in ..."): a weakref callback (importlib's module
locks), `__del__`, the garbage collector. Seen in `make test` under load: a SIGINT during
an import was dropped that way and the compile went on to write its artifact and exit 0.
So every signal is also recorded, and `check` raises it again where etch is about to make
something permanent (an artifact swapped into place, an .npz renamed) and when a command
returns.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_received: list[int] = []


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that cleanup code runs (`finally`
    blocks, the compile's `except BaseException`, the temporary artifact's finaliser)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    raise _exception(signum)


def install() -> None:
    """Record and raise SIGINT/SIGTERM/SIGHUP from now on, forgetting earlier ones (main
    thread only; a SIGINT the process was started with ignored, as a shell's background job
    is, stays ignored)."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
            continue
        signal.signal(sig, _raise)


def check() -> None:
    """Raise again the first signal received since `install`, if any: its exception may
    have been dropped where Python ignores exceptions."""
    if _received:
        raise _exception(_received[0])
