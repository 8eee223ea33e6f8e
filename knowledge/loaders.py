"""Read Markdown, plain text, HTML, PDF and DOCX files into one Markdown-like text per document."""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from knowledge.fences import DOCUMENT_FENCE_LINE_RE, CodeFences
from knowledge.macros import IncludeError, expand_macros, render_ui_macros, resolve_includes

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx"}
# Suffixes of one kind of file, read by one loader.
_SAME_KIND = {".markdown": ".md", ".htm": ".html"}


def file_kind(name: str) -> str:
    """The kind of file a name's suffix says, as one suffix: ".md" for "a.MARKDOWN"."""
    suffix = PurePosixPath(name).suffix.lower()
    return _SAME_KIND.get(suffix, suffix)


def suffixes_of_kind(name: str) -> list[str]:
    """Every suffix of the kind of file ``name`` is: [".markdown", ".md"] for "a.md"."""
    kind = file_kind(name)
    return sorted(s for s in SUPPORTED_SUFFIXES | {kind} if file_kind(f"x{s}") == kind)


NOT_A_REGULAR_FILE = "not a regular file (a pipe, socket or device)"

# Neither part holds a bracket or a parenthesis: every attempt then stops at the next one, so a
# file of unclosed links costs linear time, not quadratic.
LINK_RE = re.compile(r"\[([^\[\]]*)\]\(([^()\[\]]*)\)")
# A link reference definition ("[id]: url"), which readers never see; "[^1]: text" is a
# footnote, which they do.
LINK_DEFINITION_RE = re.compile(r"^ {0,3}\[(?!\^)[^\]\n]+\]:[ \t]+\S")
HTML_BLOCKS = frozenset(
    {"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "dt", "dd", "caption"}
)
HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# What an article is made of: a form holding these (or three paragraphs) is the page itself,
# not a search box.
ARTICLE_PARTS = ["h1", "h2", "h3", "article", "main"]
# Elements that sit inside a line of text; any other element (div, section, blockquote, …)
# holds blocks, and text written straight into it is a block of its own.
HTML_INLINE = frozenset(
    [
        "a",
        "abbr",
        "b",
        "bdi",
        "bdo",
        "br",
        "cite",
        "code",
        "data",
        "del",
        "dfn",
        "em",
        "font",
        "i",
        "img",
        "ins",
        "kbd",
        "label",
        "mark",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "time",
        "u",
        "var",
        "wbr",
    ]
)
# Parts of a page that are the site's, not the article's: menus, the page banner and footer,
# search boxes.
PAGE_FURNITURE_ROLES = ["navigation", "banner", "contentinfo", "search", "complementary"]
# A <br> while the page is read: a line break that outlives the folding of the source's spaces.
HTML_BREAK = "\u2028"
HTML_SPACES_RE = re.compile(r"[ \t\n\r\f\v]+")


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


# An HTML page's own statement of its encoding, in its first bytes: <meta charset="koi8-r"> or
# <meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">.
META_CHARSET_RE = re.compile(
    rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE
)


def declared_charset(raw: bytes) -> str | None:
    """The Python codec an HTML page's meta tag names, if it names one Python knows."""
    match = META_CHARSET_RE.search(raw[:4096])
    if match is None:
        return None
    try:
        name = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
    # As browsers read them: Latin-1 and ASCII labels mean Windows-1252, and a page that
    # declares UTF-16 or UTF-32 in its own (ASCII) bytes is not in either.
    if name in ("latin-1", "iso8859-1", "ascii"):
        return "cp1252"
    if name.startswith(("utf-16", "utf-32")):
        return "utf-8"
    return name


def _utf8_with_stray_bytes(raw: bytes) -> str | None:
    """UTF-8 text with a few bytes that are not UTF-8 (a pasted Latin-1 "©"), each read as
    U+FFFD; None when the bytes read better in a legacy encoding (few valid UTF-8 letters)."""
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 127 and ch != "\ufffd")
    return text if good > bad else None


