"""Response-length policy: per-channel targets, the prompt instruction, and a clean cut at max_tokens.

Three layers keep answers short: the instruction in the system prompt, ``max_tokens`` on the
request, and ``SentenceCutter``, which, when the model runs into ``max_tokens``, ends the answer at
the last complete sentence or list item instead of mid-word and says that more is available.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.fences import CodeFences

DEFAULT_STYLE = (
    "Answer first, in plain words. No greeting, no preamble, no restating the question, "
    "no sign-off. Use numbered steps only for procedures. If more could be said, stop and offer "
    "more detail instead of writing it."
)

# Where an answer may end cleanly: after a sentence's closing punctuation (optionally followed by
# a closing quote, bracket, emphasis mark or citation like [2], " [2]" or [1, 2]) or at the end of
# a line outside a code block.
SENTENCE_END_RE = re.compile(r"[.!?…](?:[\"'”’»)\]*_~]|[ \t]?\[\d+(?:,[ \t]?\d+)*\])*(?=\s|\Z)")
# Full stops that end no sentence: a list number ("2.", also quoted as "> 2.") and common
# abbreviations ("e.g.").
NOT_SENTENCE_END_RE = re.compile(
    r"^\s*(?:>\s*)*[*_]*(?:step\s+)?\d+\.$|\b(?:e\.g|i\.e|vs|approx|incl|cf)\.$", re.I
)
# A line that only opens a list item (or a quote) and says nothing yet.
EMPTY_ITEM_RE = re.compile(r"^(?:>\s*)*(?:[-*+]|\d+[.)])?$")
# A full stop the next piece may still extend: "1." into "1.5", "e." into "e.g.".
MAYBE_UNFINISHED_RE = re.compile(r"(?:\d|\b\w)\.$")


@dataclass(frozen=True)
class LengthPolicy:
    """The policy applied to one answer."""

    channel: str
    target_words: int
    max_tokens: int
    style: str = DEFAULT_STYLE
    enabled: bool = True

    def instruction(self) -> str:
        if not self.enabled:
            return ""
        return f"{self.style} Keep the answer under {self.target_words} words."

    def reminder(self) -> str:
        """Appended to the customer's message in the prompt (never to the stored message)."""
        if not self.enabled:
            return ""
        return f"\n\n(Answer in under {self.target_words} words, from the sources only.)"


def safe_boundary(text: str, *, ended: bool = False) -> int:
    """Length of the longest prefix of ``text`` that ends a sentence, list item or code block.

    While the stream goes on (``ended`` false), punctuation at the very end of ``text`` does not
    count yet: the next piece may turn "1." into "1.5" or "e." into "e.g.". Once it has ended,
    it counts, except a full stop after a digit or a lone letter.
    """
    best = 0
    fences = CodeFences()
    position = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        complete_line = line.endswith("\n")
        was_open = fences.open
        if fences.feed(line):
            if was_open and not fences.open and (complete_line or ended):
                best = position + len(line)
        elif not fences.open:
            for match in SENTENCE_END_RE.finditer(line):
                prefix = line[: match.start() + 1]
                if NOT_SENTENCE_END_RE.search(prefix):
                    continue
                at_text_end = not complete_line and match.end() == len(line)
                if at_text_end and (not ended or MAYBE_UNFINISHED_RE.search(prefix)):
                    continue
                best = position + match.end()
            if complete_line and not EMPTY_ITEM_RE.match(stripped) and not stripped.endswith(":"):
                # A finished line outside code ends a list item, a heading or a paragraph; one
                # ending in a colon only announces what comes next, and a bare list number
                # ("5.") opens an item that never came, so neither ends anything.
                best = position + len(line)
        position += len(line)
    return best


def closing_fence(text: str) -> str:
    """What closes a code block ``text`` left open (nothing if none is open).

    A model may stop inside a code block; left open, the block would swallow whatever follows,
    a note included, and the answer would end mid-code. The closing fence repeats the opening
    one's indent, quote markers, character and length.
    """
    fences = CodeFences()
    for line in text.splitlines():
        fences.feed(line)
    if not fences.open:
        return ""
    closing = fences.prefix + fences.open
    return closing if text.endswith("\n") else "\n" + closing


class SentenceCutter:
    """Streams text through while holding back what a cut at max_tokens might have to remove.

    Far from the limit, text passes as it comes (only a trailing partial word waits). Within
    ``holdback_tokens`` of the limit, text waits until a sentence or list item is complete, so a
    truncated answer can end cleanly.
    """

    def __init__(self, max_tokens: int, holdback_tokens: int = 48):
        self.max_tokens = max_tokens
        self.holdback_tokens = holdback_tokens
        self.emitted = ""
        self.pending = ""
        self.tokens = 0

    def feed(self, delta: str) -> str:
        """Take one streamed piece (about one token); return the text that may be shown now."""
        self.tokens += 1
        self.pending += delta
        if self.tokens < self.max_tokens - self.holdback_tokens:
            cut = max(self.pending.rfind(" "), self.pending.rfind("\n")) + 1
        else:
            text = self.emitted + self.pending
            cut = max(0, safe_boundary(text) - len(self.emitted))
        return self._release(cut)

    def _release(self, length: int) -> str:
        out, self.pending = self.pending[:length], self.pending[length:]
        self.emitted += out
        return out

    def finish(self, truncated: bool) -> tuple[str, str, bool]:
        """End the stream: (text still to show, the final answer, whether it was cut)."""
        if not truncated:
            return self._release(len(self.pending)), self.emitted, False
        text = self.emitted + self.pending
        boundary = safe_boundary(text, ended=True)
        if boundary >= len(self.emitted):
            out = self._release(boundary - len(self.emitted))
            self.pending = ""
            return out, self.emitted.rstrip(), True
        # Text shown before the hold-back began has no clean end after it (a long sentence, a
        # long code block). It cannot be taken back, so the rest is shown too and the answer
        # stops where the model did: the stored answer never differs from the customer's screen.
        out = self._release(len(self.pending))
        return out, self.emitted.rstrip(), True
