"""Token counts from the local model's own tokenizer."""

from __future__ import annotations

import logging

from chatbot.local_server import default_gguf_path
from chatbot.tokens import LocalModelCounter


def test_the_local_tokenizer_loads_quietly_and_counts_exactly(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="chatbot.tokens"):
        counter = LocalModelCounter(default_gguf_path())
        count = counter.count("hello world")

    # llama.cpp's warning about the context of a vocabulary-only load is the log's, not stderr's.
    assert "n_ctx_train" not in capfd.readouterr().err
    assert any("llama.cpp:" in r.getMessage() for r in caplog.records)
    assert count == 2  # SmolLM2's tokenizer: "hello", " world"
    assert counter.count("") == 0
