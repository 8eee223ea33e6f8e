"""Ingest files and folders into the knowledge store, one document at a time, with a per-file report."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.chunking import chunk_document, is_navigation_page
from knowledge.loaders import SUPPORTED_SUFFIXES, DocumentError, LoadLimits, load_document
from knowledge.macros import INCLUDE_DIR_NAMES
from knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)

# Bump when chunking changes, so that unchanged files are re-chunked once.
CHUNKING_VERSION = "2"


@dataclass
class IngestReport:
    """What one ingest did, file by file."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

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


def discover(paths: Iterable[Path]) -> list[tuple[Path, str, bool]]:
    """Files to ingest: path, the source name it is stored under, and whether a folder held it.

    The source name is the path relative to the folder that was named, or the bare file name.

    Snippet folders (``include/``) are not documents of their own: their text reaches the index
    through the articles that include it.
    """
    found: list[tuple[Path, str, bool]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(path)
                if not file.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if any(part in INCLUDE_DIR_NAMES for part in rel.parts[:-1]):
                    continue
                found.append((file, rel.as_posix(), True))
        else:
            found.append((path, path.name, False))
    return found


def ingest_paths(
    store: KnowledgeStore,
    paths: Iterable[Path],
    *,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    limits: LoadLimits | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> IngestReport:
    """Ingest every file under ``paths``; a bad file is reported and the others go on."""
    report = IngestReport()
    files = discover(paths)
    for number, (file, source, in_folder) in enumerate(files, start=1):
        if progress:
            progress(number, len(files), source)
        if not file.exists():
            report.failed.append((source, "no such file or folder"))
            continue
        if in_folder and file.suffix.lower() not in SUPPORTED_SUFFIXES:
            # A folder may hold images or scripts beside its articles; a file named directly
            # with such a type is refused by the loader instead.
            report.skipped.append((source, f"unsupported file type '{file.suffix}'"))
            continue
        try:
            _ingest_one(store, file, source, report, chunk_size, chunk_overlap, limits)
        except DocumentError as exc:
            report.failed.append((source, exc.reason))
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
            log.exception("ingest of %s failed", source)
            report.failed.append((source, f"unexpected error: {type(exc).__name__}: {exc}"))
    return report


def _ingest_one(
    store: KnowledgeStore,
    file: Path,
    source: str,
    report: IngestReport,
    chunk_size: int,
    chunk_overlap: int,
    limits: LoadLimits | None,
) -> None:
    doc = load_document(file, source, limits)
    if is_navigation_page(doc):
        report.skipped.append((source, "navigation page (only links to other pages)"))
        return
    content_hash = hashlib.sha256(
        f"{CHUNKING_VERSION}|{chunk_size}|{chunk_overlap}|{doc.title}\n{doc.text}".encode()
    ).hexdigest()
    existing = store.get_document(source)
    if existing and existing.content_hash == content_hash:
        report.unchanged.append(source)
        return
    twin = store.find_by_hash(content_hash)
    if twin and twin.source != source:
        if existing:
            # The file no longer says what its indexed version says; keeping that version
            # would let answers quote text the file has dropped.
            store.delete_document(source)
        report.skipped.append((source, f"same content as '{twin.source}', already indexed"))
        return
    chunks = chunk_document(doc, chunk_size, chunk_overlap)
    store.put_document(
        source=source,
        title=doc.title,
        chunks=chunks,
        content_hash=content_hash,
        size_bytes=file.stat().st_size,
        fmt=doc.format,
    )
    (report.updated if existing else report.added).append(source)
