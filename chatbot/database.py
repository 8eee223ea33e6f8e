"""The app's SQLite file (conversations, feedback, tickets, users, audit log), shared by threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SQLiteFile:
    """``with db() as connection:`` runs one transaction on this thread's own connection.

    Connections are kept per thread and reused: opening SQLite per call costs more than the
    query. WAL lets readers go on while one writer writes; foreign keys are switched on.
    """

    def __init__(self, path: Path, schema: str = ""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        if schema:
            with self() as db:
                db.executescript(schema)

    @contextmanager
    def __call__(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        with db:
            yield db
