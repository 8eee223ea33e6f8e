"""The LangChain answer chain: system prompt with quoted sources, recent turns, the question."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable

from chatbot.prompts import SYSTEM_PROMPT


def build_answer_chain(model: BaseChatModel) -> Runnable:
    """``{"context", "history", "question", "max_words"}`` in, streamed AIMessageChunks out."""
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM_PROMPT),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    return prompt | model
