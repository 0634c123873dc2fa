"""The supervisor of ``plietsch run`` with real child processes."""

from __future__ import annotations

import os
import signal
import sys
import time

from infra.broker import new_epoch
from streams.supervisor import StopSignals, Supervisor


def _wait(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_epochs_are_fresh_and_fit_the_origin_header() -> None:
    epochs = {new_epoch() for _ in range(50)}
    assert len(epochs) == 50
    assert all("|" not in e and e[:8].isdigit() for e in epochs)


def test_a_child_that_dies_is_reported_with_its_code_and_restarted_with_backoff() -> None:
    said: list[str] = []
    sup = Supervisor(said.append)
    child = sup.add("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        _wait(lambda: (sup.poll(), len(child.exits) >= 2)[1], 30, "two exits")
    finally:
        sup.kill_all()
    assert child.exits[:2] == [3, 3]
    assert "flaky exited with code 3 after 0 s; restarting in 1 s" in said
    assert "flaky exited with code 3 after 0 s; restarting in 2 s" in said  # the backoff doubles
    assert any(m.startswith("flaky restarted (pid ") for m in said)


def test_stop_sigterms_then_kills_what_does_not_stop_and_leaves_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sup = Supervisor(lambda m: None)
    polite = sup.add("polite", [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"])
    stubborn = sup.add("stubborn", [sys.executable, "-c",
                                    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                    "print('ready', flush=True)\nwhile True: time.sleep(0.1)"])
    grandchild_pid = tmp_path / "gc.pid"
    ignore = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.1)"
    parent = sup.add("parent", [sys.executable, "-c",
                                f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', {ignore!r}])\n"
                                f"open({str(grandchild_pid)!r}, 'w').write(str(p.pid))\nwhile True: time.sleep(0.1)"])
    _wait(grandchild_pid.is_file, 30, "the grandchild")
    time.sleep(0.5)
    t0 = time.monotonic()
    codes = sup.stop(["polite", "stubborn", "parent"], time.monotonic() + 2.0)
    took = time.monotonic() - t0
    assert codes["polite"] == -signal.SIGTERM
    assert codes["stubborn"] == -signal.SIGKILL
    assert took < 10, took
    gc = int(grandchild_pid.read_text())
    _wait(lambda: not _alive(gc), 10, "the grandchild (same process group) to be gone")
    assert not polite.running and not stubborn.running and not parent.running


def test_a_second_signal_hurries() -> None:
    s = StopSignals()
    old = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
    try:
        s.install()
        os.kill(os.getpid(), signal.SIGINT)
        _wait(s.requested.is_set, 5, "the stop request")
        assert not s.hurry.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        _wait(s.hurry.is_set, 5, "the hurry")
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    sup = Supervisor(lambda m: None)
    sup.add("stubborn", [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                               "while True: time.sleep(0.1)"])
    time.sleep(0.5)
    t0 = time.monotonic()
    sup.stop(["stubborn"], time.monotonic() + 60, s.hurry)  # a long deadline, cut to the hurry grace
    assert time.monotonic() - t0 < 30


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of an exited process counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
