"""Text shown as Markdown on the Gradio pages: no raw HTML and no image that loads anything."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from ui.gradio_app import safe_markdown

IMAGES = {
    "inline": "see ![the hub](http://tracker.example/a.png)",
    "brackets in the alt text": "see ![a[b]](http://tracker.example/a.png)",
    "reference": "see ![hub][r]\n\n[r]: http://tracker.example/a.png",
    "shortcut reference": "see ![r]\n\n[r]: http://tracker.example/a.png",
    "raw html": 'see <img src="http://tracker.example/a.png">',
}


def _render(text: str) -> str:
    return MarkdownIt("commonmark").render(text)


@pytest.mark.parametrize("text", IMAGES.values(), ids=IMAGES.keys())
def test_no_image_survives(text):
    assert "<img" in _render(text), "the unescaped text does show an image"

    shown = _render(safe_markdown(text))

    assert "<img" not in shown
    assert "see" in shown


@pytest.mark.parametrize("text", IMAGES.values(), ids=IMAGES.keys())
def test_escaping_twice_changes_nothing(text):
    once = safe_markdown(text)
    assert safe_markdown(once) == once


def test_links_and_ordinary_text_are_kept():
    text = "Hold **Reset** for 10 s, see [the guide](https://help.example.com/reset)! [1]"
    assert safe_markdown(text) == text
