"""Conversation storage: sessions, turns, running summaries and token counts.

``ConversationStore`` is the interface the service uses; ``SQLiteConversationStore`` keeps it in
one SQLite file in the data directory, so a restart loses nothing. Another database (Postgres)
can replace it by implementing the same methods.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from chatbot.database import SQLiteFile

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
CREATE TABLE IF NOT EXISTS feedback (
    turn_id INTEGER PRIMARY KEY REFERENCES turns(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_session ON feedback(session_id);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    site TEXT,
    reason TEXT NOT NULL,
    contact TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    notifier TEXT NOT NULL DEFAULT 'queue',
    delivery TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    closed_at REAL
);
CREATE INDEX IF NOT EXISTS tickets_status ON tickets(status, id);
CREATE INDEX IF NOT EXISTS tickets_session ON tickets(session_id, id);
"""
# Columns added after the first release; an older database gets them at start-up.
ADDED_COLUMNS = {
    "sessions": {"site": "TEXT", "token_hash": "TEXT"},
}
RATINGS = ("up", "down")


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
    site: str | None = None
    token_hash: str | None = None


@dataclass(frozen=True)
class Feedback:
    turn_id: int
    session_id: str
    rating: str
    comment: str
    created_at: float


@dataclass(frozen=True)
class Ticket:
    """A hand-off to a person: the conversation is in the session it names."""

    id: int
    session_id: str
    site: str | None
    reason: str
    contact: dict
    status: str
    notifier: str
    delivery: str
    created_at: float
    closed_at: float | None

    @property
    def has_email(self) -> bool:
        """Whether the customer left an address the team can reply to."""
        return bool(self.contact.get("email"))


@dataclass(frozen=True)
class SessionSummary:
    """One conversation as the staff list shows it."""

    id: str
    channel: str
    site: str | None
    created_at: float
    updated_at: float
    first_message: str
    messages: int
    ups: int
    downs: int
    handoff: bool


@dataclass(frozen=True)
class SessionFilter:
    """Which conversations to list: all fields optional; ``text`` searches every message."""

    rating: str | None = None  # "up", "down" or "none" (no rating at all)
    handoff: bool | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    limit: int = 200
    offset: int = 0


@dataclass(frozen=True)
class StoredTurn:
    id: int
    session_id: str
    role: str
    content: str
    tokens: int
    created_at: float
    meta: dict


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return secrets.token_urlsafe(16)


# Session ids are ASCII (``new_session_id``); a longer one, or one with a broken character
# (which SQLite cannot even encode), names no session.
MAX_SESSION_ID_CHARS = 128


def _could_be_session_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_SESSION_ID_CHARS and value.isascii()


class ConversationStore(Protocol):
    def create_session(
        self,
        channel: str,
        *,
        site: str | None = None,
        token_hash: str | None = None,
        session_id: str | None = None,
    ) -> SessionRecord: ...

    def get_session(self, session_id: str) -> SessionRecord | None: ...

    def add_turn(
        self, session_id: str, role: str, content: str, tokens: int, meta: dict | None = None
    ) -> StoredTurn: ...

    def turns(self, session_id: str, after_id: int = 0) -> list[StoredTurn]: ...

    def delete_turn(self, session_id: str, turn_id: int) -> None: ...

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

    def set_feedback(
        self, session_id: str, turn_id: int, rating: str, comment: str
    ) -> Feedback: ...

    def feedback(self, session_id: str) -> dict[int, Feedback]: ...

    def create_ticket(
        self, session_id: str, site: str | None, reason: str, contact: dict, notifier: str
    ) -> Ticket: ...

    def open_ticket(self, session_id: str) -> Ticket | None: ...

    def list_sessions(self, where: SessionFilter) -> list[SessionSummary]: ...

    def count_sessions(self, where: SessionFilter) -> int: ...

    def get_ticket(self, ticket_id: int) -> Ticket | None: ...

    def tickets(
        self,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        session_id: str | None = None,
    ) -> list[Ticket]: ...

    def count_tickets(self, status: str | None = None) -> int: ...

    def update_ticket(
        self,
        ticket_id: int,
        *,
        status: str | None = None,
        delivery: str | None = None,
        contact: dict | None = None,
    ) -> Ticket | None: ...


