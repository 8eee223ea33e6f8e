"""Ingest files and folders into the knowledge store, one document at a time, with a per-file report."""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from knowledge.chunking import Chunk, chunk_document, is_navigation_page
from knowledge.loaders import (
    NOT_A_REGULAR_FILE,
    SUPPORTED_SUFFIXES,
    DocumentError,
    LoadedDocument,
    LoadLimits,
    load_document,
)
from knowledge.macros import INCLUDE_DIR_NAMES
from knowledge.store import DocumentRecord, KnowledgeStore

log = logging.getLogger(__name__)

# Bump when chunking changes, so that unchanged files are re-chunked once.
CHUNKING_VERSION = "5"


# The reason given for a file in a folder that is not of a supported type.
UNSUPPORTED = "unsupported file type"
LINK_TO_FOLDER = "a link to a folder, not followed (name that folder itself to ingest it)"
BROKEN_LINK = "a broken link"
LINK_OUTSIDE = "a link to a file outside the folder"


def not_a_document(reason: str) -> bool:
    """Whether a skipped entry was passed over as no document at all (a file type that is not
    read, a link, a pipe), rather than as a document (a duplicate, a page of links only)."""
    return reason.startswith(UNSUPPORTED) or reason in (
        LINK_TO_FOLDER,
        BROKEN_LINK,
        LINK_OUTSIDE,
        NOT_A_REGULAR_FILE,
    )


def source_name(name: str) -> str:
    """The name a document is stored under, in one Unicode form (NFC).

    "café.md" can be written two ways (macOS lists file names decomposed, most other systems
    and browsers send them composed); both name the same document.
    """
    return unicodedata.normalize("NFC", name)


