"""Content owners' changes to the knowledge documents: ingesting uploaded files one by one,
duplicates, who added or replaced each document, and the audit log of every change.

One library manages one knowledge collection (the default one, or a site's own).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from chatbot.database import SQLiteFile
from chatbot.service import ChatService
from chatbot.users import UserDirectory
from knowledge.ingest import FileOutcome, ingest_file, progress_for
from knowledge.loaders import DocumentError, LoadLimits, file_kind, suffixes_of_kind
from knowledge.store import DocumentRecord, StoredChunk

log = logging.getLogger(__name__)

UPLOADERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS document_uploaders (
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    uploader TEXT NOT NULL,
    PRIMARY KEY (collection, source)
)
"""

UploadStatus = Literal["added", "updated", "unchanged", "duplicate", "failed"]
# progress(file name as uploaded, stage, done, total): see ingest_file.
IndexProgress = Callable[[str, str, int, int], None]


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
    """Content owners' changes to one knowledge collection, each one audited; thread-safe.

    Changes are written one at a time, so that two uploads of the same content cannot both pass
    the duplicate check; a file is read and embedded before its turn, so that a delete or a
    small upload does not wait for a large file's embedding. Keep one library per collection
    (see ``DocumentLibraries``).
    """

    def __init__(self, service: ChatService, users: UserDirectory, collection: str | None = None):
        self.service = service
        self.collection = collection or service.store.collection
        # The collection's retriever and the store it searches, so a change is seen by the next
        # answer and its indexes can be rebuilt here.
        self.retriever = service.retriever_for(self.collection)
        self.store = self.retriever.store
        self.users = users
        self._lock = threading.Lock()
        self._db = uploaders_database(users.path, service.store.collection)

    def _uploaders(self) -> dict[str, str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT source, uploader FROM document_uploaders WHERE collection = ?",
                (self.collection,),
            ).fetchall()
        return dict(rows)

    def _uploader(self, source: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT uploader FROM document_uploaders WHERE collection = ? AND source = ?",
                (self.collection, source),
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

    def add(
        self, files: list[ReceivedFile], actor: str, progress: IndexProgress | None = None
    ) -> list[UploadResult]:
        """Ingest each file under its own name; new content for a known name replaces it.

        ``progress(name, stage, done, total)`` hears how the indexing of each file goes (see
        ``ingest_file``)."""
        results = []
        for received in files:
            if received.path is None:
                results.append(UploadResult(received.name, "failed", received.refusal))
                continue
            # Read and embedded without the lock (a large file takes a minute), so that other
            # changes wait only for its write.
            outcome = self._ingest(
                received.path, received.name, self._lock, progress_for(progress, received.name)
            )
            with self._lock:
                results.append(self._settle(received.name, outcome, actor))
        self._refresh_search(results)
        return results

    def _refresh_search(self, results: list[UploadResult]) -> None:
        """After a change, rebuild the search indexes here rather than on a customer's question."""
        if any(r.status in ("added", "updated") for r in results):
            self._refresh()

    def _refresh(self) -> None:
        # The change itself is done; if the build fails here, the next question builds them.
        try:
            self.retriever.refresh()
        except Exception:
            log.exception("rebuilding the search indexes of '%s' failed", self.collection)

    def replace(
        self,
        doc_id: str,
        received: ReceivedFile,
        actor: str,
        progress: IndexProgress | None = None,
    ) -> UploadResult | None:
        """A new version of the document ``doc_id`` from ``received``; None if there is none."""
        record = self.find(doc_id)
        if record is None:
            return None
        if received.path is None:
            return UploadResult(received.name, "failed", received.refusal)
        if file_kind(received.path.name) != file_kind(record.source):
            kinds = " or ".join(suffixes_of_kind(record.source))
            reason = f"a new version of '{record.source}' must be a {kinds} file too"
            return UploadResult(received.name, "failed", reason)
        # Loaded under the document's own file name, so that a title taken from the file
        # name stays the same.
        version = Path(tempfile.mkdtemp(dir=received.path.parent))
        path = received.path.rename(version / PurePosixPath(record.source).name)
        outcome = self._ingest(
            path, record.source, self._still_there(record), progress_for(progress, received.name)
        )
        with self._lock:
            result = self._settle(received.name, outcome, actor)
        self._refresh_search([result])
        return result

    @contextmanager
    def _still_there(self, record: DocumentRecord) -> Iterator[None]:
        """The lock, for writing a new version of ``record``: refused if it was deleted while
        the new version was read and embedded (the delete is not undone)."""
        with self._lock:
            if self.find(record.doc_id) is None:
                raise DocumentError(
                    record.source, "the document was deleted while its new version was indexed"
                )
            yield

    def delete(self, doc_id: str, actor: str) -> DocumentRecord | None:
        with self._lock:
            record = self.find(doc_id)
            if record is None or not self.store.delete_document(record.source):
                return None
            with self._db() as db:
                db.execute(
                    "DELETE FROM document_uploaders WHERE collection = ? AND source = ?",
                    (self.collection, record.source),
                )
        self.users.audit(actor, "document.delete", record.source, self._audit_detail(record))
        self._refresh()
        return record

    def _ingest(
        self, path: Path, source: str, guard, progress: Callable[[str, int, int], None] | None
    ) -> FileOutcome:
        """``guard`` is held while the store is checked and written (not while the file is
        read and embedded)."""
        cfg = self.service.settings.retrieval
        return ingest_file(
            self.store,
            path,
            source,
            chunk_size=cfg.chunk_size,
            chunk_overlap=cfg.chunk_overlap,
            limits=LoadLimits(cfg.max_file_bytes, cfg.max_pdf_pages),
            snippets=False,
            guard=guard,
            progress=progress,
        )

    def _settle(self, name: str, outcome: FileOutcome, actor: str) -> UploadResult:
        """Record who made a change, and turn the outcome into the caller's result."""
        match outcome.status:
            case "added" | "updated":
                assert outcome.record is not None
                # (Unless it was deleted between its write and now: no uploader for it then.)
                if self.store.get_document(outcome.source) is not None:
                    self._set_uploader(outcome.source, actor)
                action = "document.add" if outcome.status == "added" else "document.replace"
                self.users.audit(actor, action, outcome.source, self._audit_detail(outcome.record))
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

    def record_outside_changes(
        self, added: list[str], updated: list[str], actor: str, removed: Sequence[str] = ()
    ) -> None:
        """Changes made without the library (``chatbot ingest``): those documents have no
        uploader any more (it is the command line's version that is live, or none), and the
        audit log records them under ``actor``."""
        changed = [*added, *updated, *removed]
        if not changed:
            return
        with self._lock:
            with self._db() as db:
                db.executemany(
                    "DELETE FROM document_uploaders WHERE collection = ? AND source = ?",
                    [(self.collection, source) for source in changed],
                )
            records = {r.source: r for r in self.store.documents()}
            for action, sources in (
                ("document.add", added),
                ("document.replace", updated),
                ("document.delete", removed),
            ):
                for source in sources:
                    record = records.get(source)
                    detail = (
                        self._audit_detail(record) if record else {"collection": self.collection}
                    )
                    self.users.audit(actor, action, source, detail)

    def _set_uploader(self, source: str, actor: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO document_uploaders(collection, source, uploader) VALUES (?, ?, ?)"
                " ON CONFLICT(collection, source) DO UPDATE SET uploader = excluded.uploader",
                (self.collection, source, actor),
            )

    def _audit_detail(self, record: DocumentRecord) -> dict:
        return {
            "collection": self.collection,
            "chunks": record.chunk_count,
            "size": record.size_bytes,
        }


class DocumentLibraries:
    """One ``DocumentLibrary`` per configured knowledge collection, made when first used."""

    def __init__(self, service: ChatService, users: UserDirectory):
        self.service = service
        self.users = users
        self._libraries: dict[str, DocumentLibrary] = {}
        self._lock = threading.Lock()

    @property
    def default(self) -> str:
        return self.service.store.collection

    def names(self) -> list[str]:
        return self.service.settings.collections()

    def sites_using(self) -> dict[str, list[str]]:
        """Each collection's sites by name (a site without its own uses the default one)."""
        using: dict[str, list[str]] = {name: [] for name in self.names()}
        for site in self.service.settings.sites:
            using.setdefault(site.collection or self.default, []).append(site.name)
        return using

    def get(self, collection: str | None = None) -> DocumentLibrary:
        """The library of ``collection`` (empty: the default one); UnknownCollection if no
        setting names it."""
        name = self.service.settings.known_collection(collection)
        with self._lock:
            if name not in self._libraries:
                self._libraries[name] = DocumentLibrary(self.service, self.users, name)
            return self._libraries[name]


def uploaders_database(path: Path, default_collection: str) -> SQLiteFile:
    """The app database with the uploaders table. A table from before collections (one
    uploader per source) is moved over in the same transaction: its documents are in
    ``default_collection``."""
    db = SQLiteFile(path)
    with db() as connection:
        # Table changes do not open a transaction by themselves: take the write lock first, so
        # that a crash or a second process never sees the table half moved.
        connection.execute("BEGIN IMMEDIATE")
        columns = {row[1] for row in connection.execute("PRAGMA table_info(document_uploaders)")}
        if columns and "collection" not in columns:
            connection.execute("ALTER TABLE document_uploaders RENAME TO document_uploaders_old")
            connection.execute(UPLOADERS_SCHEMA)
            connection.execute(
                "INSERT INTO document_uploaders(collection, source, uploader)"
                " SELECT ?, source, uploader FROM document_uploaders_old",
                (default_collection,),
            )
            connection.execute("DROP TABLE document_uploaders_old")
        else:
            connection.execute(UPLOADERS_SCHEMA)
    return db
