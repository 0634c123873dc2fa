"""What the polling sources' tests share: a source run in a thread of the test process (real HTTP, real Kafka) with
its metrics at hand, and a topic's records decoded (batch records unpacked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.broker import free_port
from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.consume import drain
from tests.helpers import ROOT


class SourceThread:
    """Subclasses build their source with ``report=self.lines.append`` and hand it to :meth:`_start`; ``stop`` joins
    the thread."""

    lines: list[str]
    source: Any

    def _start(self, source: Any) -> None:
        self.source = source.start()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def value(self, name: str, **labels: str) -> float:
        assert self.error is None, f"the source stopped: {self.error!r}\n" + "\n".join(self.lines)
        return self.source.metrics.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        self.source.stop_event.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the source did not stop within 15 s"
        self.source.stop()


def decoded(bootstrap: str, topic: str) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """(record, headers) of every datum on *topic*, in order per partition."""
    codec = SingleObjectCodec()
    for m in drain(bootstrap, topic, missing_ok=True):
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        for d in (iter_batch(m.value()) if is_batch(m.headers()) else [m.value()]):
            yield codec.decode(d)[1], headers


@contextmanager
def plietsch_run(tmp_path: Path, app_id: str, settings: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """``plietsch run --no-simulate`` (its own broker, worker, API and the sources *settings* turn on) as a process
    group; yields (the API's URL, the log). Ctrl-C at the end must stop everything cleanly (exit code 0)."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(tmp_path / "data"), PLIETSCH_WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PLIETSCH_APP_ID=app_id, **settings)
    api_port, log = free_port(), tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port", str(api_port)],
                            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{api_port}", log
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text()[-3000:]
