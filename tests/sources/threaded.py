"""What the polling sources' tests share: a source run in a thread of the test process (real HTTP, real Kafka) with
its metrics at hand, and a topic's records decoded (batch records unpacked)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.consume import drain


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
