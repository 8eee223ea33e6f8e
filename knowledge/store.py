"""The knowledge store: vectors in Chroma, and a SQLite manifest of which document versions are live.

Two Chroma collections: one holds the chunks, the other one vector per document, its title, which
helps a question find the article that is about it rather than one that mentions it.

A document version becomes visible only when its manifest row is committed, after all of its chunks
are in Chroma; the previous version's chunks are deleted afterwards. Readers filter chunks by the
manifest, so a search never sees half of a new version or a mix of two versions, and chunks left
behind by a crash are removed the next time the store is opened.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from knowledge.chunking import Chunk

log = logging.getLogger(__name__)

# Texts embedded per call when an ingest reports its progress (a few seconds on two cores).
EMBED_BATCH = 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    version TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    format TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_hash ON documents(content_hash);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class EmbeddingModelChanged(RuntimeError):
    """The store's vectors came from another embedding model than the one configured now."""


@dataclass(frozen=True)
class DocumentRecord:
    """The live version of one document."""

    doc_id: str
    source: str
    title: str
    content_hash: str
    version: str
    chunk_count: int
    size_bytes: int
    format: str
    updated_at: float


@dataclass(frozen=True)
class StoredChunk:
    """A live chunk as read back from the store, with its cosine similarity when it was searched."""

    chunk_id: str
    source: str
    title: str
    heading: str
    text: str
    similarity: float = 0.0


class _ChromaClients:
    """This process's Chroma client for each store folder, and for each collection the count of
    writes (see ``KnowledgeStore._chroma``) that the client has seen. ``opening`` numbers the
    clients made for a folder, so a store knows when to fetch its collections again.

    A client is replaced only while this process is not writing to the folder: a write holds the
    folder's file lock, so no other process can write meanwhile, and the writer brings the client
    up to date before it starts (``begin_write``).
    """

    # A replaced client is stopped once it is this many seconds old or more than this many
    # replaced clients are waiting: a search that still holds it (milliseconds) is done by then.
    RETIRE_AFTER_S = 5.0
    RETIRED_AT_MOST = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[int, object]] = {}  # path: (opening, client)
        self._seen: dict[tuple[str, str], int] = {}  # (path, collection): write count
        self._manifests: dict[tuple[str, str], Path] = {}  # (path, collection): manifest
        self._writing: set[str] = set()
        self._retired: list[tuple[float, object]] = []

    def register(self, path: str, collection: str, manifest: Path) -> None:
        """A collection's manifest, whose write count tells when the client is out of date."""
        with self._lock:
            key = (path, collection)
            self._manifests[key] = manifest
            if key not in self._seen:
                # A client opened before this collection was known may hold an old copy of it.
                self._seen[key] = -1 if path in self._clients else _write_count(manifest)

    def client(self, path: str):
        with self._lock:
            return self._open(path)[1]

    def current(self, path: str, collection: str, writes: int) -> tuple[int, object]:
        """The opening and client to use for ``collection`` at ``writes`` writes: a new one if
        another process wrote since this one last looked (and this process is not writing now)."""
        with self._lock:
            self._open(path)
            if writes > self._seen.get((path, collection), -1) and path not in self._writing:
                log.info(
                    "the knowledge store '%s' was changed by another process; reopening it",
                    collection,
                )
                self._reopen(path)
            return self._clients[path]

    def begin_write(self, path: str) -> None:
        """Called holding the folder's file lock: bring the client up to date, then keep it."""
        with self._lock:
            self._open(path)
            stale = any(
                _write_count(manifest) > self._seen.get(key, -1)
                for key, manifest in self._manifests.items()
                if key[0] == path
            )
            if stale:
                self._reopen(path)
            self._writing.add(path)

    def end_write(self, path: str) -> None:
        with self._lock:
            self._writing.discard(path)

    def wrote(self, path: str, collection: str, writes: int) -> None:
        with self._lock:
            key = (path, collection)
            self._seen[key] = max(self._seen.get(key, -1), writes)

    def _reopen(self, path: str) -> None:
        # Counts are read before the new client opens: a write after this is seen again.
        for key, manifest in self._manifests.items():
            if key[0] == path:
                self._seen[key] = max(self._seen.get(key, -1), _write_count(manifest))
        self._open(path, again=True)

    def _open(self, path: str, again: bool = False) -> tuple[int, object]:
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient
        from chromadb.config import Settings as ChromaSettings

        if path in self._clients and not again:
            return self._clients[path]
        if again:
            # Chroma shares one system per folder in a process; taking it out of that cache
            # makes the next client read the files afresh. The old system is stopped a while
            # later, once searches that still hold it are done.
            old = SharedSystemClient._identifier_to_system.pop(path, None)
            SharedSystemClient._identifier_to_refcount.pop(path, None)
            if old is not None:
                self._retired.append((time.monotonic(), old))
            self._stop_retired()
        client = chromadb.PersistentClient(
            path=path, settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        )
        opening = self._clients.get(path, (0, None))[0] + 1
        self._clients[path] = (opening, client)
        return self._clients[path]

    def _stop_retired(self) -> None:
        now, keep = time.monotonic(), []
        for number, (retired_at, system) in enumerate(reversed(self._retired)):
            if now - retired_at < self.RETIRE_AFTER_S and number < self.RETIRED_AT_MOST:
                keep.insert(0, (retired_at, system))
                continue
            try:
                system.stop()
            except Exception:  # noqa: BLE001 - an old client that will not stop is only dropped
                log.debug("stopping a replaced Chroma client failed", exc_info=True)
        self._retired = keep


