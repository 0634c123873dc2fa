"""Process supervision for ``plietsch run``: start the children, restart one that dies (with backoff, reported with its
exit code), and stop them in order within a deadline, never leaving a process behind.

Signals: the first SIGINT/SIGTERM/SIGHUP asks for a clean stop; a second one during the stop hurries it (every wait is
cut short, but every child still gets SIGTERM first so it flushes what it holds); whatever still runs at the deadline
is killed. Children run in their own sessions (a terminal's Ctrl-C reaches only ``plietsch run``, which decides the
order) and get SIGTERM from the kernel if ``plietsch run`` itself dies (see ``infra.broker.die_with_parent``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.broker import die_with_parent

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long starts its backoff from the beginning again


class StopSignals:
    """Counts stop signals: ``requested`` after the first, ``hurry`` after the second."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0
        self.requested = threading.Event()
        self.hurry = threading.Event()
        self.on_hurry: Callable[[], None] | None = None

    def install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.requested.set()
        if self.count >= 2 and not self.hurry.is_set():
            self.hurry.set()
            if self.on_hurry is not None:
                self.on_hurry()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to *seconds*; True when a stop was asked for meanwhile."""
        return self.requested.wait(seconds)


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # consecutive short-lived runs, for the backoff
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    def __init__(self, report: Callable[[str], None], spawn_env: dict[str, str] | None = None) -> None:
        self.report = report
        self.children: dict[str, Child] = {}
        self.base_env = spawn_env or dict(os.environ)
        self.stopping = False

    def add(self, name: str, args: list[str], env: dict[str, str] | None = None, restart: bool = True) -> Child:
        child = Child(name, args, env or self.base_env, restart)
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.args, env=child.env, start_new_session=True,
                                      preexec_fn=die_with_parent)  # noqa: PLW1509 - a prctl call only
        child.started_at = time.monotonic()
        child.restart_at = None

    def poll(self) -> None:
        """Report children that exited, and restart them when their backoff is over."""
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is None or self.stopping:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            if child.restart_at is None:
                child.exits.append(code)
                ran = now - child.started_at
                child.failures = 0 if ran >= HEALTHY_AFTER_S else child.failures + 1
                if not child.restart:
                    self.report(f"{child.name} exited with code {code} after {ran:.0f} s (not restarted)")
                    child.proc = None
                    continue
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, child.failures - 1))
                child.restart_at = now + delay
                self.report(f"{child.name} exited with code {_describe(code)} after {ran:.0f} s; restarting in {delay:.0f} s")
            elif now >= child.restart_at:
                self._spawn(child)
                self.report(f"{child.name} restarted (pid {child.pid})")

    # -- stopping -----------------------------------------------------------------------------------------------
    def signal(self, name: str, sig: int = signal.SIGTERM) -> bool:
        child = self.children.get(name)
        if child is None or not child.running:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, sig)  # type: ignore[union-attr]
        return True

    def wait(self, names: list[str], deadline: float, hurry: threading.Event | None = None,
             hurry_grace_s: float = 1.5) -> list[str]:
        """Wait for the named children to exit, until *deadline* (monotonic) or, once *hurry* is set, at most
        *hurry_grace_s* more. Returns the names still running."""
        hurried_deadline: float | None = None
        while True:
            alive = [n for n in names if n in self.children and self.children[n].running]
            if not alive:
                return []
            now = time.monotonic()
            if hurry is not None and hurry.is_set() and hurried_deadline is None:
                hurried_deadline = now + hurry_grace_s
            end = min(deadline, hurried_deadline) if hurried_deadline is not None else deadline
            if now >= end:
                return alive
            time.sleep(0.05)

    def stop(self, names: list[str], deadline: float, hurry: threading.Event | None = None) -> dict[str, int | None]:
        """SIGTERM the named children, wait until *deadline*, SIGKILL the rest. Returns their exit codes."""
        self.stopping = True
        for n in names:
            self.signal(n, signal.SIGTERM)
        for n in self.wait(names, deadline, hurry):
            self.report(f"{n} did not stop in time: killed")
            self.signal(n, signal.SIGKILL)
        out: dict[str, int | None] = {}
        for n in names:
            child = self.children.get(n)
            if child is not None and child.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=2)
                out[n] = child.proc.returncode
                _kill_group_rest(child.proc)
        return out

    def kill_all(self) -> None:
        """The last resort: SIGKILL every child's process group that is still there."""
        self.stopping = True
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=2)
            if child.proc is not None:
                _kill_group_rest(child.proc)


def _kill_group_rest(proc: subprocess.Popen[bytes]) -> None:
    """A child's own processes (its session's group) that outlived it, e.g. one that ignores SIGTERM: killed."""
    if proc.returncode is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} ({signal.Signals(-code).name})"
    return str(code)
