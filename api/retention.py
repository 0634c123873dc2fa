"""Scenario results expire (issue 11 item 4): a finished run's files are deleted PLIETSCH_SCENARIO_RESULT_TTL_H hours
after it ended, and the results together never take more than PLIETSCH_SCENARIO_DISK_MB (oldest deleted first).

Where results are kept, and how each is bounded:
- files under ``<data_dir>/scenarios/<run>/`` (the worker writes them): deleted by the sweep, leaving ``expired.json``
  (why and when) so the API answers 410 Gone with the reason; that marker goes too once the run has been expired for
  another TTL;
- the read model's record per scenario (from the compacted ``scenario.results`` topic): its summary is dropped when the
  files go, the record itself once the marker goes (records that old are not taken in again after a restart);
- the owner rows in ``auth.sqlite3``: deleted with the record.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("plietsch.api.retention")
FINISHED = ("completed", "failed", "cancelled")
MARK = "expired.json"
UNSEEN = timedelta(minutes=10)  # a folder no record names yet (a run just starting) is left alone this long


def finished_at(rec: Mapping[str, Any]) -> datetime | None:
    """When a finished run ended (its last progress event); None while it runs."""
    if rec.get("status") not in FINISHED:
        return None
    at = rec.get("occurred_at")
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if not isinstance(at, datetime):
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name != MARK:
            child.unlink(missing_ok=True)


@dataclass
class Swept:
    expired: list[tuple[str, str]]  # (run folder, "ttl" | "disk") whose files were deleted now
    forgotten: list[str]  # scenario ids whose record and marker go now
    bytes_before: int
    bytes_after: int


class Retention:
    def __init__(self, data_dir: Path, ttl_h: float, disk_mb: float) -> None:
        self.root = data_dir / "scenarios"
        self.ttl_h, self.disk_mb = ttl_h, disk_mb
        self.ttl = timedelta(hours=ttl_h)
        self.cap = int(disk_mb * 1024 * 1024)

    def folder(self, sid: str) -> Path:
        return self.root / sid.split(":")[-1]

    def expires_at(self, rec: Mapping[str, Any]) -> datetime | None:
        end = finished_at(rec)
        return None if end is None else end + self.ttl

    def forget_before(self, now: datetime) -> datetime:
        """Records of runs that ended before this are dropped (the marker has been shown for a TTL)."""
        return now - 2 * self.ttl

    def expired(self, sid: str, rec: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any] | None:
        """Why the results of *sid* are gone (reason, when, the setting, a message in German and English), or None."""
        now = now or datetime.now(UTC)
        mark = self.folder(sid) / MARK
        if mark.is_file():
            try:
                info = json.loads(mark.read_text())
            except (OSError, ValueError):
                info = {"reason": "ttl", "at": None}
        else:
            until = self.expires_at(rec)
            if until is None or now < until:
                return None
            info = {"reason": "ttl", "at": until.isoformat()}
        return {**info, **self._words(sid, info["reason"], info.get("at"))}

    def _words(self, sid: str, reason: str, at: str | None) -> dict[str, str]:
        if reason == "disk":
            return {"setting": "PLIETSCH_SCENARIO_DISK_MB", "message": (
                f"Die Ergebnisse von {sid} wurden am {at} gelöscht: der Platz für Szenario-Ergebnisse "
                f"({self.disk_mb:g} MB, PLIETSCH_SCENARIO_DISK_MB) war voll, die ältesten gehen zuerst. Bitte neu rechnen. / "
                f"The results of {sid} were deleted at {at}: the disk space for scenario results ({self.disk_mb:g} MB, "
                "PLIETSCH_SCENARIO_DISK_MB) was full, oldest first. Run the scenario again.")}
        return {"setting": "PLIETSCH_SCENARIO_RESULT_TTL_H", "message": (
            f"Die Ergebnisse von {sid} sind seit {at} abgelaufen: sie werden {self.ttl_h:g} h nach dem Ende des Laufs "
            f"gelöscht (PLIETSCH_SCENARIO_RESULT_TTL_H). Bitte neu rechnen. / The results of {sid} expired at {at}: "
            f"results are deleted {self.ttl_h:g} h after the run ended (PLIETSCH_SCENARIO_RESULT_TTL_H). "
            "Run the scenario again.")}

    def _mark(self, path: Path, reason: str, at: datetime) -> None:
        _empty(path)
        (path / MARK).write_text(json.dumps({"reason": reason, "at": at.isoformat()}), encoding="utf-8")

    def sweep(self, records: Mapping[str, Mapping[str, Any]], now: datetime | None = None) -> Swept:
        """One pass over the results folder: expire by age, forget what expired a TTL ago, then delete the oldest
        finished runs' files until the rest fits the disk cap. Runs still going are never touched."""
        now = now or datetime.now(UTC)
        by_folder = {self.folder(sid).name: (sid, rec) for sid, rec in records.items()}
        forgotten = [sid for sid, rec in records.items()
                     if (end := finished_at(rec)) is not None and end < self.forget_before(now)]
        if not self.root.is_dir():
            return Swept([], forgotten, 0, 0)
        expired: list[tuple[str, str]] = []
        live: list[tuple[datetime, Path, int]] = []  # deletable runs' files: (age key, folder, bytes)
        total = 0
        for path in sorted(p for p in self.root.iterdir() if p.is_dir()):
            sid, rec = by_folder.get(path.name, (None, None))
            end = None if rec is None else finished_at(rec)
            marked = (path / MARK).is_file()
            if rec is None:  # a run no record names: one just starting, or one whose record was forgotten
                mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                if mtime < now - self.ttl:  # written (or marked) more than a TTL ago: nobody can see it any more
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                if marked or mtime > now - UNSEEN:
                    total += _size(path)
                    continue
                end = mtime
            elif sid in forgotten:
                shutil.rmtree(path, ignore_errors=True)
                continue
            size = _size(path)
            if end is not None and not marked and end + self.ttl <= now:
                self._mark(path, "ttl", end + self.ttl)
                expired.append((path.name, "ttl"))
                size = _size(path)
            elif end is not None and not marked:
                live.append((end, path, size))
            total += size
        before = total
        for _end, path, size in sorted(live, key=lambda t: (t[0], t[1].name)):
            if total <= self.cap:
                break
            self._mark(path, "disk", now)
            expired.append((path.name, "disk"))
            total -= size - _size(path)
        return Swept(expired, forgotten, before, total)


class Sweeper:
    """Runs *sweep* now and every *every_s* seconds in a thread named *name*, until stopped; a failing pass is logged
    (as *what* failed) and retried."""

    def __init__(self, sweep: Callable[[], Any], every_s: float, name: str = "scenario-retention",
                 what: str = "the scenario results sweep") -> None:
        self.sweep, self.every_s, self.what = sweep, every_s, what
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sweep()
            except Exception:  # the API keeps running; the next pass tries again
                log.exception("%s failed; trying again in %.0f s", self.what, self.every_s)
            self.passes += 1
            self._stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))
