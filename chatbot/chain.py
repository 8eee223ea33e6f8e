"""The LangChain answer chain: system prompt with policy, memory and quoted sources; turns; question."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda

from chatbot.prompts import SYSTEM_PROMPT
from chatbot.tokens import defuse_control_tokens


def _defused(value: ChatPromptValue) -> ChatPromptValue:
    """The messages with any chat-template control token in their text made plain text."""
    return ChatPromptValue(
        messages=[
            m.model_copy(update={"content": defuse_control_tokens(m.content)})
            if isinstance(m.content, str)
            else m
            for m in value.messages
        ]
    )


def build_prompt() -> Runnable:
    """``{"policy", "memory", "context", "history", "question", "reminder"}`` in, messages out.

    ``reminder`` (empty unless given) follows the question: small and verbose models heed a
    length limit stated last far better than one stated only in the system prompt.
    """
    template = ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM_PROMPT),
            MessagesPlaceholder("history"),
            ("human", "{question}{reminder}"),
        ]
    ).partial(reminder="")
    return template | RunnableLambda(_defused)


def build_answer_chain(model: BaseChatModel, **call_options) -> Runnable:
    """The prompt piped into the model, with per-call options such as max_tokens bound."""
    return build_prompt() | (model.bind(**call_options) if call_options else model)