class SQLiteConversationStore:
    """The default conversation store: one SQLite file, safe across threads and processes."""

    def __init__(self, path: Path):
        self._db = SQLiteFile(path, SCHEMA)
        self.path = self._db.path
        with self._db() as db:
            for table, columns in ADDED_COLUMNS.items():
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def create_session(
        self,
        channel: str,
        *,
        site: str | None = None,
        token_hash: str | None = None,
        session_id: str | None = None,
    ) -> SessionRecord:
        """A new session; ``session_id``: an id the caller drew with ``new_session_id``."""
        now = time.time()
        record = SessionRecord(
            session_id or new_session_id(), channel, now, now, site=site, token_hash=token_hash
        )
        with self._db() as db:
            db.execute(
                "INSERT INTO sessions(id, channel, created_at, updated_at, site, token_hash)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, channel, now, now, site, token_hash),
            )
        return record

    def get_session(self, session_id: str) -> SessionRecord | None:
        if not _could_be_session_id(session_id):
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT id, channel, created_at, updated_at, summary, summary_tokens, facts,"
                " summarised_upto, summaries, site, token_hash FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        return SessionRecord(*row[:6], json.loads(row[6]), *row[7:])

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

    def delete_turn(self, session_id: str, turn_id: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM turns WHERE id = ? AND session_id = ?", (turn_id, session_id))

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

    # ----- feedback
    def set_feedback(self, session_id: str, turn_id: int, rating: str, comment: str) -> Feedback:
        """Rate one answer of the session; a second rating of the same answer replaces the first."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {', '.join(RATINGS)}")
        now = time.time()
        with self._db() as db:
            found = db.execute(
                "SELECT 1 FROM turns WHERE id = ? AND session_id = ? AND role = 'assistant'",
                (turn_id, session_id),
            ).fetchone()
            if found is None:
                raise KeyError(turn_id)
            db.execute(
                "INSERT INTO feedback(turn_id, session_id, rating, comment, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(turn_id) DO UPDATE SET"
                " rating = excluded.rating, comment = excluded.comment,"
                " created_at = excluded.created_at",
                (turn_id, session_id, rating, comment, now),
            )
        return Feedback(turn_id, session_id, rating, comment, now)

    def feedback(self, session_id: str) -> dict[int, Feedback]:
        with self._db() as db:
            rows = db.execute(
                "SELECT turn_id, session_id, rating, comment, created_at FROM feedback"
                " WHERE session_id = ?",
                (session_id,),
            ).fetchall()
        return {row[0]: Feedback(*row) for row in rows}

    # ----- hand-off tickets
    _TICKET_COLUMNS = (
        "id, session_id, site, reason, contact, status, notifier, delivery, created_at, closed_at"
    )

    @staticmethod
    def _ticket(row) -> Ticket:
        return Ticket(*row[:4], json.loads(row[4]), *row[5:])

    def create_ticket(
        self, session_id: str, site: str | None, reason: str, contact: dict, notifier: str
    ) -> Ticket:
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO tickets(session_id, site, reason, contact, notifier, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, site, reason, json.dumps(contact), notifier, time.time()),
            )
            row = db.execute(
                f"SELECT {self._TICKET_COLUMNS} FROM tickets WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
        return self._ticket(row)

    def open_ticket(self, session_id: str) -> Ticket | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {self._TICKET_COLUMNS} FROM tickets"
                " WHERE session_id = ? AND status = 'open' ORDER BY id DESC LIMIT 1",
                (session_id,),
            ).fetchone()
        return self._ticket(row) if row else None

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {self._TICKET_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,)
            ).fetchone()
        return self._ticket(row) if row else None

    def tickets(
        self,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        session_id: str | None = None,
    ) -> list[Ticket]:
        """Newest first, ``limit`` of them after the first ``offset``; ``status`` 'open' or
        'done' and ``session_id`` filter."""
        conditions, args = [], []
        if status:
            conditions.append("status = ?")
            args.append(status)
        if session_id is not None:
            conditions.append("session_id = ?")
            args.append(session_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._db() as db:
            rows = db.execute(
                f"SELECT {self._TICKET_COLUMNS} FROM tickets {where}"
                " ORDER BY id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [self._ticket(row) for row in rows]

    def count_tickets(self, status: str | None = None) -> int:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._db() as db:
            return db.execute(f"SELECT COUNT(*) FROM tickets {where}", args).fetchone()[0]

    def update_ticket(
        self,
        ticket_id: int,
        *,
        status: str | None = None,
        delivery: str | None = None,
        contact: dict | None = None,
    ) -> Ticket | None:
        changes: dict[str, object] = {}
        if status is not None:
            changes["status"] = status
            changes["closed_at"] = time.time() if status == "done" else None
        if delivery is not None:
            changes["delivery"] = delivery
        if contact is not None:
            changes["contact"] = json.dumps(contact)
        if changes:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            with self._db() as db:
                db.execute(
                    f"UPDATE tickets SET {assignments} WHERE id = ?", (*changes.values(), ticket_id)
                )
        return self.get_ticket(ticket_id)

    # ----- transcripts
    def list_sessions(self, where: SessionFilter) -> list[SessionSummary]:
        """Conversations with at least one message or a hand-off, newest activity first:
        ``where.limit`` of them after the first ``where.offset``."""
        query, args = self._sessions_query(where)
        with self._db() as db:
            rows = db.execute(
                f"{query} ORDER BY s.updated_at DESC, s.id DESC LIMIT ? OFFSET ?",
                (*args, where.limit, where.offset),
            ).fetchall()
        return [SessionSummary(*row[:9], bool(row[9])) for row in rows]

    def count_sessions(self, where: SessionFilter) -> int:
        """How many conversations ``where`` matches, all pages together."""
        query, args = self._sessions_query(where)
        with self._db() as db:
            return db.execute(f"SELECT COUNT(*) FROM ({query})", args).fetchone()[0]

    @staticmethod
    def _sessions_query(where: SessionFilter) -> tuple[str, list]:
        # Conversations with a message, or a hand-off asked for before any (the widget's button).
        conditions, args = ["(n.messages > 0 OR n.handoff)"], []
        if where.rating == "up":
            conditions.append("n.ups > 0")
        elif where.rating == "down":
            conditions.append("n.downs > 0")
        elif where.rating == "none":
            conditions.append("n.ups = 0 AND n.downs = 0")
        if where.handoff is not None:
            conditions.append("n.handoff = ?")
            args.append(int(where.handoff))
        if where.since is not None:
            conditions.append("s.updated_at >= ?")
            args.append(where.since)
        if where.until is not None:
            conditions.append("s.created_at < ?")
            args.append(where.until)
        if where.text:
            # A message, a rating's comment, the name or email left with a hand-off, or the
            # conversation's id: whatever a customer who complains can tell staff.
            escaped = where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(
                "(EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.id"
                " AND t.content LIKE ? ESCAPE '\\')"
                " OR EXISTS (SELECT 1 FROM feedback f WHERE f.session_id = s.id"
                " AND f.comment LIKE ? ESCAPE '\\')"
                " OR EXISTS (SELECT 1 FROM tickets k WHERE k.session_id = s.id"
                " AND (json_extract(k.contact, '$.name') LIKE ? ESCAPE '\\'"
                " OR json_extract(k.contact, '$.email') LIKE ? ESCAPE '\\'))"
                " OR s.id = ?)"
            )
            args.extend([f"%{escaped}%"] * 4 + [where.text.strip()])
        query = f"""
            WITH n AS (
                SELECT s.id AS id,
                    (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS messages,
                    (SELECT COUNT(*) FROM feedback f WHERE f.session_id = s.id
                        AND f.rating = 'up') AS ups,
                    (SELECT COUNT(*) FROM feedback f WHERE f.session_id = s.id
                        AND f.rating = 'down') AS downs,
                    (EXISTS (SELECT 1 FROM tickets k WHERE k.session_id = s.id)
                     OR EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.id
                        AND json_extract(t.meta, '$.handoff') = 1)) AS handoff,
                    (SELECT content FROM turns t WHERE t.session_id = s.id AND t.role = 'user'
                        ORDER BY t.id LIMIT 1) AS first_message
                FROM sessions s
            )
            SELECT s.id, s.channel, s.site, s.created_at, s.updated_at,
                COALESCE(n.first_message, ''), n.messages, n.ups, n.downs, n.handoff
            FROM sessions s JOIN n ON n.id = s.id
            WHERE {" AND ".join(conditions)}
        """
        return query, args
