"""Staff accounts in a real SQLite file: roles, bcrypt passwords, sign-in limits, tokens, audit."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from chatbot.settings import AuthSettings
from chatbot.users import AccountError, Role, UserDirectory

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(tmp_path, clock) -> UserDirectory:
    return UserDirectory(tmp_path / "app.sqlite3", AuthSettings(bcrypt_rounds=4), clock=clock)


def test_passwords_are_stored_as_bcrypt_hashes_only(users):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")

    with sqlite3.connect(users.path) as db:
        stored = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$2b$") and PASSWORD not in stored
    user, token = users.sign_in("ana", PASSWORD, "1.2.3.4")
    assert user.role == Role.STAFF and users.session_user(token) == user


@pytest.mark.parametrize(
    "username, password, code",
    [
        ("ana", "short", "weak_password"),
        ("ana", "changethis", "weak_password"),
        ("ana", "x" * 80, "weak_password"),
        ("a", PASSWORD, "invalid_username"),
        ("ana smith", PASSWORD, "invalid_username"),
        ("straße", PASSWORD, "invalid_username"),
    ],
)
def test_bad_accounts_are_refused(users, username, password, code):
    with pytest.raises(AccountError) as refused:
        users.add_user(username, password, Role.STAFF, actor="test")

    assert refused.value.code == code and refused.value.message
    assert users.users() == []


def test_names_are_unique_and_roles_known(users):
    users.add_user("ana", PASSWORD, "staff", actor="test")

    with pytest.raises(AccountError, match="already exists"):
        users.add_user("ANA", PASSWORD, "staff", actor="test")
    with pytest.raises(AccountError, match="content_owner"):
        users.add_user("bo", PASSWORD, "owner", actor="test")


def test_roles_include_the_rights_of_lower_ones():
    assert Role.ADMIN.allows(Role.CONTENT_OWNER) and Role.ADMIN.allows(Role.STAFF)
    assert Role.CONTENT_OWNER.allows(Role.STAFF)
    assert not Role.STAFF.allows(Role.CONTENT_OWNER)
    assert not Role.CONTENT_OWNER.allows(Role.ADMIN)


def test_failed_sign_ins_are_limited_even_with_the_right_password_after(users, clock):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    for _ in range(users.settings.max_failed_signins):
        with pytest.raises(AccountError, match="Wrong user name or password"):
            users.sign_in("ana", "wrong password!", "1.2.3.4")

    with pytest.raises(AccountError) as limited:
        users.sign_in("ana", PASSWORD, "1.2.3.4")
    assert limited.value.code == "too_many_attempts" and limited.value.retry_after
    users.sign_in("ana", PASSWORD, "5.6.7.8")  # another address is not locked out
    clock.now += users.settings.signin_window_minutes * 60 + 1
    users.sign_in("ana", PASSWORD, "1.2.3.4")


def lock_out(users: UserDirectory, username: str) -> None:
    for _ in range(users.settings.max_failed_signins):
        with pytest.raises(AccountError, match="Wrong user name or password"):
            users.sign_in(username, "wrong password!", "1.2.3.4")
    with pytest.raises(AccountError, match="Too many failed sign-ins"):
        users.sign_in(username, PASSWORD, "1.2.3.4")


@pytest.mark.parametrize("where", ["same process", "another process"])
def test_a_password_reset_lifts_the_lockout_for_the_new_password(users, tmp_path, clock, where):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    lock_out(users, "ana")
    # The command line resets from a process of its own, on the same file.
    admin = (
        users
        if where == "same process"
        else UserDirectory(users.path, AuthSettings(bcrypt_rounds=4), clock=clock)
    )

    admin.set_password("ana", "a fresh passphrase", actor="admin")

    user, _ = users.sign_in("ana", "a fresh passphrase", "1.2.3.4")
    assert user.username == "ana"
    # Guessing goes on being counted against the new password.
    lock_out(users, "ana")
    with pytest.raises(AccountError, match="Too many failed sign-ins"):
        users.sign_in("ana", "a fresh passphrase", "1.2.3.4")


def test_a_user_removed_and_added_again_is_not_locked_out(users):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    users.add_user("root", PASSWORD, Role.ADMIN, actor="test")
    lock_out(users, "ana")

    users.remove("ana", actor="root")
    users.add_user("ana", "another passphrase", Role.STAFF, actor="root")

    assert users.sign_in("ana", "another passphrase", "1.2.3.4")[0].username == "ana"


def test_unknown_user_and_wrong_password_look_the_same(users):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")

    with pytest.raises(AccountError) as unknown:
        users.sign_in("nobody", PASSWORD, "1.2.3.4")
    with pytest.raises(AccountError) as wrong:
        users.sign_in("ana", "wrong password!", "1.2.3.4")
    assert unknown.value.message == wrong.value.message


def test_sign_ins_time_out_and_sign_out_ends_them(users, clock):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    _, token = users.sign_in("ana", PASSWORD, "1.2.3.4")
    _, other = users.sign_in("ana", PASSWORD, "1.2.3.4")

    clock.now += users.settings.session_idle_minutes * 60 - 5
    assert users.session_user(token) is not None  # activity keeps it alive
    clock.now += users.settings.session_idle_minutes * 60 + 5
    assert users.session_user(other) is None  # idle too long
    users.sign_out(token)
    assert users.session_user(token) is None


def test_a_password_reset_ends_existing_sign_ins(users):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    _, token = users.sign_in("ana", PASSWORD, "1.2.3.4")

    users.set_password("ana", "another long password", actor="admin")

    assert users.session_user(token) is None
    with pytest.raises(AccountError):
        users.sign_in("ana", PASSWORD, "1.2.3.4")


def test_api_tokens_are_hashed_and_revocable(users):
    users.add_user("sync", PASSWORD, Role.CONTENT_OWNER, actor="test")
    record, secret = users.create_token("sync", "cms", actor="admin")

    with sqlite3.connect(users.path) as db:
        assert secret not in str(db.execute("SELECT * FROM api_tokens").fetchall())
    assert users.token_user(secret).username == "sync"
    assert users.token_user(secret + "x") is None
    assert users.revoke_token(record.id, actor="admin")
    assert users.token_user(secret) is None


@pytest.mark.parametrize("name", ["", "   ", "\u200b\u200b", "x" * 101])
def test_a_token_needs_a_name(users, name):
    users.add_user("sync", PASSWORD, Role.CONTENT_OWNER, actor="test")

    with pytest.raises(AccountError) as refused:
        users.create_token("sync", name, actor="admin")

    assert refused.value.code == "invalid_token_name"
    assert users.tokens("sync") == []


def test_a_tokens_name_is_stored_and_audited_as_shown(users):
    users.add_user("sync", PASSWORD, Role.CONTENT_OWNER, actor="test")

    record, _ = users.create_token("sync", "  cms \t nightly ", actor="admin")

    assert record.name == "cms nightly"
    assert [t.name for _, t in users.tokens("sync")] == ["cms nightly"]
    created = [e for e in users.audit_log() if e.action == "token.create"]
    assert [e.detail for e in created] == [{"name": "cms nightly"}]


def test_an_admin_cannot_remove_their_own_account(users):
    users.add_user("root", PASSWORD, Role.ADMIN, actor="test")
    users.add_user("ada", PASSWORD, Role.ADMIN, actor="test")

    with pytest.raises(AccountError, match="your own account"):
        users.remove("ADA", actor="ada")
    users.remove("ada", actor="root")

    assert [u.username for u in users.users()] == ["root"]


def test_the_last_admin_stays(users):
    users.add_user("root", PASSWORD, Role.ADMIN, actor="test")

    with pytest.raises(AccountError, match="last admin"):
        users.set_role("root", Role.STAFF, actor="test")
    with pytest.raises(AccountError, match="last admin"):
        users.remove("root", actor="test")


@pytest.mark.parametrize("action", ["demote", "remove"])
def test_two_admins_demoting_or_removing_each_other_leave_one_admin(users, action):
    # The rule is checked inside the one statement that changes the account, so the second of
    # two requests sees the first one's change however close together they came.
    users.add_user("alice", PASSWORD, Role.ADMIN, actor="test")
    users.add_user("bob", PASSWORD, Role.ADMIN, actor="test")

    def act(name: str) -> None:
        if action == "demote":
            users.set_role(name, Role.STAFF, actor="test")
        else:
            users.remove(name, actor="test")

    act("alice")
    with pytest.raises(AccountError, match="last admin"):
        act("bob")

    assert [u.username for u in users.users() if u.role == Role.ADMIN] == ["bob"]


def test_first_admin_comes_from_the_environment_once(users, caplog):
    env = {"CHATBOT_ADMIN_USERNAME": "root", "CHATBOT_ADMIN_PASSWORD": PASSWORD}

    with caplog.at_level(logging.INFO, logger="chatbot.users"):
        first = users.ensure_first_admin(env)
        same = users.ensure_first_admin(env)
        created = caplog.text
        caplog.clear()
        again = users.ensure_first_admin({**env, "CHATBOT_ADMIN_USERNAME": "other"})

    assert first.username == "root" and first.role == Role.ADMIN
    assert "created the first admin, root" in created and "staff accounts exist" not in created
    assert same is None and again is None and [u.username for u in users.users()] == ["root"]
    # A name that is not an account any more is said to be ignored, with what to do instead.
    assert "CHATBOT_ADMIN_USERNAME names other" in caplog.text
    assert "chatbot users add other --role admin" in caplog.text


def test_a_weak_first_admin_password_names_the_variable(users):
    with pytest.raises(AccountError, match="CHATBOT_ADMIN_PASSWORD"):
        users.ensure_first_admin(
            {"CHATBOT_ADMIN_USERNAME": "root", "CHATBOT_ADMIN_PASSWORD": "changeme"}
        )


def test_account_changes_are_audited(users):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="root")
    users.set_role("ana", Role.CONTENT_OWNER, actor="root")
    users.remove("ana", actor="root")

    actions = [(e.actor, e.action, e.target) for e in users.audit_log()]
    assert actions == [
        ("root", "user.remove", "ana"),
        ("root", "user.set_role", "ana"),
        ("root", "user.add", "ana"),
    ]


def test_an_unknown_name_is_checked_at_the_same_cost_as_a_real_password(tmp_path):
    users = UserDirectory(tmp_path / "app.sqlite3", AuthSettings(bcrypt_rounds=5))

    assert users._dummy_hash.startswith(b"$2b$05$")


def test_one_password_tried_on_many_names_from_one_address_is_limited(users, clock, caplog):
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    users.add_user("bo", PASSWORD, Role.STAFF, actor="test")
    users.sign_in("bo", PASSWORD, "1.2.3.4")  # bo has signed in from there before
    limit = users.settings.max_failed_signin_names
    with caplog.at_level(logging.WARNING, logger="chatbot.users"):
        for n in range(limit):
            with pytest.raises(AccountError, match="Wrong user name or password"):
                users.sign_in(f"guess{n}", PASSWORD, "1.2.3.4")

    # Every other name must pause, even with the right password: a correct guess tells nothing.
    with pytest.raises(AccountError) as limited:
        users.sign_in("ana", PASSWORD, "1.2.3.4")
    assert limited.value.code == "too_many_attempts" and limited.value.retry_after
    assert "Try again in 15 min" in limited.value.message
    assert [r.getMessage() for r in caplog.records] == [
        f"sign-ins failed for {limit} different names from 1.2.3.4; it must pause for others"
    ]
    # A user who signed in from that address before, and any other address, are not held up.
    assert users.sign_in("bo", PASSWORD, "1.2.3.4")[0].username == "bo"
    assert users.sign_in("ana", PASSWORD, "5.6.7.8")[0].username == "ana"
    clock.now += users.settings.signin_window_minutes * 60 + 1
    assert users.sign_in("ana", PASSWORD, "1.2.3.4")[0].username == "ana"


def test_names_failing_below_the_limit_or_with_the_check_off_hold_nobody_up(tmp_path, clock):
    settings = AuthSettings(bcrypt_rounds=4, max_failed_signin_names=3)
    users = UserDirectory(tmp_path / "app.sqlite3", settings, clock=clock)
    users.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    for name in ["guess0", "guess1", "guess1", "guess1"]:  # two names, however many tries
        with pytest.raises(AccountError, match="Wrong user name or password"):
            users.sign_in(name, PASSWORD, "1.2.3.4")
    assert users.sign_in("ana", PASSWORD, "1.2.3.4")[0].username == "ana"

    off = UserDirectory(
        tmp_path / "off.sqlite3",
        AuthSettings(bcrypt_rounds=4, max_failed_signin_names=0),
        clock=clock,
    )
    off.add_user("ana", PASSWORD, Role.STAFF, actor="test")
    for n in range(30):
        with pytest.raises(AccountError, match="Wrong user name or password"):
            off.sign_in(f"guess{n}", PASSWORD, "1.2.3.4")
    assert off.sign_in("ana", PASSWORD, "1.2.3.4")[0].username == "ana"
