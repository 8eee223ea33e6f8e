"""Markdown code blocks, followed line by line.

A block opens with three or more backticks or tildes (an info string may follow, with no
backtick in it after backticks) and closes with a fence of the same character, at least as
long, with nothing after it.
"""

from __future__ import annotations

import re

# A fence line: its indent and quote markers, the fence, then the rest of the line. Any indent
# and quotes ("> ```"), as in a model's answer.
FENCE_LINE_RE = re.compile(r"^(\s*(?:>\s*)*)(`{3,}|~{3,})(.*)$")
# In a document, a fence is indented by at most three spaces (four make an indented code block).
DOCUMENT_FENCE_LINE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


class CodeFences:
    """``open`` is the fence of the open block, or ""; ``prefix`` is its indent and quotes."""

    def __init__(self, line_re: re.Pattern[str] = FENCE_LINE_RE) -> None:
        self.line_re = line_re
        self.open = ""
        self.prefix = ""

    def feed(self, line: str) -> bool:
        """Take one line; whether it is a fence that opens or closes a block."""
        match = self.line_re.match(line.rstrip("\n"))
        if match is None:
            return False
        prefix, fence, rest = match.groups()
        if not self.open:
            if fence[0] == "`" and "`" in rest:
                return False  # inline code such as ```npm install``` opens no block
            self.open, self.prefix = fence, prefix
            return True
        if fence[0] == self.open[0] and len(fence) >= len(self.open) and not rest.strip():
            self.open = self.prefix = ""
            return True
        return False
