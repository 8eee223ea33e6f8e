"""Read Markdown, plain text, HTML, PDF and DOCX files into one Markdown-like text per document."""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from knowledge.fences import DOCUMENT_FENCE_LINE_RE, CodeFences
from knowledge.macros import IncludeError, expand_macros, render_ui_macros, resolve_includes

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx"}

NOT_A_REGULAR_FILE = "not a regular file (a pipe, socket or device)"

# Neither part holds a bracket or a parenthesis: every attempt then stops at the next one, so a
# file of unclosed links costs linear time, not quadratic.
LINK_RE = re.compile(r"\[([^\[\]]*)\]\(([^()\[\]]*)\)")
# A link reference definition ("[id]: url"), which readers never see; "[^1]: text" is a
# footnote, which they do.
LINK_DEFINITION_RE = re.compile(r"^ {0,3}\[(?!\^)[^\]\n]+\]:[ \t]+\S")
HTML_BLOCKS = ["h1", "h2", "h3", "h4", "p", "li", "pre", "td", "th"]


class DocumentError(Exception):
    """A file that cannot be ingested; the message says which file and why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class LoadedDocument:
    """One source file as text, with the title a reader would see."""

    source: str
    title: str
    text: str
    format: str


@dataclass(frozen=True)
class LoadLimits:
    """Refusal thresholds for one file."""

    max_file_bytes: int = 20_000_000
    max_pdf_pages: int = 500


def load_document(
    path: Path, source: str, limits: LoadLimits | None = None, *, snippets: bool = True
) -> LoadedDocument:
    """Load ``path`` (reported as ``source``), or raise DocumentError with a specific reason.

    ``snippets=False`` drops Markdown ``{!name.md!}`` includes instead of reading them from the
    folders around ``path``.
    """
    limits = limits or LoadLimits()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        allowed = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise DocumentError(source, f"unsupported file type '{suffix or '(none)'}'; use {allowed}")
    if path.exists() and not path.is_file():
        # A pipe would block the read, a folder cannot be read as one document.
        what = "a folder" if path.is_dir() else NOT_A_REGULAR_FILE
        raise DocumentError(source, f"{what}, not a document")
    size = path.stat().st_size
    if size == 0:
        raise DocumentError(source, "the file is empty")
    if size > limits.max_file_bytes:
        raise DocumentError(
            source, f"the file is {size:,} bytes, over the limit of {limits.max_file_bytes:,}"
        )
    match suffix:
        case ".md" | ".markdown":
            title, text, fmt = _load_markdown(path, source, snippets)
        case ".txt":
            title, text, fmt = _load_text(path, source)
        case ".html" | ".htm":
            title, text, fmt = _load_html(path, source)
        case ".pdf":
            title, text, fmt = _load_pdf(path, source, limits.max_pdf_pages)
        case _:
            title, text, fmt = _load_docx(path, source)
    if not text.strip():
        raise DocumentError(source, "no text could be read from the file")
    return LoadedDocument(
        source=source, title=title or _title_from_name(path), text=text, format=fmt
    )


def _title_from_name(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").strip().capitalize()


# Byte-order marks, longest first (UTF-32's little-endian mark starts with UTF-16's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Most control characters (other than tabs, line and page breaks) a text may have, as a share
# of its characters: more means the file is binary or in an encoding we did not recognise.
MAX_CONTROL_SHARE = 0.01
# A Word file's XML, unpacked, and its parts: a 500-page manual holds a few megabytes.
DOCX_MAX_XML_BYTES = 16 * 10**6
DOCX_MAX_PARTS = 5000
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def _read_text(path: Path, source: str) -> str:
    """The file's text: UTF-8, or UTF-16/32 with a byte-order mark, else Windows-1252. Binary
    data is refused rather than indexed."""
    raw = path.read_bytes()
    text = None
    for bom, encoding in BOMS:
        if raw.startswith(bom):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DocumentError(
                    source,
                    f"the file starts as {encoding.upper()} text but is not valid {encoding.upper()}",
                ) from exc
            break
    if text is None:
        if b"\x00" in raw:
            raise DocumentError(
                source, "the file is not text (it contains NUL bytes); save it as UTF-8 text"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # The five bytes Windows-1252 leaves undefined become U+FFFD, not controls.
            text = raw.decode("cp1252", errors="replace")
    # A DOS end-of-file mark (Ctrl-Z) is not part of the text.
    text = text.rstrip("\x1a")
    controls = len(CONTROL_RE.findall(text))
    if controls > MAX_CONTROL_SHARE * len(text):
        raise DocumentError(
            source,
            f"the file does not look like text ({controls:,} control characters in "
            f"{len(text):,}); save it as UTF-8 text",
        )
    return text


def _first_heading(text: str) -> str:
    match = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _load_markdown(path: Path, source: str, snippets: bool) -> tuple[str, str, str]:
    raw = _read_text(path, source)
    try:
        text = expand_macros(raw, path) if snippets else render_ui_macros(resolve_includes(raw, []))
    except IncludeError as exc:
        raise DocumentError(source, f"the document's includes are too large: {exc}") from exc
    text = LINK_RE.sub(lambda m: m.group(1), _hidden_removed(text))
    return _first_heading(text), text, "markdown"


def _hidden_removed(markdown: str) -> str:
    """``markdown`` without what a rendered page never shows: HTML comments that start a line
    (up to their end) and link reference definitions, which include the ``[//]: # (note)`` idiom
    for comments. Code blocks are left as they are."""
    out: list[str] = []
    fences = CodeFences(DOCUMENT_FENCE_LINE_RE)
    in_comment = False
    after_break = True  # a definition cannot interrupt a paragraph
    for line in markdown.splitlines(keepends=True):
        if in_comment:
            if "-->" in line:
                in_comment = False
                rest = line.split("-->", 1)[1]
                if rest.strip():
                    out.append(rest)
            continue
        if fences.feed(line) or fences.open:
            # A fence, or a line of a code block: kept as it is.
            out.append(line)
            after_break = False
            continue
        if line.lstrip().startswith("<!--"):
            rest = line.split("<!--", 1)[1]
            if "-->" not in rest:
                in_comment = True
            elif rest.split("-->", 1)[1].strip():
                out.append(line.split("<!--", 1)[0] + rest.split("-->", 1)[1])
            continue
        elif after_break and LINK_DEFINITION_RE.match(line):
            continue
        out.append(line)
        after_break = not line.strip() or line.lstrip().startswith("#")
    return "".join(out)


def _load_text(path: Path, source: str) -> tuple[str, str, str]:
    text = _read_text(path, source)
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first_line[:120], text, "text"


def _load_html(path: Path, source: str) -> tuple[str, str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_text(path, source), "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "footer", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    lines: list[str] = []
    for element in _outer_blocks(soup.body or soup):
        text = element.get_text(" ", strip=True)
        if not text:
            continue
        if element.name in {"h1", "h2", "h3", "h4"}:
            lines.append("#" * int(element.name[1]) + " " + text)
        elif element.name == "li":
            lines.append("- " + text)
        else:
            lines.append(text)
    text = "\n\n".join(lines)
    return title or _first_heading(text), text, "html"


def _outer_blocks(root) -> list:
    """The block elements (paragraphs, headings, list items, cells) not inside another, in
    document order: a <p> inside an <li> is already part of the item's text. One walk over the
    tree, without descending into a block, so that unclosed tags nested thousands deep (which
    html.parser keeps as written) cost linear time."""
    from bs4 import Tag

    blocks = []
    stack = [child for child in reversed(root.contents) if isinstance(child, Tag)]
    while stack:
        element = stack.pop()
        if element.name in HTML_BLOCKS:
            blocks.append(element)
        else:
            stack.extend(child for child in reversed(element.contents) if isinstance(child, Tag))
    return blocks


def _load_pdf(path: Path, source: str, max_pages: int) -> tuple[str, str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise DocumentError(source, "the PDF is encrypted; upload an unprotected copy")
        pages = reader.pages
        if len(pages) > max_pages:
            raise DocumentError(
                source, f"the PDF has {len(pages)} pages, over the limit of {max_pages}"
            )
        texts = _pdf_page_texts(pages, source)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise  # the file system's refusal ("Permission denied"), reported as for any file
        raise DocumentError(source, f"the PDF could not be read: it is damaged ({exc})") from exc
    # PyPdfError, not just PdfReadError: malformed files also raise LimitReachedError (a
    # self-referencing object) and ParseError, which are siblings of PdfReadError.
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(
            source, f"the PDF could not be read: it is damaged or not a PDF ({exc})"
        ) from exc
    text = "\n\n".join(t.strip() for t in texts if t.strip())
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return str(meta_title).strip() or first_line[:120], text, "pdf"


# A PDF's extracted text may not run over this: a few kilobytes of compressed drawing
# instructions can hold tens of megabytes of text, which would take minutes to extract and hours
# to embed. A 500-page manual holds about 1.5 M characters.
MAX_PDF_TEXT_CHARS = 5_000_000
# Text is extracted page by page from the page's drawing instructions, about 1 MB a second here:
# a page may hold at most this many bytes of them, and the whole PDF ten times as many, so that a
# small file cannot keep an ingest busy for minutes before the text limit is reached.
MAX_PDF_PAGE_CONTENT_BYTES = 5_000_000
MAX_PDF_CONTENT_BYTES = 50_000_000


def _pdf_page_texts(pages, source: str) -> list[str]:
    """Each page's text, in order. A page that repeats an earlier page's drawing instructions
    with the same resources (a PDF may point many pages at one content stream) adds nothing and
    is not extracted again."""
    texts: list[str] = []
    seen: set[tuple[bytes, str]] = set()
    total = content_bytes = 0
    for number, page in enumerate(pages, start=1):
        contents = page.get_contents()
        if contents is None:
            continue
        data = contents.get_data()
        key = (hashlib.sha256(data).digest(), repr(page.get("/Resources")))
        if key in seen:
            continue
        seen.add(key)
        content_bytes += len(data)
        if len(data) > MAX_PDF_PAGE_CONTENT_BYTES or content_bytes > MAX_PDF_CONTENT_BYTES:
            raise DocumentError(
                source,
                f"page {number} of the PDF unpacks to more drawing instructions than allowed "
                f"({MAX_PDF_PAGE_CONTENT_BYTES:,} bytes a page, {MAX_PDF_CONTENT_BYTES:,} in "
                "all); split it or print it to a new PDF",
            )
        text = page.extract_text() or ""
        total += len(text)
        if total > MAX_PDF_TEXT_CHARS:
            raise DocumentError(
                source,
                f"the PDF holds more than {MAX_PDF_TEXT_CHARS:,} characters of text; "
                "split it into smaller files",
            )
        texts.append(text)
    return texts


def _docx_table_rows(tbl) -> list[str]:
    """One line per row of a table (its XML element), its cells joined by " | ", so that a
    row's cells stay together ("Orbit speaker | 2 years"). Read from the XML itself: a cell
    merged down over several rows is read once, on its first row (python-docx's ``row.cells``
    repeats it on every row, which a crafted file can turn into gigabytes of text), and a
    table inside a cell is read after its row."""
    from docx.oxml.ns import qn
    from docx.text.paragraph import Paragraph

    lines = []
    for tr in tbl.findall(qn("w:tr")):
        cells, inner = [], []
        for tc in tr.findall(qn("w:tc")):
            merge = tc.find(f"{qn('w:tcPr')}/{qn('w:vMerge')}")
            if merge is not None and merge.get(qn("w:val")) in (None, "continue"):
                continue  # the rest of a cell merged down from the row above
            text = " ".join(
                t for p in tc.findall(qn("w:p")) if (t := Paragraph(p, None).text.strip())
            )
            if text:
                cells.append(text)
            inner.extend(tc.findall(qn("w:tbl")))
        if cells:
            lines.append(" | ".join(cells))
        for table in inner:
            lines.extend(_docx_table_rows(table))
    return lines


def _load_docx(path: Path, source: str) -> tuple[str, str, str]:
    import zipfile

    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from lxml.etree import XMLSyntaxError

    try:
        with zipfile.ZipFile(path) as package:
            parts = package.infolist()
        # The sizes below are the archive's own claims: parts claiming more packed bytes than
        # the file holds would pass the check of how far they unpack.
        if sum(p.compress_size for p in parts) > path.stat().st_size:
            raise DocumentError(
                source, "the DOCX file is corrupt (its parts claim more bytes than it holds)"
            )
        # Every part that unpacks to more than twice its packed size, whatever its name (a
        # document part may be called anything): text does, pictures do not.
        unpacked = sum(p.file_size for p in parts if p.file_size > 2 * p.compress_size)
        if len(parts) > DOCX_MAX_PARTS or unpacked > DOCX_MAX_XML_BYTES:
            # A few kilobytes can unpack to gigabytes of XML and take the server's memory.
            raise DocumentError(
                source,
                f"the DOCX file unpacks to {unpacked / 1e6:.0f} MB of text in {len(parts)} "
                f"parts, more than the {DOCX_MAX_XML_BYTES // 10**6} MB in {DOCX_MAX_PARTS} "
                "parts a document may hold",
            )
        document = Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, XMLSyntaxError) as exc:
        raise DocumentError(source, "the DOCX file is corrupt or not a Word document") from exc
    lines: list[str] = []
    # Paragraphs and tables in the order they stand (a price list, a warranty table).
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            try:
                lines.extend(_docx_table_rows(block._tbl))
            except RecursionError:
                raise DocumentError(
                    source, "the DOCX file nests tables too deeply to be read"
                ) from None
            continue
        text = block.text.strip()
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        level = {"Title": 1, "Heading 1": 1, "Heading 2": 2, "Heading 3": 3}.get(style)
        if level:
            lines.append("#" * level + " " + text)
        elif style.startswith("List"):  # "List Bullet", "List Number 2", "List Paragraph"
            lines.append("- " + text)  # an item, as HTML's <li> is read
        else:
            lines.append(text)
    title = (document.core_properties.title or "").strip()
    text = "\n\n".join(lines)
    return title or _first_heading(text), text, "docx"