@dataclass
class IngestReport:
    """What one ingest did, file by file."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    # Documents taken out of the store: a file that now repeats another document, and with
    # ``prune`` every document no file of the run provided.
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
        }


@dataclass(frozen=True)
class FileOutcome:
    """What ingesting one file did; ``record`` is its live version afterwards, if it has one."""

    source: str
    status: Literal["added", "updated", "unchanged", "duplicate", "skipped", "failed"]
    reason: str | None = None
    record: DocumentRecord | None = None
    # The version that was live before, and for a duplicate the document it duplicates.
    previous: DocumentRecord | None = None
    twin: DocumentRecord | None = None


def discover(
    paths: Iterable[Path],
    passed_over: list[tuple[str, str]] | None = None,
    unreadable: list[tuple[str, str]] | None = None,
) -> list[tuple[Path, str, Path | None]]:
    """Files to ingest: path, the source name it is stored under, and the folder that held it
    (None for a file named directly).

    The source name is the path relative to the folder that was named, or the bare file name
    (see ``source_name``).

    Snippet folders (``include/``) are not documents of their own: their text reaches the index
    through the articles that include it. What a folder holds that is neither a file nor a
    folder to look into (a link to a folder, which is not followed, a broken link, a pipe) is
    added to ``passed_over`` with the reason; a folder or an entry that could not be looked at
    (no permission) to ``unreadable``.
    """
    found: list[tuple[Path, str, Path | None]] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            found.append((path, source_name(path.name), None))
            continue
        entries: list[Path] = []

        def refused(exc: OSError, folder: Path = path) -> None:
            if unreadable is not None and exc.filename:
                rel = Path(exc.filename).relative_to(folder)
                where = str(folder) if rel == Path() else rel.as_posix()
                unreadable.append((where, f"the folder could not be read ({_reason(exc)})"))

        for root, folders, files in os.walk(path, onerror=refused):
            # Hidden entries are passed over; hidden and snippet folders are not looked into.
            folders[:] = [f for f in folders if not f.startswith(".")]
            names = [*folders, *(f for f in files if not f.startswith("."))]
            entries.extend(Path(root, name) for name in names)
            folders[:] = [f for f in folders if f not in INCLUDE_DIR_NAMES]
        for file in sorted(entries):
            rel = file.relative_to(path)
            try:
                is_file = file.is_file()
                reason = None if is_file else _not_a_file(file)
            except OSError as exc:
                if unreadable is not None:
                    unreadable.append((rel.as_posix(), f"could not be read ({_reason(exc)})"))
                continue
            if is_file:
                found.append((file, source_name(rel.as_posix()), path))
            elif reason and passed_over is not None:
                passed_over.append((source_name(rel.as_posix()), reason))
    return found


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _not_a_file(path: Path) -> str | None:
    """Why a folder entry that is no regular file is passed over (None for a plain folder)."""
    if path.is_symlink():
        if path.is_dir():
            # Links to folders could loop or reach far outside; name the folder itself.
            return LINK_TO_FOLDER
        if not path.exists():
            return BROKEN_LINK
    if path.is_dir():
        return None
    return NOT_A_REGULAR_FILE


def ingest_paths(
    store: KnowledgeStore,
    paths: Iterable[Path],
    *,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    limits: LoadLimits | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    prune: bool = False,
    file_progress: Callable[[str, str, int, int], None] | None = None,
) -> IngestReport:
    """Ingest every file under ``paths``; a bad file is reported and the others go on.

    ``progress(number, total, source)`` hears of each file as it starts, ``file_progress(source,
    stage, done, total)`` of its stages (see ``ingest_file``).

    With ``prune``, the store then keeps only what these paths hold: a document whose file was
    not found in them (deleted, renamed, or never part of them) is removed. A file that failed
    keeps its indexed version. Nothing is pruned if a named path does not exist or the paths
    hold no document, so that a mistyped or unmounted folder cannot empty the store.
    """
    report = IngestReport()
    paths = [Path(path) for path in paths]
    unreadable: list[tuple[str, str]] = []
    files = discover(paths, report.skipped, unreadable)
    report.failed.extend(unreadable)
    # Each document name's first file: two files with one name cannot both be its document.
    first_file: dict[str, Path] = {}
    for file, source, _ in files:
        first_file.setdefault(source, file)
    unread = dict(first_file)
    # Whether documents these paths no longer hold will be removed at the end (see below).
    pruning = prune and not unreadable and all(path.exists() for path in paths)

    def changing(twin: DocumentRecord) -> bool:
        """Whether ``twin`` is about to change in this run: its file, not read yet, now says
        something else (two files' texts swapped), or it has no file here and will be pruned
        (a renamed file, or one of two copies deleted). Then a file repeating its indexed
        version is no duplicate."""
        if pruning and source_name(twin.source) not in first_file:
            return True
        file = unread.get(source_name(twin.source))
        if file is None:
            return False
        try:
            doc = load_document(file, twin.source, limits)
        except Exception:  # noqa: BLE001 - its own turn reports the failure
            return False  # it will fail, and its indexed version stays
        return content_hash(doc, chunk_size, chunk_overlap) != twin.content_hash

    for number, (file, source, folder) in enumerate(files, start=1):
        if progress:
            progress(number, len(files), source)
        unread.pop(source, None)
        earlier = first_file[source]
        if earlier is not file:
            if earlier == file:
                continue  # the same file named twice
            # Two folders' "index.md", or one name written two ways: storing both under one
            # name would let the second replace the first, and the next run swap them back.
            report.failed.append((source, f"'{file}' has the same document name as '{earlier}'"))
            continue
        if not file.exists():
            report.failed.append((source, "no such file or folder"))
            continue
        if folder is not None and not file.resolve().is_relative_to(folder.resolve()):
            # A link in the folder to a file elsewhere (say /etc/passwd) is not the folder's.
            report.skipped.append((source, LINK_OUTSIDE))
            continue
        if folder is not None and file.suffix.lower() not in SUPPORTED_SUFFIXES:
            # A folder may hold images or scripts beside its articles; a file named directly
            # with such a type is refused by the loader instead.
            report.skipped.append((source, f"{UNSUPPORTED} '{file.suffix}'"))
            continue
        outcome = ingest_file(
            store,
            file,
            source,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            limits=limits,
            changing=changing,
            progress=progress_for(file_progress, source),
        )
        # A file that now repeats another document no longer says what its indexed version
        # says; keeping that version would let answers quote text the file has dropped.
        if outcome.status == "duplicate" and outcome.previous and store.delete_document(source):
            report.removed.append(source)
        _record(report, outcome)
    holds_documents = report.added or report.updated or report.unchanged
    # Nor if part of a folder could not be looked at: its documents would look deleted.
    if pruning and holds_documents:
        found = {source for _, source, _ in files}
        for record in store.documents():
            # (a file that failed keeps its version also when stored under another spelling)
            if source_name(record.source) not in found and store.delete_document(record.source):
                report.removed.append(record.source)
    return report


def progress_for(progress: Callable[..., None] | None, first: str) -> Callable[..., None] | None:
    """``progress`` with its first argument given (a file's name, a stage), or None."""
    return None if progress is None else partial(progress, first)


def _record(report: IngestReport, outcome: FileOutcome) -> None:
    match outcome.status:
        case "added" | "updated" | "unchanged":
            getattr(report, outcome.status).append(outcome.source)
        case "duplicate" | "skipped":
            report.skipped.append((outcome.source, outcome.reason or ""))
        case "failed":
            report.failed.append((outcome.source, outcome.reason or ""))


def ingest_file(
    store: KnowledgeStore,
    file: Path,
    source: str,
    *,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    limits: LoadLimits | None = None,
    snippets: bool = True,
    changing: Callable[[DocumentRecord], bool] | None = None,
    guard: AbstractContextManager | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> FileOutcome:
    """Index ``file`` as the new version of ``source``, unless it is unchanged or a duplicate.

    A duplicate (the same content as another document) is reported and nothing is changed;
    ``snippets=False`` leaves ``{!name.md!}`` includes out instead of looking them up beside
    the file (uploads, whose neighbours are not theirs). ``changing(twin)`` tells whether the
    document it repeats is about to get a new version in the same run. ``guard`` (a lock) is
    held only while the store is checked and written: the file is read and embedded before,
    so that other changes guarded by it need not wait for that. ``progress(stage, done,
    total)`` hears of each stage: "reading" the file, "embedding" its chunks (``done`` of
    ``total``, called again as they are embedded) and "saving" them to the store.
    """
    try:
        return _ingest_one(
            store, file, source, chunk_size, chunk_overlap, limits, snippets, changing, guard,
            progress,
        )  # fmt: skip
    except DocumentError as exc:
        return FileOutcome(source, "failed", exc.reason)
    except OSError as exc:
        return FileOutcome(source, "failed", f"the file could not be read ({exc.strerror or exc})")
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
        log.exception("ingest of %s failed", source)
        return FileOutcome(source, "failed", f"unexpected error: {type(exc).__name__}: {exc}")


def _ingest_one(
    store: KnowledgeStore,
    file: Path,
    source: str,
    chunk_size: int,
    chunk_overlap: int,
    limits: LoadLimits | None,
    snippets: bool,
    changing: Callable[[DocumentRecord], bool] | None = None,
    guard: AbstractContextManager | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> FileOutcome:
    if progress:
        progress("reading", 0, 0)
    doc = load_document(file, source, limits, snippets=snippets)
    if is_navigation_page(doc):
        return FileOutcome(source, "skipped", "navigation page (only links to other pages)")
    new_hash = content_hash(doc, chunk_size, chunk_overlap)
    size_bytes = file.stat().st_size
    # Embedded unless a first look finds nothing to index; with a guard, outside it.
    outcome, existing, earlier = _check(store, source, new_hash, changing)
    if outcome is not None:
        return outcome
    chunks = chunk_document(doc, chunk_size, chunk_overlap)
    vectors = store.embed_document(doc.title, chunks, progress_for(progress, "embedding"))
    if progress:
        progress("saving", len(chunks), len(chunks))
    if guard is None:
        return _put(store, doc, source, new_hash, size_bytes, chunks, vectors, existing, earlier)
    with guard:
        # Looked at again: a change guarded by it may have come first while this file was embedded.
        outcome, existing, earlier = _check(store, source, new_hash, changing)
        if outcome is not None:
            return outcome
        return _put(store, doc, source, new_hash, size_bytes, chunks, vectors, existing, earlier)


def _check(
    store: KnowledgeStore,
    source: str,
    new_hash: str,
    changing: Callable[[DocumentRecord], bool] | None,
) -> tuple[FileOutcome | None, DocumentRecord | None, DocumentRecord | None]:
    """The outcome when there is nothing to index (unchanged, or a duplicate), else None; with
    the document stored under this name, and the one stored under another Unicode form of it
    (by a version that kept names as given), which this file replaces."""
    existing = store.get_document(source)
    if existing and existing.content_hash == new_hash:
        return FileOutcome(source, "unchanged", record=existing, previous=existing), existing, None
    earlier = None if existing else _other_spelling(store, source)
    twin = store.find_by_hash(new_hash)
    if (
        twin
        and twin.source != source
        and not (earlier and twin.source == earlier.source)
        and not (changing and changing(twin))
    ):
        reason = f"same content as '{twin.source}', already indexed"
        outcome = FileOutcome(source, "duplicate", reason, previous=existing, twin=twin)
        return outcome, existing, earlier
    return None, existing, earlier


def _put(
    store: KnowledgeStore,
    doc: LoadedDocument,
    source: str,
    new_hash: str,
    size_bytes: int,
    chunks: list[Chunk],
    vectors: list[list[float]],
    existing: DocumentRecord | None,
    earlier: DocumentRecord | None,
) -> FileOutcome:
    """Write the new version; ``existing`` and ``earlier`` as ``_check`` found them."""
    record = store.put_document(
        source=source,
        title=doc.title,
        chunks=chunks,
        content_hash=new_hash,
        size_bytes=size_bytes,
        fmt=doc.format,
        vectors=vectors,
    )
    if earlier is not None:
        store.delete_document(earlier.source)
    previous = existing or earlier
    return FileOutcome(source, "updated" if previous else "added", record=record, previous=previous)


def _other_spelling(store: KnowledgeStore, source: str) -> DocumentRecord | None:
    """The document stored under another Unicode form of ``source``, if any (only a name with
    letters outside ASCII has one)."""
    if source.isascii():
        return None
    return next(
        (d for d in store.documents() if d.source != source and source_name(d.source) == source),
        None,
    )


def content_hash(doc: LoadedDocument, chunk_size: int, chunk_overlap: int) -> str:
    """What decides whether a document must be indexed again: its text and how it is cut."""
    return hashlib.sha256(
        f"{CHUNKING_VERSION}|{chunk_size}|{chunk_overlap}|{doc.title}\n{doc.text}".encode()
    ).hexdigest()
