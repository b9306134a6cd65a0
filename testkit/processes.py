"""Child processes that do not outlive their starter: the parent-death signal, and `Children`,
a registry that stops every process it started.

`Children.close()` (call it from a `finally`; it also runs at interpreter exit) stops them in
reverse order, SIGKILLing what does not stop in time. Each child also gets a parent-death
signal, so that a SIGKILLed starter does not leave it behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from testkit.paths import ROOT

PR_SET_PDEATHSIG = 1


def die_with_parent(
    cmd: Sequence[str], sig: signal.Signals = signal.SIGKILL
) -> tuple[list[str], Callable[[], None] | None]:
    """`cmd` and a preexec_fn so that the child gets `sig` when the thread that spawned it
    ends (its process dying included): PR_SET_PDEATHSIG follows the spawning *thread*.

    util-linux's setpriv sets the signal in the child without Python code between fork and
    exec, so subprocess can spawn without running fork handlers (a preexec_fn forks the whole
    interpreter, and in a process with gRPC threads that child can abort). The preexec_fn is
    the fallback where setpriv is missing.
    """
    setpriv = shutil.which("setpriv")
    if setpriv:
        name = signal.Signals(sig).name.removeprefix("SIG")
        return [setpriv, "--pdeathsig", name, "--", *cmd], None

    def set_pdeathsig() -> None:  # in the child, between fork and exec
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)

    return list(cmd), set_pdeathsig


class Children:
    """Every process this run started, stopped in reverse order by `close()`."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes], float]] = []
        self._closers: list[Callable[[], None]] = []
        atexit.register(self.close)

    def spawn(
        self,
        name: str,
        cmd: Sequence[str],
        log: Path | None = None,
        *,
        stop_timeout: float = 10.0,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `cmd` in the repository root with its output appended to `log` (stdin and
        stdout as pipes with `pipes`); `stop_timeout`: how long `stop` waits after SIGTERM."""
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")  # noqa: SIM115 - the child owns it from here
        argv, preexec = die_with_parent(cmd)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out,
                preexec_fn=preexec,  # None where setpriv exists
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self._procs.append((name, proc, stop_timeout))
        return proc

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call `closer` in `close()`, after the processes are stopped."""
        self._closers.append(closer)

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Stop tracking `proc` (it was stopped some other way)."""
        self._procs = [e for e in self._procs if e[1] is not proc]

    def stop(self, proc: subprocess.Popen[bytes], timeout: float | None = None) -> int | None:
        """SIGTERM, wait, SIGKILL; forget the process. Returns its exit code."""
        entry = next((e for e in self._procs if e[1] is proc), None)
        wait = timeout if timeout is not None else (entry[2] if entry else 10.0)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.forget(proc)
        return proc.returncode

    def close(self) -> None:
        for _name, proc, timeout in reversed(list(self._procs)):
            self.stop(proc, timeout)
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()
