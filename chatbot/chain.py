"""The LangChain answer chain: system prompt with policy, memory and quoted sources; turns; question."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable

from chatbot.prompts import SYSTEM_PROMPT


def build_prompt() -> ChatPromptTemplate:
    """``{"policy", "memory", "context", "history", "question", "reminder"}`` in, messages out.

    ``reminder`` (empty unless given) follows the question: small and verbose models heed a
    length limit stated last far better than one stated only in the system prompt.
    """
    return ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM_PROMPT),
            MessagesPlaceholder("history"),
            ("human", "{question}{reminder}"),
        ]
    ).partial(reminder="")


def build_answer_chain(model: BaseChatModel, **call_options) -> Runnable:
    """The prompt piped into the model, with per-call options such as max_tokens bound."""
    return build_prompt() | (model.bind(**call_options) if call_options else model)
