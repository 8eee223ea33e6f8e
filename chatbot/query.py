"""The search queries for one turn: the question, and the question read with the previous turn.

Rewriting a follow-up with the model would add a whole model call before the first token, so the
standalone query is built from the conversation itself: the previous customer message carries the
subject ("that one", "it") that a follow-up leaves out. Both texts are searched and fused, the
question weighing more, so a follow-up that changes the subject still finds its own article.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatbot.history import Turn
from knowledge.retriever import WeightedQuery


def search_queries(
    question: str, history: Sequence[Turn], history_weight: float
) -> list[WeightedQuery]:
    queries = [WeightedQuery(question.strip(), 1.0)]
    previous = next((t.content for t in reversed(history) if t.role == "user"), "")
    if previous and history_weight > 0:
        queries.append(WeightedQuery(f"{previous.strip()} {question.strip()}", history_weight))
    return queries


def standalone_query(queries: Sequence[WeightedQuery]) -> str:
    """The widest query text, shown to staff as 'what was searched'."""
    return queries[-1].text
