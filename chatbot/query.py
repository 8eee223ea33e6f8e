"""The search query for one turn: the question, read with the previous turn when there is one.

Rewriting a follow-up with the model would add a whole model call before the first token, so the
standalone query is built from the conversation itself. The previous customer message carries the
subject that a follow-up leaves out ("that one", "it"): its embedding joins the question's at a
lower weight, so a follow-up that changes the subject still finds its own article. The previous
answer adds its words to the keyword search only.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatbot.history import Turn
from knowledge.retriever import WeightedQuery


def search_queries(
    question: str, history: Sequence[Turn], history_weight: float
) -> list[WeightedQuery]:
    queries = [WeightedQuery(question.strip(), 1.0)]
    previous_user = next((t.content for t in reversed(history) if t.role == "user"), "")
    answer = next((t for t in reversed(history) if t.role == "assistant"), None)
    if previous_user.strip():
        queries.append(WeightedQuery(previous_user.strip(), history_weight, earlier=True))
    if answer is not None and answer.content.strip():
        # An answer to an older message than the last showed nothing in reply to it.
        replied = bool(history) and history[-1].role == "assistant"
        shown = answer.sources if replied or answer.sources is None else ()
        queries.append(WeightedQuery(answer.content.strip(), 0.0, earlier=True, shown=shown))
    return queries


def standalone_query(queries: Sequence[WeightedQuery]) -> str:
    """What was searched, as staff see it: the question first, then the context it was read with."""
    return " | ".join(q.text for q in queries)
