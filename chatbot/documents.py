"""Content owners' changes to the knowledge documents: ingesting uploaded files one by one,
duplicates, who added or replaced each document, and the audit log of every change.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from chatbot.database import SQLiteFile
from chatbot.service import ChatService
from chatbot.users import UserDirectory
from knowledge.ingest import FileOutcome, ingest_file
from knowledge.loaders import LoadLimits
from knowledge.store import DocumentRecord, StoredChunk

UPLOADERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS document_uploaders (
    source TEXT PRIMARY KEY,
    uploader TEXT NOT NULL
);
"""

UploadStatus = Literal["added", "updated", "unchanged", "duplicate", "failed"]


@dataclass
class ReceivedFile:
    """One uploaded file: where it was written, or why it was refused on arrival."""

    name: str
    path: Path | None = None
    size: int = 0
    refusal: str | None = None


@dataclass(frozen=True)
class LibraryDocument:
    """A live document and who added or last replaced it (None if it came by the command line)."""

    record: DocumentRecord
    uploader: str | None


@dataclass(frozen=True)
class DocumentPreview:
    """A live document with its chunks, in document order."""

    document: LibraryDocument
    chunks: list[StoredChunk]


@dataclass(frozen=True)
class UploadResult:
    """What became of one uploaded file.

    ``document`` is the document now live under its name; for a duplicate, the document that
    already has this content.
    """

    file: str
    status: UploadStatus
    reason: str | None = None
    document: LibraryDocument | None = None


class DocumentLibrary:
    """Content owners' changes to the knowledge store, each one audited; thread-safe.

    Changes are made one at a time, so that two uploads of the same content cannot both pass
    the duplicate check.
    """

    def __init__(self, service: ChatService, users: UserDirectory):
        self.service = service
        self.store = service.store
        self.users = users
        self._lock = threading.Lock()
        self._db = SQLiteFile(users.path, UPLOADERS_SCHEMA)

    def _uploaders(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT source, uploader FROM document_uploaders").fetchall())

    def _uploader(self, source: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT uploader FROM document_uploaders WHERE source = ?", (source,)
            ).fetchone()
        return row[0] if row else None

    def documents(self) -> list[LibraryDocument]:
        uploaders = self._uploaders()
        return [LibraryDocument(r, uploaders.get(r.source)) for r in self.store.documents()]

    def find(self, doc_id: str) -> DocumentRecord | None:
        return self.store.get_document_by_id(doc_id)

    def preview(self, record: DocumentRecord) -> DocumentPreview:
        document = LibraryDocument(record, self._uploader(record.source))
        return DocumentPreview(document, self.store.document_chunks(record.source))

    def add(self, files: list[ReceivedFile], actor: str) -> list[UploadResult]:
        """Ingest each file under its own name; new content for a known name replaces it."""
        results = []
        for received in files:
            if received.path is None:
                results.append(UploadResult(received.name, "failed", received.refusal))
                continue
            with self._lock:
                outcome = self._ingest(received.path, received.path.name)
                results.append(self._settle(received.name, outcome, actor))
        return results

    def replace(self, doc_id: str, received: ReceivedFile, actor: str) -> UploadResult | None:
        """A new version of the document ``doc_id`` from ``received``; None if there is none."""
        with self._lock:
            record = self.find(doc_id)
            if record is None:
                return None
            if received.path is None:
                return UploadResult(received.name, "failed", received.refusal)
            kind = PurePosixPath(record.source).suffix.lower()
            if received.path.suffix.lower() != kind:
                reason = f"a new version of '{record.source}' must be a {kind} file too"
                return UploadResult(received.name, "failed", reason)
            # Loaded under the document's own file name, so that a title taken from the file
            # name stays the same.
            version = Path(tempfile.mkdtemp(dir=received.path.parent))
            path = received.path.rename(version / PurePosixPath(record.source).name)
            return self._settle(received.name, self._ingest(path, record.source), actor)

    def delete(self, doc_id: str, actor: str) -> DocumentRecord | None:
        with self._lock:
            record = self.find(doc_id)
            if record is None or not self.store.delete_document(record.source):
                return None
            with self._db() as db:
                db.execute("DELETE FROM document_uploaders WHERE source = ?", (record.source,))
        self.users.audit(actor, "document.delete", record.source, _audit_detail(record))
        return record

    def _ingest(self, path: Path, source: str) -> FileOutcome:
        cfg = self.service.settings.retrieval
        return ingest_file(
            self.store,
            path,
            source,
            chunk_size=cfg.chunk_size,
            chunk_overlap=cfg.chunk_overlap,
            limits=LoadLimits(cfg.max_file_bytes, cfg.max_pdf_pages),
            snippets=False,
        )

    def _settle(self, name: str, outcome: FileOutcome, actor: str) -> UploadResult:
        """Record who made a change, and turn the outcome into the caller's result."""
        match outcome.status:
            case "added" | "updated":
                assert outcome.record is not None
                self._set_uploader(outcome.source, actor)
                action = "document.add" if outcome.status == "added" else "document.replace"
                self.users.audit(actor, action, outcome.source, _audit_detail(outcome.record))
                return UploadResult(
                    name, outcome.status, document=LibraryDocument(outcome.record, actor)
                )
            case "unchanged":
                assert outcome.record is not None
                uploader = self._uploader(outcome.source)
                return UploadResult(
                    name, "unchanged", document=LibraryDocument(outcome.record, uploader)
                )
            case "duplicate":
                assert outcome.twin is not None
                uploader = self._uploader(outcome.twin.source)
                twin = LibraryDocument(outcome.twin, uploader)
                return UploadResult(name, "duplicate", outcome.reason, twin)
            case _:
                return UploadResult(name, "failed", outcome.reason)

    def _set_uploader(self, source: str, actor: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO document_uploaders(source, uploader) VALUES (?, ?)"
                " ON CONFLICT(source) DO UPDATE SET uploader = excluded.uploader",
                (source, actor),
            )


def _audit_detail(record: DocumentRecord) -> dict:
    return {"chunks": record.chunk_count, "size": record.size_bytes}
