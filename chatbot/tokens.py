"""Token counting without tiktoken: the local model's own tokenizer, or a conservative estimate.

``ChatOpenAI.get_num_tokens_from_messages`` downloads tiktoken files and fails for Phi model
names, so it is never used. The local model's own tokenizer counts exactly; for remote models a
characters-per-token estimate is used and corrected upwards by the ``usage`` the server reports.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from langchain_core.messages import BaseMessage

log = logging.getLogger(__name__)

# Chat templates wrap every message in role markers; ChatML-style templates (SmolLM2, Phi) use
# about 4-7 tokens a message. 8 errs on the safe side.
MESSAGE_OVERHEAD_TOKENS = 8


# Chat-template control tokens: "<|im_end|>", "<|system|>", "<|eot_id|>" and the like, and the
# pipe-less ones of Llama 2, Mistral and Gemma. llama.cpp reads them in the rendered prompt as
# the tokens themselves, so in text a customer, a document or a model wrote they would end a turn
# and open a new one with any role. Defused, they stay readable but are plain text.
CONTROL_TOKEN_RE = re.compile(
    r"<\|([^|<>\s]{1,40})\|>|</?s>|<(?:start_of_turn|end_of_turn|bos|eos)>|\[/?INST\]"
)


def defuse_control_tokens(text: str) -> str:
    return CONTROL_TOKEN_RE.sub(
        lambda m: m.group(0).replace("<", "<\u2060").replace("[", "[\u2060"), text
    )


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def observe(self, estimated: int, actual: int) -> None: ...


# Each UTF-8 byte past a character's first counts as this many tokens more: byte-level tokenizers
# split a Chinese character (three bytes) into up to 2.4 tokens and an emoji (four) into up to
# 2.6, where one character's share of a token would under-count them five times over.
EXTRA_BYTE_TOKENS = 1.1


class EstimatingCounter:
    """``len(text) / chars_per_token``, rounded up, with characters outside ASCII weighted by
    their UTF-8 length; English averages about 4 characters a token.

    3.0 over-counts on purpose. ``observe`` lowers the ratio (raising counts) if a server ever
    reports more prompt tokens than estimated.
    """

    def __init__(self, chars_per_token: float = 3.0):
        self.chars_per_token = chars_per_token
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        text = defuse_control_tokens(text)  # counted as sent
        extra = len(text.encode("utf-8", "surrogatepass")) - len(text)
        return math.ceil(len(text) / self.chars_per_token + EXTRA_BYTE_TOKENS * extra)

    def observe(self, estimated: int, actual: int) -> None:
        if estimated > 0 and actual > estimated:
            with self._lock:
                self.chars_per_token *= estimated / actual
                log.info("token estimate corrected to %.2f chars/token", self.chars_per_token)


class LocalModelCounter:
    """Exact counts from the local GGUF model's own tokenizer, loaded in-process (vocabulary only).

    In-process rather than through the llama.cpp server: the server answers one request at a
    time, so a count would wait behind a running answer or summary.
    """

    def __init__(self, model_path: Path, cache_size: int = 4096):
        from llama_cpp import Llama

        _route_llama_logs()
        self._llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
            # Counted as sent: control tokens in the text reach the model defused.
            sent = defuse_control_tokens(text)
            value = len(self._llama.tokenize(sent.encode("utf-8"), add_bos=False, special=True))
            self._cache[text] = value
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def observe(self, estimated: int, actual: int) -> None:
        """Exact already."""

    def count_chat(self, messages: Sequence[dict]) -> int:
        """Tokens of a whole chat prompt as the llama.cpp server builds it: the GGUF's own chat
        template applied to ``[{"role", "content"}]``, template tokens included."""
        tokens = self.chat_tokens(messages)
        if tokens is None:
            return sum(self.count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        return len(tokens)

    def chat_tokens(self, messages: Sequence[dict]) -> list[int] | None:
        """The token ids the llama.cpp server makes of a chat (None without a chat template):
        the template applied, then read with control tokens recognised in the text."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        model = self._llama._model
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(self._llama.token_eos()),
            bos_token=model.token_get_text(self._llama.token_bos()),
        )
        prompt = formatter(messages=list(messages)).prompt
        with self._lock:
            return self._llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def control_token(self, text: str) -> int | None:
        """The id of a control token such as "<|im_start|>" (None if the text is no one token)."""
        with self._lock:
            ids = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None


def count_messages(counter: TokenCounter, messages: Sequence[BaseMessage]) -> int:
    """Tokens of a prompt: every message's text plus its template overhead."""
    return sum(
        counter.count(m.content if isinstance(m.content, str) else str(m.content))
        + MESSAGE_OVERHEAD_TOKENS
        for m in messages
    )


# llama.cpp's log levels: 1 debug, 2 info, 3 warning, 4 error, 5 continues the line before.
_LLAMA_ERROR = 4
_LLAMA_CONTINUED = 5
_llama_log_callback = None  # kept: llama.cpp calls it for as long as the process runs


def _route_llama_logs() -> None:
    """llama.cpp's messages go to this module's logger, errors as errors and the rest as debug.

    The bindings print them to stderr themselves, and their level table takes llama.cpp's
    warnings for errors: loading only a vocabulary prints "n_ctx_seq (512) > n_ctx_train (0)
    -- possible training context overflow", a warning about a context nothing here uses."""
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    import ctypes

    import llama_cpp

    last = [logging.DEBUG]  # a continued line keeps the level of the line it continues

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level != _LLAMA_CONTINUED:
            last[0] = logging.ERROR if level == _LLAMA_ERROR else logging.DEBUG
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            log.log(last[0], "llama.cpp: %s", line)

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _llama_log_callback = forward
