"""The worker keeps its files under the data folder: Faust's own folder (made at start for on-disk tables) was
"<app id>-data" in the directory the worker started from, and the suite and the benchmarks left dozens of them in the
checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app import create_app
from streams.settings import StreamSettings


def test_fausts_folder_is_under_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # built, not started: nothing connects
    app = create_app(StreamSettings(data_dir=tmp_path / "data", app_id="plietsch-files-test"))
    assert Path(app.conf.datadir) == tmp_path / "data" / "faust" / "plietsch-files-test"
    assert Path(app.conf.tabledir).is_relative_to(tmp_path / "data")
    app.conf.datadir.mkdir(exist_ok=True)  # what Faust does at its first start, without parents
