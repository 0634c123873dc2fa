"""Users, API keys, sessions and scenario owners in one SQLite file under the data dir (several API processes share it).

A change that is audited (a user or key created or deleted, a scenario shared) writes its audit event into the table
``audit_outbox`` in the same SQLite transaction as the change itself: both are kept or neither is. The API's relay
(``api.audit.Relay``) hands the outbox to Kafka and deletes what Kafka took; an event sent twice (a crash between
Kafka's acknowledgement and the delete, or two API processes relaying at once) is one entry to ``GET /audit``, which
reads each event id once.

Passwords are stored as argon2id hashes; API keys and session ids are random 256-bit secrets stored as SHA-256 hashes
(a high-entropy secret needs no slow hash), so a copy of the file lets nobody log in."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("planner", "operator")
NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
KEY_PREFIX = "pk_"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
                                     created_by TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id_hash TEXT PRIMARY KEY, subject TEXT NOT NULL, role TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scenario_owners (sid TEXT PRIMARY KEY, owner TEXT NOT NULL, shared INTEGER NOT NULL DEFAULT 0,
                                            created_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS audit_outbox (event_id TEXT PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL,
                                         created_at REAL NOT NULL);
"""


class AuthError(ValueError):
    """A request to the store that cannot be done (bad name, unknown role, duplicate user); the message says why."""


@dataclass(frozen=True)
class Outgoing:
    """An encoded audit event, to be written with the change it records."""
    event_id: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Identity:
    subject: str  # user name, "key:<id>" or the token's subject
    role: str


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"role {role!r} is unknown; roles are {', '.join(ROLES)}")
    return role


class AuthStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self.hasher = PasswordHasher()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _audit(db: sqlite3.Connection, audit: Outgoing | None) -> None:
        if audit is not None:
            db.execute("INSERT INTO audit_outbox VALUES (?, ?, ?, ?)", (audit.event_id, audit.key, audit.value, time.time()))

    # the audit outbox --------------------------------------------------------------------------------------------
    def outbox(self, limit: int = 500) -> list[Outgoing]:
        rows = self._db().execute("SELECT event_id, key, value FROM audit_outbox ORDER BY created_at LIMIT ?", (limit,))
        return [Outgoing(e, k, v) for e, k, v in rows.fetchall()]

    def enqueue(self, audit: Outgoing) -> None:
        """An audit event of an action outside this store (results deleted by the retention sweep), kept until sent."""
        with self._tx() as db:
            self._audit(db, audit)

    def sent(self, event_ids: list[str]) -> None:
        self._db().executemany("DELETE FROM audit_outbox WHERE event_id = ?", [(e,) for e in event_ids])

    def outbox_state(self) -> tuple[int, float | None]:
        """(events waiting, the oldest one's age in seconds)."""
        n, oldest = self._db().execute("SELECT count(*), min(created_at) FROM audit_outbox").fetchone()
        return int(n), None if oldest is None else time.time() - oldest

    # users -------------------------------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str | None = None, audit: Outgoing | None = None) -> str:
        """Creates a user; returns the password (a generated one when none is given)."""
        if not NAME.match(name):
            raise AuthError(f"user name {name!r} must be 1-64 characters a-z 0-9 . _ @ - (lower case)")
        check_role(role)
        password = password or secrets.token_urlsafe(15)
        if len(password) < 12:
            raise AuthError("a password needs at least 12 characters")
        hashed = self.hasher.hash(password)  # slow: outside the write lock
        try:
            with self._tx() as db:
                db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, hashed, time.time()))
                self._audit(db, audit)
        except sqlite3.IntegrityError:
            raise AuthError(f"user {name!r} exists already") from None
        return password

    def users(self) -> list[dict[str, object]]:
        rows = self._db().execute("SELECT name, role, created_at FROM users ORDER BY name").fetchall()
        return [{"name": n, "role": r, "created_at": c} for n, r, c in rows]

    def delete_user(self, name: str, audit: Outgoing | None = None) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE subject = ?", (name,))
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                return False
            self._audit(db, audit)
        return True

    def check_password(self, name: str, password: str) -> Identity | None:
        row = self._db().execute("SELECT role, pw_hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            self.hasher.hash(password)  # the same work as for a real user: no timing hint which names exist
            return None
        try:
            self.hasher.verify(row[1], password)
        except (VerificationError, InvalidHashError):
            return None
        return Identity(name, row[0])

    def ensure_first_operator(self, name: str = "operator") -> tuple[str, str] | None:
        """On a store without any operator, creates one (*name*, or *name*-xxxx when a user of that name exists: never
        promotes someone) and returns (name, one-time password); else None."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM users WHERE role = 'operator' LIMIT 1").fetchone():
                db.execute("COMMIT")
                return None
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                name = f"{name}-{secrets.token_hex(2)}"
            password = secrets.token_urlsafe(15)
            db.execute("INSERT INTO users VALUES (?, 'operator', ?, ?)", (name, self.hasher.hash(password), time.time()))
            db.execute("COMMIT")
            return name, password
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # API keys ----------------------------------------------------------------------------------------------------
    @staticmethod
    def new_key_id() -> str:
        return secrets.token_hex(4)

    def add_key(self, name: str, role: str, created_by: str, kid: str | None = None,
                audit: Outgoing | None = None) -> tuple[str, str]:
        """Creates an API key (of id *kid*, a new one when not given); returns (id, secret). The secret is shown once and
        stored only as a hash."""
        check_role(role)
        if not name or len(name) > 100:
            raise AuthError("a key needs a name of 1-100 characters (what machine uses it)")
        kid = kid or self.new_key_id()
        secret = f"{KEY_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
        with self._tx() as db:
            db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)", (kid, name, role, _sha(secret), created_by, time.time()))
            self._audit(db, audit)
        return kid, secret

    def ensure_key(self, kid: str, secret: str, role: str) -> None:
        """Registers a key given from outside (an environment secret) under *kid*, replacing an older one of that id."""
        check_role(role)
        if len(secret) < 32:
            raise AuthError(f"the API key given for {kid!r} has {len(secret)} characters; use at least 32 random ones")
        self._db().execute("INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?, ?, 'environment', ?)",
                           (kid, f"from the environment ({kid})", role, _sha(secret), time.time()))

    def keys(self) -> list[dict[str, object]]:
        rows = self._db().execute("SELECT id, name, role, created_by, created_at FROM api_keys ORDER BY created_at").fetchall()
        return [{"id": i, "name": n, "role": r, "created_by": b, "created_at": c} for i, n, r, b, c in rows]

    def delete_key(self, kid: str, audit: Outgoing | None = None) -> bool:
        with self._tx() as db:
            if db.execute("DELETE FROM api_keys WHERE id = ?", (kid,)).rowcount == 0:
                return False
            self._audit(db, audit)
        return True

    def check_key(self, secret: str) -> Identity | None:
        row = self._db().execute("SELECT id, role FROM api_keys WHERE key_hash = ?", (_sha(secret),)).fetchone()
        return Identity(f"key:{row[0]}", row[1]) if row else None

    # sessions ----------------------------------------------------------------------------------------------------
    def new_session(self, who: Identity, ttl_s: float) -> str:
        sid = secrets.token_urlsafe(32)
        db = self._db()
        db.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
        db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_sha(sid), who.subject, who.role, time.time() + ttl_s))
        return sid

    def check_session(self, sid: str) -> Identity | None:
        row = self._db().execute("SELECT subject, role, expires_at FROM sessions WHERE id_hash = ?", (_sha(sid),)).fetchone()
        if row is None or row[2] < time.time():
            return None
        return Identity(row[0], row[1])

    def end_session(self, sid: str) -> None:
        self._db().execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))

    # scenario owners ---------------------------------------------------------------------------------------------
    def own_scenario(self, sid: str, owner: str) -> None:
        self._db().execute("INSERT OR IGNORE INTO scenario_owners VALUES (?, ?, 0, ?)", (sid, owner, time.time()))

    def share_scenario(self, sid: str, audit: Outgoing | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE scenario_owners SET shared = 1 WHERE sid = ?", (sid,))
            self._audit(db, audit)

    def scenario_owner(self, sid: str) -> tuple[str, bool] | None:
        row = self._db().execute("SELECT owner, shared FROM scenario_owners WHERE sid = ?", (sid,)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def owned_since(self, owner: str, since: float) -> list[tuple[str, float]]:
        """(scenario id, created at) of *owner*'s scenarios asked for after *since* (epoch seconds)."""
        rows = self._db().execute("SELECT sid, created_at FROM scenario_owners WHERE owner = ? AND created_at >= ?", (owner, since))
        return [(sid, at) for sid, at in rows]

    def forget_scenarios(self, sids: list[str]) -> None:
        """Drops the owner rows of runs whose results are gone for good (api/retention.py)."""
        self._db().executemany("DELETE FROM scenario_owners WHERE sid = ?", [(s,) for s in sids])

    def forget_scenarios_before(self, before: float, keep: set[str]) -> None:
        """Drops owner rows made before *before* (epoch seconds) of runs not in *keep* (runs whose record is gone)."""
        db = self._db()
        old = [s for (s,) in db.execute("SELECT sid FROM scenario_owners WHERE created_at < ?", (before,)) if s not in keep]
        self.forget_scenarios(old)

    def scenario_owners(self) -> dict[str, tuple[str, bool]]:
        return {s: (o, bool(sh)) for s, o, sh in self._db().execute("SELECT sid, owner, shared FROM scenario_owners")}
