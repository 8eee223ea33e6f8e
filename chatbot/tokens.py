"""Token counting without tiktoken: the local model's own tokenizer, or a conservative estimate.

``ChatOpenAI.get_num_tokens_from_messages`` downloads tiktoken files and fails for Phi model
names, so it is never used. The embedded llama.cpp server tokenizes exactly; for remote models a
characters-per-token estimate is used and corrected upwards by the ``usage`` the server reports.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import httpx
from langchain_core.messages import BaseMessage

log = logging.getLogger(__name__)

# Chat templates wrap every message in role markers; ChatML-style templates (SmolLM2, Phi) use
# about 4-7 tokens a message. 8 errs on the safe side.
MESSAGE_OVERHEAD_TOKENS = 8


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def observe(self, estimated: int, actual: int) -> None: ...


class EstimatingCounter:
    """``len(text) / chars_per_token``, rounded up; English averages about 4 characters a token.

    3.0 over-counts on purpose. ``observe`` lowers the ratio (raising counts) if a server ever
    reports more prompt tokens than estimated.
    """

    def __init__(self, chars_per_token: float = 3.0):
        self.chars_per_token = chars_per_token
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token) if text else 0

    def observe(self, estimated: int, actual: int) -> None:
        if estimated > 0 and actual > estimated:
            with self._lock:
                self.chars_per_token *= estimated / actual
                log.info("token estimate corrected to %.2f chars/token", self.chars_per_token)


class LlamaServerCounter:
    """Exact counts from the embedded llama.cpp server's tokenizer, cached per text."""

    def __init__(self, server_root: str, cache_size: int = 4096, timeout: float = 5.0):
        self._url = server_root.rstrip("/") + "/extras/tokenize/count"
        self._client = httpx.Client(timeout=timeout)
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._fallback = EstimatingCounter()
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        try:
            response = self._client.post(self._url, json={"input": text})
            response.raise_for_status()
            value = int(response.json()["count"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("tokenizer unavailable (%s); estimating", exc)
            return self._fallback.count(text)
        with self._lock:
            self._cache[text] = value
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def observe(self, estimated: int, actual: int) -> None:
        """Exact already."""


def count_messages(counter: TokenCounter, messages: Sequence[BaseMessage]) -> int:
    """Tokens of a prompt: every message's text plus its template overhead."""
    return sum(
        counter.count(m.content if isinstance(m.content, str) else str(m.content))
        + MESSAGE_OVERHEAD_TOKENS
        for m in messages
    )
