"""A live client whose connection takes nothing is cut off (issue 15 item 5), over a real uvicorn and real sockets:
its write is abandoned after the write timeout, its stream's generator is closed (which releases its subscription and
stream slot in the API), the connection ends once the client reads what the kernel had buffered, and a client beside
it that reads goes on receiving throughout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from infra.broker import free_port
from tests.helpers import ROOT, wait_for


def test_a_connection_that_takes_nothing_is_cut_off_and_a_reading_one_is_not(tmp_path: Path) -> None:
    log = tmp_path / "cutoff.log"
    port = free_port()
    env = dict(os.environ, CUTOFF_LOG=str(log), CUTOFF_WRITE_TIMEOUT_S="2", PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "tests.api.live_cutoff_app:app", "--port", str(port),
                               "--log-level", "warning"], cwd=ROOT, env=env, stdout=(tmp_path / "server.log").open("wb"),
                              stderr=subprocess.STDOUT)
    try:
        def connect(path: str) -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return sock

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
            except OSError:
                return False
            return True

        wait_for(up, 30, "the server")
        received = [0]
        stop = threading.Event()

        def read_all(sock: socket.socket) -> None:
            sock.settimeout(1)
            while not stop.is_set():
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                received[0] += len(chunk)

        reader = connect("/reads")
        t = threading.Thread(target=read_all, args=(reader,), daemon=True)
        t.start()
        stuck = connect("/stuck")
        # the kernel takes a few megabytes before a write blocks; two seconds after that the stream is cut
        wait_for(lambda: log.exists() and "cut /stuck" in log.read_text(), 60, "the stuck client to be cut off")
        wait_for(lambda: "closed /stuck" in log.read_text(), 10, "its stream's generator to be closed")
        before = received[0]
        time.sleep(1.5)
        assert received[0] > before, "the reading client stopped receiving"
        assert "/reads" not in log.read_text()
        stuck.settimeout(10)
        while stuck.recv(1 << 20):  # what the kernel had buffered, then the end: the server closed it
            pass
        stuck.close()
        stop.set()
        t.join(5)
        reader.close()
        assert server.poll() is None
        out = (tmp_path / "server.log").read_text()
        assert "Traceback" not in out and "without completing response" not in out, out
    finally:
        server.terminate()
        server.wait(10)
