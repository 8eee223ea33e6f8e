"""Conversation turns as the chain and the CLI exchange them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    # For an answer from this service's own conversation store: the documents it cited, first
    # first (empty when it was handed off). None when not known (a history sent by a client).
    sources: tuple[str, ...] | None = None

    def to_message(self) -> BaseMessage:
        return HumanMessage(self.content) if self.role == "user" else AIMessage(self.content)


def turns_from_dicts(items: object) -> list[Turn]:
    """Validate a JSON list of ``{"role", "content"}`` objects."""
    if not isinstance(items, list):
        raise ValueError('history must be a JSON list of {"role", "content"} objects')
    turns = []
    for position, item in enumerate(items):
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise ValueError(f"history item {position} needs role 'user' or 'assistant'")
        if not isinstance(item.get("content"), str):
            raise ValueError(f"history item {position} needs a string 'content'")
        turns.append(Turn(item["role"], item["content"]))
    return turns


def load_history_file(path: Path) -> list[Turn]:
    try:
        return turns_from_dicts(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
