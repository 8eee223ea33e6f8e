"""Help-center Markdown macros: include snippets and turn UI rendering macros into plain prose.

Help centers written for static-site generators (Zulip's among them) pull shared snippets in with
``{!name.md!}`` and mark UI tabs and settings links with ``{tab|...}``, ``{settings_tab|...}`` and
``{relative|...}``. Left raw, those lines are noise to a retriever and to the model.
"""

from __future__ import annotations

import re
from pathlib import Path

INCLUDE_RE = re.compile(r"\{!([\w./-]+?\.md)!\}")
TAB_RE = re.compile(r"^\{tab\|([\w-]+)\}\s*$", re.MULTILINE)
SETTINGS_TAB_RE = re.compile(r"\{settings_tab\|([\w-]+)\}")
RELATIVE_RE = re.compile(r"\{relative\|([\w-]+)\|([\w-]+)\}")
TAB_FENCE_RE = re.compile(r"^\{(start_tabs|end_tabs)\}\s*$", re.MULTILINE)

MAX_INCLUDE_DEPTH = 8
# A document's snippets, all told: enough for any help article, far from what a snippet that
# includes itself many times over would make of it.
MAX_INCLUDES = 2000
MAX_INCLUDED_CHARS = 5_000_000
INCLUDE_DIR_NAMES = ("include", "_include", "_includes", "includes")


class IncludeError(ValueError):
    """A document's snippets add up to too much text."""


def _words(slug: str) -> str:
    return slug.replace("-", " ").replace("_", " ").strip()


def _tab_label(slug: str) -> str:
    return _words(slug).capitalize().replace("Desktop web", "Desktop and web app")


def include_search_dirs(path: Path) -> list[Path]:
    """Folders in which ``{!name.md!}`` snippets of the document at ``path`` are looked up."""
    dirs: list[Path] = []
    for parent in [path.parent, *path.parent.parents][:3]:
        dirs.extend(parent / name for name in INCLUDE_DIR_NAMES)
    dirs.append(path.parent)
    return [d for d in dirs if d.is_dir()]


def resolve_includes(text: str, search_dirs: list[Path]) -> str:
    """Replace every ``{!name.md!}`` by the snippet's text; unknown snippets are dropped, and
    so is a snippet's include of itself (directly or through others).

    Raises IncludeError when the snippets add up to more than ``MAX_INCLUDES`` includes or
    ``MAX_INCLUDED_CHARS`` characters."""
    return _Includes(search_dirs).resolve(text, ())


class _Includes:
    def __init__(self, search_dirs: list[Path]):
        self.search_dirs = search_dirs
        self.texts: dict[Path, str] = {}  # each snippet is read once
        self.count = 0
        self.chars = 0

    def resolve(self, text: str, within: tuple[Path, ...]) -> str:
        if len(within) >= MAX_INCLUDE_DEPTH:
            return INCLUDE_RE.sub("", text)
        return INCLUDE_RE.sub(lambda match: self._snippet(match.group(1), within), text)

    def _snippet(self, name: str, within: tuple[Path, ...]) -> str:
        path = self._find(name)
        if path is None or path in within:
            return ""
        self.count += 1
        if self.count > MAX_INCLUDES:
            raise IncludeError(f"it includes more than {MAX_INCLUDES:,} snippets")
        if path not in self.texts:
            if path.stat().st_size > MAX_INCLUDED_CHARS * 4:
                raise IncludeError(f"the snippet '{name}' is larger than a document may be")
            self.texts[path] = path.read_text(encoding="utf-8", errors="replace").strip()
        text = self.resolve(self.texts[path], (*within, path))
        self.chars += len(text)
        if self.chars > MAX_INCLUDED_CHARS:
            raise IncludeError(
                f"its snippets add up to more than {MAX_INCLUDED_CHARS:,} characters"
            )
        return text

    def _find(self, name: str) -> Path | None:
        for folder in self.search_dirs:
            candidate = (folder / name).resolve()
            if candidate.is_file() and folder.resolve() in candidate.parents:
                return candidate
        return None


