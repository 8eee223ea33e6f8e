"""The SQLite conversation store: sessions, turns and summaries, across threads and reopening."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from chatbot.conversations import SQLiteConversationStore


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "data" / "conversations.sqlite3"


@pytest.fixture
def conversations(path) -> SQLiteConversationStore:
    return SQLiteConversationStore(path)


def test_a_new_session_starts_empty(conversations, path):
    session = conversations.create_session("widget")

    loaded = conversations.get_session(session.id)
    assert path.is_file(), "the folder and the file are created"
    assert loaded == session
    assert loaded.channel == "widget"
    assert (loaded.summary, loaded.facts, loaded.summarised_upto, loaded.summaries) == (
        "",
        [],
        0,
        0,
    )
    assert conversations.turns(session.id) == []


def test_session_ids_are_unique_and_unguessable(conversations):
    ids = {conversations.create_session("widget").id for _ in range(50)}

    assert len(ids) == 50
    assert all(len(i) >= 20 for i in ids)


def test_an_unknown_session_is_none(conversations):
    assert conversations.get_session("no-such-session") is None


def test_turns_come_back_in_order_with_their_counts_and_metadata(conversations):
    session = conversations.create_session("api")

    first = conversations.add_turn(session.id, "user", "My hub is offline.", 5, {"channel": "api"})
    second = conversations.add_turn(session.id, "assistant", "Unplug it [1].", 4, {"cut": False})

    turns = conversations.turns(session.id)
    assert turns == [first, second]
    assert first.id < second.id
    assert [(t.role, t.content, t.tokens) for t in turns] == [
        ("user", "My hub is offline.", 5),
        ("assistant", "Unplug it [1].", 4),
    ]
    assert turns[0].meta == {"channel": "api"}
    assert turns[1].meta == {"cut": False}
    assert conversations.get_session(session.id).updated_at >= session.updated_at


def test_turns_after_an_id_skip_the_earlier_ones(conversations):
    session = conversations.create_session("widget")
    added = [
        conversations.add_turn(session.id, role, f"message {n}", 2)
        for n, role in enumerate(["user", "assistant"] * 3)
    ]

    assert conversations.turns(session.id, after_id=added[1].id) == added[2:]
    assert conversations.turns(session.id, after_id=added[-1].id) == []


def test_sessions_do_not_see_each_others_turns(conversations):
    one = conversations.create_session("widget")
    other = conversations.create_session("widget")
    conversations.add_turn(one.id, "user", "only in one", 3)

    assert conversations.turns(other.id) == []
    assert [t.content for t in conversations.turns(one.id)] == ["only in one"]


def test_a_turn_needs_a_known_session_and_role(conversations):
    session = conversations.create_session("widget")
    with pytest.raises(sqlite3.IntegrityError):
        conversations.add_turn("no-such-session", "user", "hello", 1)
    with pytest.raises(sqlite3.IntegrityError):
        conversations.add_turn(session.id, "system", "hello", 1)


def test_save_summary_stores_it_and_counts_it(conversations):
    session = conversations.create_session("widget")
    turns = [conversations.add_turn(session.id, "user", f"message {n}", 2) for n in range(4)]

    conversations.save_summary(
        session.id, "Customer has a Hub 2.", 7, ["My order is 58213-LX."], turns[1].id
    )
    conversations.save_summary(
        session.id, "Customer has a Hub 2; bulbs blink.", 9, ["My order is 58213-LX."], turns[2].id
    )

    loaded = conversations.get_session(session.id)
    assert loaded.summary == "Customer has a Hub 2; bulbs blink."
    assert loaded.summary_tokens == 9
    assert loaded.facts == ["My order is 58213-LX."]
    assert loaded.summarised_upto == turns[2].id
    assert loaded.summaries == 2
    assert conversations.turns(session.id, after_id=loaded.summarised_upto) == turns[3:]


def test_everything_survives_reopening_the_file(conversations, path):
    session = conversations.create_session("staff")
    added = [
        conversations.add_turn(session.id, "user", "My order number is 58213-LX.", 8),
        conversations.add_turn(session.id, "assistant", "Thanks, I see it.", 5, {"cut": True}),
    ]
    conversations.save_summary(session.id, "Order 58213-LX.", 5, ["58213-LX"], added[0].id)

    reopened = SQLiteConversationStore(path)

    loaded = reopened.get_session(session.id)
    assert loaded.channel == "staff"
    assert (loaded.summary, loaded.facts, loaded.summarised_upto, loaded.summaries) == (
        "Order 58213-LX.",
        ["58213-LX"],
        added[0].id,
        1,
    )
    assert reopened.turns(session.id) == added
    later = reopened.add_turn(session.id, "user", "Is it shipped?", 4)
    assert later.id > added[-1].id
    assert conversations.turns(session.id)[-1] == later, "both objects see the same file"


def test_turns_added_from_many_threads_all_land(conversations):
    session = conversations.create_session("widget")
    threads_count, per_thread = 8, 25
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def add(worker: int) -> None:
        try:
            start.wait()
            for n in range(per_thread):
                conversations.add_turn(session.id, "user", f"worker {worker} message {n}", 4)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(w,)) for w in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    turns = conversations.turns(session.id)
    assert len(turns) == threads_count * per_thread
    assert len({t.id for t in turns}) == len(turns)
    assert [t.id for t in turns] == sorted(t.id for t in turns)
    for worker in range(threads_count):
        mine = [t.content for t in turns if t.content.startswith(f"worker {worker} ")]
        assert mine == [f"worker {worker} message {n}" for n in range(per_thread)]


def test_two_store_objects_on_one_file_can_write_at_once(path):
    first, second = SQLiteConversationStore(path), SQLiteConversationStore(path)
    session = first.create_session("widget")

    def add(store: SQLiteConversationStore, name: str) -> None:
        for n in range(20):
            store.add_turn(session.id, "user", f"{name} {n}", 2)

    threads = [
        threading.Thread(target=add, args=(first, "first")),
        threading.Thread(target=add, args=(second, "second")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(SQLiteConversationStore(path).turns(session.id)) == 40
