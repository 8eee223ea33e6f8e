"""Conversation storage: sessions, turns, running summaries and token counts.

``ConversationStore`` is the interface the service uses; ``SQLiteConversationStore`` keeps it in
one SQLite file in the data directory, so a restart loses nothing. Another database (Postgres)
can replace it by implementing the same methods.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    summary_tokens INTEGER NOT NULL DEFAULT 0,
    facts TEXT NOT NULL DEFAULT '[]',
    summarised_upto INTEGER NOT NULL DEFAULT 0,
    summaries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    created_at REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS turns_session ON turns(session_id, id);
"""


@dataclass
class SessionRecord:
    id: str
    channel: str
    created_at: float
    updated_at: float
    summary: str = ""
    summary_tokens: int = 0
    facts: list[str] = field(default_factory=list)
    summarised_upto: int = 0
    summaries: int = 0


@dataclass(frozen=True)
class StoredTurn:
    id: int
    session_id: str
    role: str
    content: str
    tokens: int
    created_at: float
    meta: dict


class ConversationStore(Protocol):
    def create_session(self, channel: str) -> SessionRecord: ...

    def get_session(self, session_id: str) -> SessionRecord | None: ...

    def add_turn(
        self, session_id: str, role: str, content: str, tokens: int, meta: dict | None = None
    ) -> StoredTurn: ...

    def turns(self, session_id: str, after_id: int = 0) -> list[StoredTurn]: ...

    def save_summary(
        self,
        session_id: str,
        summary: str,
        tokens: int,
        facts: list[str],
        upto_turn_id: int,
        *,
        made: bool = True,
    ) -> None: ...


class SQLiteConversationStore:
    """The default conversation store: one SQLite file, safe across threads and processes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # One connection per thread, reused: opening SQLite per call costs more than the query.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        with db:
            yield db

    def create_session(self, channel: str) -> SessionRecord:
        now = time.time()
        record = SessionRecord(secrets.token_urlsafe(16), channel, now, now)
        with self._db() as db:
            db.execute(
                "INSERT INTO sessions(id, channel, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (record.id, channel, now, now),
            )
        return record

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._db() as db:
            row = db.execute(
                "SELECT id, channel, created_at, updated_at, summary, summary_tokens, facts,"
                " summarised_upto, summaries FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        return SessionRecord(*row[:6], json.loads(row[6]), row[7], row[8])

    def add_turn(
        self, session_id: str, role: str, content: str, tokens: int, meta: dict | None = None
    ) -> StoredTurn:
        now = time.time()
        meta = meta or {}
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO turns(session_id, role, content, tokens, created_at, meta)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, role, content, tokens, now, json.dumps(meta)),
            )
            db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
        return StoredTurn(int(cursor.lastrowid or 0), session_id, role, content, tokens, now, meta)

    def turns(self, session_id: str, after_id: int = 0) -> list[StoredTurn]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, session_id, role, content, tokens, created_at, meta FROM turns"
                " WHERE session_id = ? AND id > ? ORDER BY id",
                (session_id, after_id),
            ).fetchall()
        return [StoredTurn(*row[:6], json.loads(row[6])) for row in rows]

    def save_summary(
        self,
        session_id: str,
        summary: str,
        tokens: int,
        facts: list[str],
        upto_turn_id: int,
        *,
        made: bool = True,
    ) -> None:
        """Store the running summary; ``made`` false means older turns were only dropped."""
        with self._db() as db:
            db.execute(
                "UPDATE sessions SET summary = ?, summary_tokens = ?, facts = ?,"
                " summarised_upto = ?, summaries = summaries + ? WHERE id = ?",
                (summary, tokens, json.dumps(facts), upto_turn_id, int(made), session_id),
            )
