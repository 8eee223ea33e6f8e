"""Fixtures for the knowledge tests: a small fake help center, PDF and DOCX writers, a counting embedder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

PIN_ARTICLE = """\
# Pin a channel

Pinning a channel keeps it at the top of the [channel list](/help/channel-list).

## Pin a channel

{start_tabs}

{tab|desktop-web}

{!channel-actions.md!}

1. Click **Pin channel to top**.

{tab|mobile}

1. Long-press the channel name and tap **Pin**.

{end_tabs}

## Notifications for pinned channels

{settings_tab|notifications}

Pinned channels use your usual notification settings.

## Related articles

* [Mute a channel](/help/mute-a-channel)
* [Archive a channel](/help/archive-a-channel)
"""

MUTE_ARTICLE = """\
# Mute a channel

Muting a channel hides its unread counts. Muted channels are shown in grey at the bottom of the
sidebar, and their messages no longer trigger desktop notifications.

## Mute a channel

{!channel-actions.md!}

1. Click **Mute channel**.
"""

CHANNEL_ACTIONS_SNIPPET = """\
1. Hover over a channel in the left sidebar.

{!ellipsis.md!}
"""

ELLIPSIS_SNIPPET = "1. Click the **ellipsis** icon beside the periwinkle channel badge.\n"


@pytest.fixture
def help_center(tmp_path) -> Path:
    """A two-article help center with an ``include/`` snippet folder, a hidden folder and an image."""
    root = tmp_path / "help"
    (root / "include").mkdir(parents=True)
    (root / ".drafts").mkdir()
    (root / "pin-a-channel.md").write_text(PIN_ARTICLE, encoding="utf-8")
    (root / "mute-a-channel.md").write_text(MUTE_ARTICLE, encoding="utf-8")
    (root / "include" / "channel-actions.md").write_text(CHANNEL_ACTIONS_SNIPPET, encoding="utf-8")
    (root / "include" / "ellipsis.md").write_text(ELLIPSIS_SNIPPET, encoding="utf-8")
    (root / ".drafts" / "unfinished.md").write_text("# Draft\n\nNot ready.\n", encoding="utf-8")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def pdf_bytes(objects: list[bytes]) -> bytes:
    """A PDF file of ``objects`` (numbered from 1, the first being the catalog) with a correct xref."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def text_pdf(lines: list[str], *, stream_length: bytes | None = None) -> bytes:
    """A one-page PDF showing ``lines`` in Helvetica; ``stream_length`` overrides the /Length value."""
    content = "BT /F1 14 Tf 72 720 Td 18 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    length = stream_length or str(len(content)).encode()
    return pdf_bytes(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %s >>\nstream\n%s\nendstream" % (length, content.encode()),
        ]
    )


@pytest.fixture
def make_pdf() -> Callable[..., Path]:
    """Write a one-page text PDF: ``make_pdf(path, lines, stream_length=None)``."""

    def write(path: Path, lines: list[str], *, stream_length: bytes | None = None) -> Path:
        path.write_bytes(text_pdf(lines, stream_length=stream_length))
        return path

    return write


@pytest.fixture
def make_docx() -> Callable[[Path, list[tuple[str, str]]], Path]:
    """Write a Word file from ``(style, text)`` paragraphs, e.g. ``("Heading 1", "Warranty")``."""
    from docx import Document

    def write(path: Path, paragraphs: list[tuple[str, str]]) -> Path:
        document = Document()
        for style, text in paragraphs:
            document.add_paragraph(text, style=style)
        document.save(str(path))
        return path

    return write


class CountingEmbeddings(Embeddings):
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self, inner: Embeddings):
        self.inner = inner
        self.calls = 0
        self.texts: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def reset(self) -> None:
        self.calls = 0
        self.texts.clear()


@pytest.fixture
def counting_embeddings(embeddings) -> CountingEmbeddings:
    return CountingEmbeddings(embeddings)


@pytest.fixture
def counting_store(tmp_path, counting_embeddings):
    """A real store in ``tmp_path`` whose embedder counts its calls."""
    from knowledge.store import KnowledgeStore

    return KnowledgeStore(tmp_path / "counted-store", counting_embeddings)