def _write_count(manifest: Path) -> int:
    """How many writes the manifest has counted (see ``KnowledgeStore._chroma``)."""
    db = sqlite3.connect(manifest, timeout=30)
    try:
        return _counter(db, "chroma_writes")
    except sqlite3.OperationalError:  # no meta table yet
        return 0
    finally:
        db.close()


def _counter(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _bump(db: sqlite3.Connection, key: str) -> int:
    """Add one to the manifest's counter ``key``; its new value."""
    db.execute(
        "INSERT INTO meta(key, value) VALUES(?, '1') ON CONFLICT(key)"
        " DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        (key,),
    )
    return _counter(db, key)


_CLIENTS = _ChromaClients()


def doc_id_for(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]


class KnowledgeStore:
    """Chroma collection plus manifest under one data directory."""

    def __init__(self, data_dir: Path, embeddings: Embeddings, collection: str = "knowledge"):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.embeddings = embeddings
        self._chroma_path = str((self.data_dir / "chroma").resolve())
        # One manifest per collection, so that collections in one data directory stay apart.
        self.collection = collection
        manifest = "knowledge" if collection == "knowledge" else f"knowledge-{collection}"
        self._db_path = self.data_dir / f"{manifest}.sqlite3"
        self._lock_path = self.data_dir / "knowledge.lock"
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(SCHEMA)
            switched = self._check_embedding_model(db, getattr(embeddings, "name", None))
        self._handles: tuple[int, object, object] | None = None  # (opening, chunks, titles)
        _CLIENTS.register(self._chroma_path, collection, self._db_path)
        if switched:
            self._drop_collections()
        self.remove_orphans()

    def _check_embedding_model(self, db: sqlite3.Connection, name: str | None) -> bool:
        """Vectors of two models cannot be compared: a store remembers the model it was built
        with, and refuses another. A store made before stores remembered it takes the current
        model's name; an empty one switches to the current model (True: its Chroma collections,
        which keep the old vectors' size, are to be made anew)."""
        if not name:
            return False
        db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('embedding_model', ?)", (name,))
        (built_with,) = db.execute(
            "SELECT value FROM meta WHERE key = 'embedding_model'"
        ).fetchone()
        if built_with == name:
            return False
        if db.execute("SELECT 1 FROM documents LIMIT 1").fetchone() is None:
            db.execute("UPDATE meta SET value = ? WHERE key = 'embedding_model'", (name,))
            log.info(
                "empty knowledge store %s now uses the embedding model %s", self.data_dir, name
            )
            return True
        raise EmbeddingModelChanged(
            f"The knowledge store in {self.data_dir} (collection '{self.collection}') was built "
            f"with the embedding model '{built_with}', and retrieval.embedding_model is now "
            f"'{name}'. Set it back, or ingest your documents again into another collection "
            "(retrieval.collection) or data directory (CHATBOT_DATA_DIR)."
        )

    def _drop_collections(self) -> None:
        from chromadb.errors import NotFoundError

        with self._writing():
            _, client = _CLIENTS.current(self._chroma_path, self.collection, self._write_count())
            for name in (self.collection, f"{self.collection}_titles"):
                with suppress(NotFoundError):
                    client.delete_collection(name)
            self._handles = None

    # ----- Chroma, as the files on disk hold it now
    def _chroma(self) -> tuple:
        """The chunk and title collections, reopened first if another process has written to
        this collection since this process last read it.

        Chroma keeps each collection's vector index in memory and does not see another
        process's writes (``chatbot ingest`` beside a running server): searches would go on
        returning deleted chunks, and a write from this process would save the stale index over
        the other one's. Every write here counts itself in the manifest, so a count this process
        did not make means the files changed under it.
        """
        writes = self._write_count()
        opening, client = _CLIENTS.current(self._chroma_path, self.collection, writes)
        if self._handles is None or self._handles[0] != opening:
            # embedding_function=None: Chroma's default would fetch an ONNX model from the web.
            chunks = client.get_or_create_collection(
                name=self.collection, metadata={"hnsw:space": "cosine"}, embedding_function=None
            )
            titles = client.get_or_create_collection(
                name=f"{self.collection}_titles",
                metadata={"hnsw:space": "cosine"},
                embedding_function=None,
            )
            self._handles = (opening, chunks, titles)
        return self._handles[1], self._handles[2]

    def _write_count(self) -> int:
        return _write_count(self._db_path)

    def _count_write(self) -> None:
        with self._db() as db:
            writes = _bump(db, "chroma_writes")
        _CLIENTS.wrote(self._chroma_path, self.collection, writes)

    @contextmanager
    def _writing(self, wait: bool = True, count: bool = True) -> Iterator[bool]:
        """Exclusive write access across threads and processes; yields False if busy and not
        waiting. The write is counted at the end (see ``_chroma``) unless ``count`` is False."""
        with self._lock, self._lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                _CLIENTS.begin_write(self._chroma_path)
                try:
                    yield True
                finally:
                    try:
                        if count:
                            self._count_write()
                    finally:
                        _CLIENTS.end_write(self._chroma_path)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    # ----- manifest
    def documents(self) -> list[DocumentRecord]:
        with self._db() as db:
            rows = db.execute(
                "SELECT doc_id, source, title, content_hash, version, chunk_count, size_bytes,"
                " format, updated_at FROM documents ORDER BY source"
            ).fetchall()
        return [DocumentRecord(*row) for row in rows]

    def get_document(self, source: str) -> DocumentRecord | None:
        return next((d for d in self._select("source = ?", source)), None)

    def get_document_by_id(self, doc_id: str) -> DocumentRecord | None:
        return next((d for d in self._select("doc_id = ?", doc_id)), None)

    def find_by_hash(self, content_hash: str) -> DocumentRecord | None:
        return next((d for d in self._select("content_hash = ?", content_hash)), None)

    def _select(self, where: str, value: str) -> list[DocumentRecord]:
        with self._db() as db:
            rows = db.execute(
                "SELECT doc_id, source, title, content_hash, version, chunk_count, size_bytes,"
                f" format, updated_at FROM documents WHERE {where}",
                (value,),
            ).fetchall()
        return [DocumentRecord(*row) for row in rows]

    def live_versions(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT doc_id, version FROM documents").fetchall())

    def generation(self) -> int:
        """A counter that changes whenever the set of live chunks changes (in any process)."""
        with self._db() as db:
            return _counter(db, "generation")

    def _bump_generation(self, db: sqlite3.Connection) -> None:
        _bump(db, "generation")

    # ----- writes
    def embed_document(
        self,
        title: str,
        chunks: list[Chunk],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[float]]:
        """The vectors ``put_document`` stores for these chunks and title (the slow part of
        indexing, which needs no lock).

        With ``progress``, the texts are embedded EMBED_BATCH at a time and ``progress(done,
        total)`` is called before the first batch and after each one, in chunks (the title,
        embedded last, is not counted).
        """
        texts = [c.embedding_text(title) for c in chunks] + [title]
        if progress is None:
            return self.embeddings.embed_documents(texts)
        vectors: list[list[float]] = []
        progress(0, len(chunks))
        for start in range(0, len(texts), EMBED_BATCH):
            vectors.extend(self.embeddings.embed_documents(texts[start : start + EMBED_BATCH]))
            progress(min(len(vectors), len(chunks)), len(chunks))
        return vectors

    def put_document(
        self,
        *,
        source: str,
        title: str,
        chunks: list[Chunk],
        content_hash: str,
        size_bytes: int,
        fmt: str,
        vectors: list[list[float]] | None = None,
    ) -> DocumentRecord:
        """Index a new version of ``source`` and make it live in one step. ``vectors``: what
        ``embed_document`` gave for these chunks and title, if the caller embedded them first."""
        doc_id = doc_id_for(source)
        version = content_hash[:16]
        ids = [f"{doc_id}:{version}:{c.index}" for c in chunks]
        vectors = list(vectors) if vectors is not None else self.embed_document(title, chunks)
        title_vector = vectors.pop()
        metadatas = [
            {
                "doc_id": doc_id,
                "version": version,
                "source": source,
                "title": title,
                "heading": c.heading,
                "chunk": c.index,
            }
            for c in chunks
        ]
        doc_meta = {"doc_id": doc_id, "version": version, "source": source, "title": title}
        with self._writing():
            chunk_collection, title_collection = self._chroma()
            title_collection.upsert(
                ids=[f"{doc_id}:{version}:title"],
                embeddings=[title_vector],
                documents=[title],
                metadatas=[doc_meta],
            )
            batch = max(1, _CLIENTS.client(self._chroma_path).get_max_batch_size())
            for start in range(0, len(ids), batch):
                end = start + batch
                chunk_collection.upsert(
                    ids=ids[start:end],
                    embeddings=vectors[start:end],
                    documents=[c.text for c in chunks[start:end]],
                    metadatas=metadatas[start:end],
                )
            record = DocumentRecord(
                doc_id,
                source,
                title,
                content_hash,
                version,
                len(chunks),
                size_bytes,
                fmt,
                time.time(),
            )
            with self._db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.doc_id,
                        record.source,
                        record.title,
                        record.content_hash,
                        record.version,
                        record.chunk_count,
                        record.size_bytes,
                        record.format,
                        record.updated_at,
                    ),
                )
                self._bump_generation(db)
            older = {"$and": [{"doc_id": doc_id}, {"version": {"$ne": version}}]}
            chunk_collection.delete(where=older)
            title_collection.delete(where=older)
        return record

    def delete_document(self, source: str) -> bool:
        """Take ``source`` out of retrieval at once, then delete its chunks."""
        doc_id = doc_id_for(source)
        with self._writing():
            chunk_collection, title_collection = self._chroma()
            with self._db() as db:
                deleted = db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount
                if deleted:
                    self._bump_generation(db)
            chunk_collection.delete(where={"doc_id": doc_id})
            title_collection.delete(where={"doc_id": doc_id})
        return bool(deleted)

    def remove_orphans(self) -> int:
        """Delete vectors that belong to no live version (left by a crash mid-ingest).

        Skipped while another process is writing: its new version is not live yet.
        """
        removed = 0
        with self._writing(wait=False, count=False) as acquired:
            if not acquired:
                return 0
            live = self.live_versions()
            for collection in self._chroma():
                stored = collection.get(include=["metadatas"])
                orphans = [
                    item_id
                    for item_id, meta in zip(stored["ids"], stored["metadatas"] or [], strict=False)
                    if not _is_live(live, meta)
                ]
                if orphans:
                    try:
                        collection.delete(ids=orphans)
                    finally:
                        self._count_write()
                    removed += len(orphans)
        if removed:
            log.info("removed %d orphan vectors", removed)
        return removed

    # ----- reads
    def live_chunks(self) -> list[StoredChunk]:
        return _chunks(*self._live_rows(embeddings=False))

    def live_vectors(self) -> tuple[list[StoredChunk], np.ndarray]:
        """The live chunks and their embeddings (one row each, in the same order), in one read."""
        stored, keep = self._live_rows(embeddings=True)
        if not keep:
            return [], np.zeros((0, 0), dtype=np.float32)
        return _chunks(stored, keep), np.asarray(stored["embeddings"], dtype=np.float32)[keep]

    def _live_rows(self, embeddings: bool) -> tuple[dict, list[int]]:
        """One read of the chunk collection, and the positions of its live rows."""
        live = self.live_versions()
        include = ["documents", "metadatas", *(["embeddings"] if embeddings else [])]
        stored = self._chroma()[0].get(include=include)
        metas = stored["metadatas"] or []
        return stored, [i for i, meta in enumerate(metas) if _is_live(live, meta)]

    def document_chunks(self, source: str) -> list[StoredChunk]:
        """The live chunks of one document, in document order (a document preview)."""
        record = self.get_document(source)
        if record is None:
            return []
        stored = self._chroma()[0].get(
            where={"$and": [{"doc_id": record.doc_id}, {"version": record.version}]},
            include=["documents", "metadatas"],
        )
        rows = sorted(
            zip(stored["ids"], stored["documents"] or [], stored["metadatas"] or [], strict=False),
            key=lambda row: int(row[2].get("chunk", 0)),
        )
        return [_stored_chunk(chunk_id, text, meta) for chunk_id, text, meta in rows]

    def chunk_count(self) -> int:
        return self._chroma()[0].count()

    def search(self, vector: list[float], n: int) -> list[StoredChunk]:
        """Nearest live chunks to ``vector``, best first, with cosine similarity."""
        chunk_collection = self._chroma()[0]
        total = chunk_collection.count()
        if total == 0:
            return []
        live = self.live_versions()
        result = chunk_collection.query(
            query_embeddings=[vector],
            n_results=min(n, total),
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for chunk_id, text, meta, distance in zip(
            result["ids"][0],
            (result["documents"] or [[]])[0],
            (result["metadatas"] or [[]])[0],
            (result["distances"] or [[]])[0],
            strict=False,
        ):
            if _is_live(live, meta):
                # float32 rounding makes the distance of an identical text slightly negative.
                similarity = min(1.0, 1.0 - float(distance))
                hits.append(_stored_chunk(chunk_id, text, meta, similarity))
        return hits

    def search_titles(self, vector: list[float], n: int) -> dict[str, float]:
        """Cosine similarity of ``vector`` to the titles of the nearest live documents, by source."""
        title_collection = self._chroma()[1]
        total = title_collection.count()
        if total == 0:
            return {}
        live = self.live_versions()
        result = title_collection.query(
            query_embeddings=[vector], n_results=min(n, total), include=["metadatas", "distances"]
        )
        return {
            str(meta["source"]): 1.0 - float(distance)
            for meta, distance in zip(
                (result["metadatas"] or [[]])[0], (result["distances"] or [[]])[0], strict=False
            )
            if _is_live(live, meta)
        }


def _is_live(live: dict[str, str], meta) -> bool:
    """Whether a stored row belongs to its document's live version."""
    return live.get(str(meta.get("doc_id"))) == meta.get("version")


def _chunks(stored: dict, rows: list[int]) -> list[StoredChunk]:
    texts = stored["documents"] or []
    return [_stored_chunk(stored["ids"][i], texts[i], stored["metadatas"][i]) for i in rows]


def _stored_chunk(chunk_id: str, text: str | None, meta, similarity: float = 0.0) -> StoredChunk:
    return StoredChunk(
        chunk_id=chunk_id,
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        heading=str(meta.get("heading", "")),
        text=text or "",
        similarity=similarity,
    )