def _read_text(path: Path, source: str, html: bool = False) -> str:
    """The file's text: UTF-8, or UTF-16/32 with a byte-order mark; else, for HTML, the
    encoding its meta tag declares; else UTF-8 with a few stray bytes replaced, or
    Windows-1252. Binary data is refused rather than indexed."""
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
            declared = declared_charset(raw) if html else None
            if declared is not None and declared != "utf-8":
                text = raw.decode(declared, errors="replace")
            else:
                # The five bytes Windows-1252 leaves undefined become U+FFFD, not controls.
                text = _utf8_with_stray_bytes(raw) or raw.decode("cp1252", errors="replace")
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


# A Markdown heading of level 1 to 3 ("#" to "###", up to three spaces of indent, a space after
# the marks, closing marks left out); deeper ones are read as text.
HEADING_RE = re.compile(r"^ {0,3}(#{1,3})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT_TITLE_RE = re.compile(r"^ {0,3}=+[ \t]*$")
# YAML front matter: a block between "---" lines at the very start of a Markdown file.
FRONT_MATTER_RE = re.compile(
    r"\A---[ \t]*\r?\n(.*?\r?\n)?(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL
)
# Front matter is a few fields: more than this is no front matter (and YAML nested thousands
# deep would exhaust the parser's stack).
MAX_FRONT_MATTER_CHARS = 20_000


def _first_heading(text: str) -> str:
    """The first level-1 heading ("# Title", or "Title" underlined with "="), not one inside
    a code block (a shell comment)."""
    fences = CodeFences(DOCUMENT_FENCE_LINE_RE)
    previous = ""
    for line in text.splitlines():
        if fences.feed(line) or fences.open:
            previous = ""
            continue
        match = HEADING_RE.match(line)
        if match and len(match.group(1)) == 1 and match.group(2).strip():
            return match.group(2).strip()
        if previous.strip() and SETEXT_TITLE_RE.match(line):
            return previous.strip()
        previous = line
    return ""


def front_matter(text: str) -> tuple[dict, str]:
    """A Markdown file's YAML front matter (its fields, or {} if it has none) and the text
    after it. A first block that is not a YAML mapping is left in the text."""
    match = FRONT_MATTER_RE.match(text)
    if match is None or match.end() > MAX_FRONT_MATTER_CHARS:
        return {}, text
    try:
        fields = yaml.safe_load(match.group(1) or "")
    except (yaml.YAMLError, RecursionError):
        return {}, text
    if not isinstance(fields, dict):
        return {}, text
    return fields, text[match.end() :]


def _load_markdown(path: Path, source: str, snippets: bool) -> tuple[str, str, str]:
    fields, raw = front_matter(_read_text(path, source))
    try:
        text = expand_macros(raw, path) if snippets else render_ui_macros(resolve_includes(raw, []))
    except IncludeError as exc:
        raise DocumentError(source, f"the document's includes are too large: {exc}") from exc
    text = LINK_RE.sub(lambda m: m.group(1), _hidden_removed(text))
    title = fields.get("title")
    title = " ".join(title.split()) if isinstance(title, str) else ""
    return title or _first_heading(text), text, "markdown"


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

    soup = BeautifulSoup(_read_text(path, source, html=True), "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "footer", "template"]):
        tag.decompose()
    for tag in soup(role=PAGE_FURNITURE_ROLES):
        tag.decompose()
    for tag in soup("form"):
        # A search box or "Was this article helpful?"; some sites wrap the whole page in one
        # form, which stays.
        if tag.find(ARTICLE_PARTS) is None and len(tag("p", limit=3)) < 3:
            tag.decompose()
    for tag in soup("br"):
        tag.replace_with(HTML_BREAK)
    title = _html_line(soup.title.get_text(" ")) if soup.title else ""
    # A page that marks its article (<main>, or one <article>) is read from there: the site's
    # header, breadcrumbs and side panels around it are not the article.
    mains = soup("main") or soup("article")
    root = mains[0] if len(mains) == 1 else soup.body or soup
    if root is soup.body or root is soup:
        # The site's banner and side panels, outside any section of the article: a header or
        # aside with a heading of its own (a step's title, a note's) is the article's.
        for tag in soup(["header", "aside"]):
            if tag.find_parent(["section", "article", "main"]) is None and (
                tag.find(HTML_HEADINGS) is None or tag.name == "aside"
            ):
                tag.decompose()
    heading = root.find("h1")
    if heading is not None:
        # "Pair a bulb – Lumora Help Center": the article's own heading, without the site.
        first = _html_line(heading.get_text(" ")).replace("\n", " ")
        if first and title.startswith(first) and title != first:
            title = first
    lines: list[str] = []
    for block in _outer_blocks(root):
        if isinstance(block, list):  # text straight inside a <div>, with its inline elements
            name, text = "", _html_line(" ".join(_node_text(node) for node in block))
        elif block.name == "pre":
            lines.append(_fenced(block.get_text().replace(HTML_BREAK, "\n").strip("\n")))
            continue
        else:
            name, text = block.name, _html_line(block.get_text(" "))
        if not text:
            continue
        if name in HTML_HEADINGS:
            lines.append("#" * int(name[1]) + " " + text.replace("\n", " "))
        elif name == "li":
            lines.append("- " + text)
        else:
            lines.append(text)
    text = "\n\n".join(lines)
    return title or _first_heading(text), text, "html"


def _node_text(node) -> str:
    from bs4 import Tag

    return node.get_text(" ") if isinstance(node, Tag) else str(node)


def _html_line(text: str) -> str:
    """Text as a browser shows it: the source's runs of spaces and line breaks folded into one
    space (a no-break space stays), a <br> a line break."""
    lines = HTML_SPACES_RE.sub(" ", text).split(HTML_BREAK)
    return "\n".join(line.strip(" ") for line in lines).strip("\n")


def _fenced(code: str) -> str:
    """A <pre> block as Markdown code, its lines and indentation kept."""
    if not code.strip():
        return ""
    longest = max((len(run) for run in re.findall(r"`{3,}", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{code}\n{fence}"


def _outer_blocks(root) -> list:
    """The blocks of a page in document order: block elements (paragraphs, headings, list
    items, cells) not inside another (a <p> inside an <li> is already part of the item's text),
    and, as lists of nodes, runs of text and inline elements written straight into another
    element (a <div>'s own text). One walk over the tree, without descending into a block, so
    that unclosed tags nested thousands deep (which html.parser keeps as written) cost linear
    time."""
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString

    blocks: list = []
    run: list = []
    end_of_container = object()

    def flush() -> None:
        if any(_node_text(node).strip() for node in run):
            blocks.append(list(run))
        run.clear()

    stack: list = list(reversed(root.contents))
    while stack:
        node = stack.pop()
        if node is end_of_container:
            flush()
        elif isinstance(node, PreformattedString):
            continue  # comments, doctypes, processing instructions
        elif isinstance(node, NavigableString):
            run.append(node)
        elif not isinstance(node, Tag):
            continue
        elif node.name in HTML_BLOCKS:
            flush()
            blocks.append(node)
        elif node.name in HTML_INLINE and node.find(HTML_BLOCKS) is None:
            run.append(node)
        else:
            flush()
            stack.append(end_of_container)
            stack.extend(reversed(node.contents))
    flush()
    return blocks


# Typographic ligatures (U+FB00 to U+FB06) that PDFs often hold instead of their letters.
LIGATURES = {cp: unicodedata.normalize("NFKC", chr(cp)) for cp in range(0xFB00, 0xFB07)}
# Titles that tools write into a file's properties on their own, which say nothing of it.
PLACEHOLDER_TITLE_RE = re.compile(
    r"^(?:untitled(?: document)?|document\s*\d*|presentation\s*\d*|powerpoint presentation"
    r"|slide\s*\d*|title|word document|\(?anonymous\)?)$",
    re.IGNORECASE,
)
# "Microsoft Word - manual_v3.docx": the printer driver's name for the file printed.
PRINTED_FROM_RE = re.compile(r"^Microsoft (?:Word|PowerPoint|Excel) - ", re.IGNORECASE)
FILE_NAME_RE = re.compile(r"^\S+\.(?:docx?|pdf|pptx?|xlsx?|rtf|odt|txt|html?)$", re.IGNORECASE)


def metadata_title(title: str) -> str:
    """A PDF's or Word file's title property, unless a tool wrote it rather than an author
    ("Untitled", "PowerPoint Presentation", "Microsoft Word - manual.docx", a file name): then
    "", and the document's first heading or line is its title."""
    title = " ".join(title.split())
    if not title or PLACEHOLDER_TITLE_RE.match(title):
        return ""
    if PRINTED_FROM_RE.match(title) or FILE_NAME_RE.match(title):
        return ""
    return title


def _load_pdf(path: Path, source: str, max_pages: int) -> tuple[str, str, str]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = PdfReader(str(path))
        # A PDF protected only against editing opens with no password, as in any viewer
        # (pypdf has tried the empty one); one that needs a password to open is refused.
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(
                source, "the PDF needs a password to open; upload an unprotected copy"
            )
        pages = reader.pages
        if len(pages) > max_pages:
            raise DocumentError(
                source, f"the PDF has {len(pages)} pages, over the limit of {max_pages}"
            )
        texts = _pdf_page_texts(pages, source)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentError:
        raise
    except DependencyError as exc:
        raise DocumentError(
            source, f"the PDF's encryption cannot be read here; upload an unprotected copy ({exc})"
        ) from exc
    except OSError as exc:
        if exc.errno is not None:
            raise  # the file system's refusal ("Permission denied"), reported as for any file
        raise DocumentError(source, f"the PDF could not be read: it is damaged ({exc})") from exc
    # PyPdfError, not just PdfReadError: malformed files also raise LimitReachedError (a
    # self-referencing object) and ParseError, which are siblings of PdfReadError.
    except (PyPdfError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise DocumentError(
            source, f"the PDF could not be read: it is damaged or not a PDF ({exc})"
        ) from exc
    # "ﬁ" and "ﬂ" as two letters, as readers and the keyword search expect ("conﬁgure").
    pages = [t.strip() for t in without_running_lines(texts) if t.strip()]
    text = join_broken_words("\n\n".join(pages).translate(LIGATURES))
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return metadata_title(str(meta_title)) or first_line[:120], text, "pdf"


# A word broken at a line's end, a page's end too ("configu-" / "ration"): letters from the
# start of a word (so a long run of letters is tried once, not from each of its letters), a
# hyphen or soft hyphen, the line break (and a blank line between pages), and what follows.
BROKEN_WORD_RE = re.compile(
    r"(?<![^\W\d_])([^\W\d_]{1,80})([-\u2010\u00ad])[ \t]*\n[ \t]*(?:\n[ \t]*)?([^\W\d_]\w*)"
)
# Words as the document writes them elsewhere, hyphenated compounds as one word.
WRITTEN_WORD_RE = re.compile(r"[^\W\d_]+(?:[-\u2010][^\W\d_]+)*")
# What may stand before a word that starts there (anything else makes it part of a longer
# token: a link, an email address, "3rd-party", "customer's").
WORD_OPENERS = frozenset(' \t\n([{"“‘«')
# "pre- and post-2020", "short- or long-term": the hyphen stands for a word to come.
SUSPENDED_BEFORE = frozenset({"and", "or", "nor", "to", "versus", "vs"})


def join_broken_words(text: str) -> str:
    """``text`` with the words broken at line ends put together again, so that the keyword
    search and readers see "configuration", not "configu-" and "ration".

    The hyphen is kept where it belongs to the word: a compound the document writes with it
    elsewhere ("self-hosted"), unless it also writes the joined word; a break between two
    words of the document ("built-" / "in", "two-" / "factor": word processors, and
    typesetters too, break lines after a compound's own hyphen); the next part of a compound
    ("Wi-Fi-" / "enabled"); capitals before it ("USB-powered", "T-shirt"). A break before a
    capital ("Wi-" / "Fi"), a hyphen standing for a word to come ("pre-" / "and post-"), and
    links, addresses, file names and options ("lumora-" / "setup.exe") are left as they are.
    A break with a half that is no word of the document ("configu-" / "ration") is the
    typesetter's, and joined. Soft hyphens are dropped.
    """
    if "-" not in text and "\u2010" not in text and "\u00ad" not in text:
        return text
    # What the document writes elsewhere: the broken words themselves do not count.
    elsewhere = BROKEN_WORD_RE.sub(" ", text)
    written = {w.casefold().replace("\u2010", "-") for w in WRITTEN_WORD_RE.findall(elsewhere)}
    halves = {part for word in written for part in word.split("-")}

    def join(match: re.Match) -> str:
        left, mark, right = match.groups()
        if mark == "\u00ad":
            return left + right
        start, end = match.start(), match.end()
        before = text[start - 1] if start else " "
        after = text[end : end + 2]
        kept = f"{left}-{right}"
        if not right[0].islower() or right.casefold() in SUSPENDED_BEFORE:
            return match.group(0)
        if after[:1] in ("/", "@", "\\") or (after[:1] == "." and after[1:].isalnum()):
            return match.group(0)  # lumora-setup.exe, a link's path, an address
        if before in "-\u2010":
            return kept  # the next part of a compound: Wi-Fi-enabled, --no-cache
        if before not in WORD_OPENERS:
            return match.group(0)
        if left.isupper():
            return kept
        hyphenated, joined = kept.casefold(), (left + right).casefold()
        if joined in written and hyphenated not in written:
            return left + right
        if hyphenated in written or (left.casefold() in halves and right.casefold() in halves):
            return kept
        return left + right

    return BROKEN_WORD_RE.sub(join, text).replace("\u00ad", "")


# A line that stands first (or last), the same each time, on full pages (of at least
# RUNNING_LINE_PAGE_LINES lines) that make up this share of a PDF's pages with text, and at
# least RUNNING_LINE_MIN_PAGES of them, is the document's running header (or footer): "Lumora
# Hub 2 User Manual", "Lumora confidential". Short pages, such as a catalogue's or a slide
# deck's, are left as they are: on them a line that repeats ("Warranty: 2 years") is as likely
# the page's own. A header is read where it first stands (it often names the document), a
# footer where it last stands (so it does not come between a word broken at a page's end and
# its rest); the others are left out. Once those go, the next line in is looked at again, for
# headers of two lines.
RUNNING_LINE_SHARE = 0.6
RUNNING_LINE_MIN_PAGES = 3
RUNNING_LINE_PAGE_LINES = 8
RUNNING_LINE_ROUNDS = 2
# A running line is short, and no sentence ("Then restart the hub." is the page's own text; a
# sentence has RUNNING_LINE_SENTENCE_WORDS words or more, "Lumora Inc." is none), unless it is
# a copyright notice ("© 2026 Lumora Inc. All rights reserved.").
RUNNING_LINE_MAX_WORDS = 12
RUNNING_LINE_SENTENCE_WORDS = 3
COPYRIGHT_RE = re.compile(r"©|\(c\)|\bcopyright\b|\brights reserved\b", re.IGNORECASE)
# A line that is only a page number ("3", "- 3 -", "Page 3 of 40", "3/40"), among the first or
# last PAGE_NUMBER_DEPTH lines of a page. Page numbers are left out when as many pages as for a
# running line have one that counts up with the pages (so "0000" near a page's end, or a step
# number, is not one).
PAGE_NUMBER_RE = re.compile(
    r"[\s\-–—(\[]*(?:(?:page|p\.)\s*)?(\d{1,5})(?:\s*(?:of|/)\s*\d{1,5})?[\s\-–—)\]]*",
    re.IGNORECASE,
)
PAGE_NUMBER_DEPTH = 2


def _may_run(line: str) -> bool:
    """Whether a line repeated at the pages' tops or bottoms may be a running header or footer."""
    if len(line.split()) > RUNNING_LINE_MAX_WORDS:
        return False
    ends = line.rstrip("\"')\u201d\u2019 ").endswith((".", "!", "?"))
    sentence = ends and len(line.split()) >= RUNNING_LINE_SENTENCE_WORDS
    return not sentence or bool(COPYRIGHT_RE.search(line))


def without_running_lines(pages: list[str]) -> list[str]:
    """The pages' texts without their page numbers and without the running header and footer
    lines repeated at their tops and bottoms, each of those read once (see
    RUNNING_LINE_SHARE). Lines in the middle of a page, and lines that differ from page to page,
    are never left out."""
    lines = [page.split("\n") for page in pages]
    dropped: list[set[int]] = [set() for _ in pages]
    kept: list[set[int]] = [set() for _ in pages]  # running lines read where they stand

    def filled(number: int) -> list[int]:
        return [
            n
            for n, line in enumerate(lines[number])
            if line.strip() and n not in dropped[number] and n not in kept[number]
        ]

    with_text = sum(1 for number in range(len(pages)) if filled(number))
    if with_text < RUNNING_LINE_MIN_PAGES:
        return pages
    needed = max(RUNNING_LINE_MIN_PAGES, RUNNING_LINE_SHARE * with_text)
    full = [n for n in range(len(pages)) if len(filled(n)) >= RUNNING_LINE_PAGE_LINES]

    # Page numbers: the offset between a number and the page's place that most pages share.
    offsets: dict[int, list[tuple[int, int]]] = {}
    for number in range(len(pages)):
        present = filled(number)
        for n in dict.fromkeys(present[:PAGE_NUMBER_DEPTH] + present[-PAGE_NUMBER_DEPTH:]):
            found = PAGE_NUMBER_RE.fullmatch(lines[number][n])
            if found:
                offsets.setdefault(int(found.group(1)) - number, []).append((number, n))
    for places in offsets.values():
        if len({number for number, _ in places}) >= needed:
            for number, n in places:
                dropped[number].add(n)

    for _ in range(RUNNING_LINE_ROUNDS):
        found_any = False
        for edge in (0, -1):
            seen: dict[str, list[tuple[int, int]]] = {}
            for number in full:
                present = filled(number)
                if present:
                    n = present[edge]
                    key = " ".join(lines[number][n].split()).casefold()
                    seen.setdefault(key, []).append((number, n))
            for key, places in seen.items():
                if len(places) < needed or not _may_run(key):
                    continue
                found_any = True
                for at, (number, n) in enumerate(places):
                    read = at == (0 if edge == 0 else len(places) - 1)
                    (kept if read else dropped)[number].add(n)
        if not found_any:
            break
    if not any(dropped):
        return pages
    return [
        "\n".join(line for n, line in enumerate(page) if n not in dropped[number])
        for number, page in enumerate(lines)
    ]


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


def _docx_blocks(parent, names: tuple[str, ...] = ("w:p", "w:tbl")):
    """The children of ``parent`` (XML elements) named ``names`` (paragraphs and tables, a
    table's rows, a row's cells), in order, those inside content controls (``w:sdt``) too."""
    from docx.oxml.ns import qn

    tags = {qn(name) for name in names}
    for child in parent.iterchildren():
        if child.tag in tags:
            yield child
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _docx_blocks(content, names)


def docx_paragraph_text(p) -> str:
    """A paragraph's text as Word shows it: its runs, also those in tracked insertions,
    hyperlinks, fields and content controls, tabs and line breaks; a text box's paragraphs on
    lines of their own. Deleted text and the fallback copy of a drawing are left out."""
    from docx.oxml.ns import qn

    text_tag, breaks, tabs = qn("w:t"), (qn("w:br"), qn("w:cr")), (qn("w:tab"), qn("w:ptab"))
    no_break_hyphen, soft_hyphen, paragraph = qn("w:noBreakHyphen"), qn("w:softHyphen"), qn("w:p")
    # Deleted text, and a moved passage's old place (its new one is read).
    skipped = (qn("w:del"), qn("w:moveFrom"), qn("w:rPr"), qn("w:pPr"))
    fallback = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
    parts: list[str] = []
    stack = list(reversed(list(p.iterchildren())))
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            parts.append(node)
            continue
        tag = node.tag
        if not isinstance(tag, str) or tag in skipped or tag == fallback:
            continue
        if tag == text_tag:
            parts.append(node.text or "")
        elif tag in tabs:
            parts.append("\t")
        elif tag == no_break_hyphen:
            parts.append("-")
        elif tag == soft_hyphen:
            continue  # a place a word may be hyphenated, shown only at a line's end
        elif tag in breaks:
            parts.append("\n")
        else:
            children = list(reversed(list(node.iterchildren())))
            # A text box's paragraph is a line of its own.
            stack.extend(["\n", *children, "\n"] if tag == paragraph else children)
    return "".join(parts)


def _docx_list_item(paragraph) -> bool:
    """A list style ("List Bullet", "List Number 2", "List Paragraph"), or numbering of its own
    (Google Docs' exports number Normal paragraphs)."""
    if _docx_style_name(paragraph.style).startswith("List"):
        return True
    properties = paragraph._p.pPr
    return properties is not None and properties.numPr is not None


def _docx_style_name(style) -> str:
    return ((style.name if style is not None else "") or "").strip()


def _docx_heading_level(style) -> int:
    """1 to 6 for a title or heading style, or one based on it (a company's "Manual Heading"
    built on Heading 1); else 0."""
    for _ in range(4):  # a style and the styles it is based on
        name = _docx_style_name(style)
        if name == "Title":
            return 1
        if match := re.fullmatch(r"Heading ([1-6])", name):
            return int(match.group(1))
        style = getattr(style, "base_style", None)
        if style is None:
            return 0
    return 0


def _docx_table_rows(tbl) -> list[str]:
    """One line per row of a table (its XML element), its cells joined by " | ", so that a
    row's cells stay together ("Orbit speaker | 2 years"). Read from the XML itself: a cell
    merged down over several rows is read once, on its first row (python-docx's ``row.cells``
    repeats it on every row, which a crafted file can turn into gigabytes of text), and a
    table inside a cell is read after its row."""
    from docx.oxml.ns import qn

    lines = []
    for tr in _docx_blocks(tbl, ("w:tr",)):
        cells, inner = [], []
        for tc in _docx_blocks(tr, ("w:tc",)):
            merge = tc.find(f"{qn('w:tcPr')}/{qn('w:vMerge')}")
            if merge is not None and merge.get(qn("w:val")) in (None, "continue"):
                continue  # the rest of a cell merged down from the row above
            texts = []
            for block in _docx_blocks(tc):
                if block.tag == qn("w:tbl"):
                    inner.append(block)
                elif text := " ".join(docx_paragraph_text(block).split()):
                    texts.append(text)
            if texts:
                cells.append(" ".join(texts))
        if cells:
            lines.append(" | ".join(cells))
        for table in inner:
            lines.extend(_docx_table_rows(table))
    return lines


def _docx_lines(document) -> list[str]:
    """A Word document's paragraphs and tables in the order they stand (a price list, a
    warranty table), those inside content controls too, as Markdown-like lines."""
    from docx.oxml.ns import qn
    from docx.text.paragraph import Paragraph

    lines: list[str] = []
    for element in _docx_blocks(document.element.body):
        if element.tag == qn("w:tbl"):
            lines.extend(_docx_table_rows(element))
            continue
        text = docx_paragraph_text(element).strip()
        if not text:
            continue
        paragraph = Paragraph(element, document._body)
        level = _docx_heading_level(paragraph.style)
        if level:
            lines.append("#" * level + " " + " ".join(text.split()))
        elif _docx_list_item(paragraph):
            lines.append("- " + text)  # an item, as HTML's <li> is read
        else:
            lines.append(text)
    return lines


def _load_docx(path: Path, source: str) -> tuple[str, str, str]:
    import zipfile

    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError
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
    try:
        lines = _docx_lines(document)
    except RecursionError:
        raise DocumentError(
            source, "the DOCX file nests tables or content controls too deeply to be read"
        ) from None
    title = metadata_title(document.core_properties.title or "")
    text = "\n\n".join(lines)
    return title or _first_heading(text), text, "docx"
