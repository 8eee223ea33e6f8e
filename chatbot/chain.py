"""The LangChain answer chain: system prompt with policy, memory and quoted sources; turns; question."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable

from chatbot.prompts import SYSTEM_PROMPT


def build_prompt() -> ChatPromptTemplate:
    """``{"policy", "memory", "context", "history", "question"}`` in, chat messages out."""
    return ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM_PROMPT),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )


def build_answer_chain(model: BaseChatModel, **call_options) -> Runnable:
    """The prompt piped into the model, with per-call options such as max_tokens bound."""
    return build_prompt() | (model.bind(**call_options) if call_options else model)