def render_ui_macros(text: str) -> str:
    """Turn tab and settings macros into short prose a reader (and a retriever) understands."""
    text = TAB_FENCE_RE.sub("", text)
    text = TAB_RE.sub(lambda m: f"**{_tab_label(m.group(1))}:**", text)
    text = SETTINGS_TAB_RE.sub(
        lambda m: f"Go to the **{_words(m.group(1)).capitalize()}** tab of the settings.", text
    )
    text = RELATIVE_RE.sub(lambda m: f"Go to **{_words(m.group(2)).capitalize()}**.", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def expand_macros(text: str, path: Path) -> str:
    """Resolve includes, then render UI macros, for the document stored at ``path``."""
    return render_ui_macros(resolve_includes(text, include_search_dirs(path)))


# Inline HTML that help-center Markdown uses for keys, icons, images and links. Only these tag
# names, written as HTML (attributes with values), are touched: "<subdomain>" in
# "https://<subdomain>.zulipchat.com" and "<b and c>" are text, and so is all code.
_ATTRIBUTES = r"""(?:\s+[\w:-]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>=`]+))*\s*"""
_ICON_RE = re.compile(rf"<i{_ATTRIBUTES}>\s*</i>|<i{_ATTRIBUTES}/>", re.IGNORECASE)
_IMG_RE = re.compile(rf"<img{_ATTRIBUTES}/?>", re.IGNORECASE)
_LINK_RE = re.compile(rf"<a({_ATTRIBUTES})>(.*?)</a>", re.IGNORECASE | re.DOTALL)
_ALT_RE = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_HREF_RE = re.compile(r"""\bhref\s*=\s*(?:"(https?://[^"]*)"|'(https?://[^']*)')""", re.IGNORECASE)
_BREAK_RE = re.compile(rf"<br{_ATTRIBUTES}/?>", re.IGNORECASE)
_TAG_RE = re.compile(
    rf"</?(?:kbd|span|div|b|strong|em|code|p|sup|sub|u|small|mark){_ATTRIBUTES}/?>", re.IGNORECASE
)
_CODE_RE = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)", re.DOTALL)
# Where an icon or an image without alt text was: "(<i ...></i>)" goes with its brackets, and
# "the <i ...></i> icon" keeps one space.
_HOLE = "\x00"
_HOLE_IN_BRACKETS_RE = re.compile(rf"[ \t]*\(\s*{_HOLE}+\s*\)")
_HOLE_RE = re.compile(rf"([ \t]?){_HOLE}+([ \t]?)")


def readable(text: str) -> str:
    """``text`` as its reader sees it: keys without ``<kbd>``, icons and tags gone, images by
    their alt text, links by their text and web address ("Press <kbd>Enter</kbd>" becomes
    "Press Enter"). Code, fenced or inline, is left as it is.

    For what the model and the customer read (quoted sources, snippets); the search indexes
    keep the text as written.
    """
    if "<" not in text:
        return text
    parts = _CODE_RE.split(text.replace(_HOLE, ""))
    # split() with one group: prose at even places, code at odd ones.
    return "".join(part if i % 2 else _readable_prose(part) for i, part in enumerate(parts))


def _readable_prose(text: str) -> str:
    if "<" not in text:
        return text
    text = _ICON_RE.sub(_HOLE, text)
    text = _IMG_RE.sub(lambda m: _attribute(_ALT_RE, m.group(0)) or _HOLE, text)
    text = _LINK_RE.sub(_link_text, text)
    text = _BREAK_RE.sub("\n", text)
    text = _TAG_RE.sub("", text)
    if _HOLE in text:
        text = _HOLE_IN_BRACKETS_RE.sub("", text)
        text = _HOLE_RE.sub(lambda m: " " if m.group(1) and m.group(2) else "", text)
    return text


def _attribute(pattern: re.Pattern, tag: str) -> str:
    found = pattern.search(tag)
    return (found.group(1) or found.group(2) or "") if found else ""


def _link_text(match: re.Match) -> str:
    label = _TAG_RE.sub("", match.group(2)).strip()
    address = _attribute(_HREF_RE, match.group(1))
    if not address or address == label:
        return label or address
    return f"{label} ({address})" if label else address
