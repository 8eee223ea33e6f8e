"""Staff accounts: users with roles, bcrypt passwords, sign-in sessions, API tokens, audit log.

Kept in the app's SQLite database beside the conversations. Tokens (sign-in sessions and API
tokens) are random and only their SHA-256 hashes are stored; passwords only as bcrypt hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import bcrypt

from chatbot.database import SQLiteFile
from chatbot.errors import Refused, shows_nothing
from chatbot.rate_limit import RateLimiter, SprayLimiter
from chatbot.settings import PLACEHOLDER_SECRETS, AuthSettings

log = logging.getLogger(__name__)

# The row is an admin and the only one: what neither a role change nor a removal may undo.
_LAST_ADMIN = "(role = 'admin' AND (SELECT COUNT(*) FROM users WHERE role = 'admin') <= 1)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS staff_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used REAL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
API_TOKEN_PREFIX = "cbt_"


class Role(StrEnum):
    """Customers have no account; each staff role has the rights of the ones before it."""

    STAFF = "staff"
    CONTENT_OWNER = "content_owner"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


class AccountError(Refused):
    """A refused account change or sign-in, as a sentence for the person who tried."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    created_at: float
    last_used: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict


# Longest name an API token may have.
TOKEN_NAME_MAX_CHARS = 100


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise AccountError("invalid_role", f"Unknown role '{value}'; use {allowed}.") from None


class UserDirectory:
    """Accounts, sign-ins and the audit log; safe to share across threads."""

    def __init__(
        self,
        path: Path,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self._db = SQLiteFile(path, SCHEMA)
        self.path = self._db.path
        self.settings = settings
        self._clock = clock
        self._rounds = settings.bcrypt_rounds
        # Compared against when the user name is unknown, at the same cost as a real password, so
        # that an unknown name answers as slowly as a wrong password.
        self._dummy_hash = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=self._rounds))
        # Sign-ins are checked one at a time: parallel guesses would all pass the failure
        # limit before the first of them was counted.
        self._signin_lock = threading.Lock()
        window = settings.signin_window_minutes * 60
        self._failures = RateLimiter(settings.max_failed_signins, window, clock=clock)
        self._sprays = SprayLimiter(settings.max_failed_signin_names, window, clock=clock)

    # ----- accounts
    def _check_password(self, password: str) -> bytes:
        if len(password) < self.settings.min_password_chars:
            raise AccountError(
                "weak_password",
                f"Passwords need at least {self.settings.min_password_chars} characters.",
            )
        if password.strip().lower() in PLACEHOLDER_SECRETS:
            raise AccountError("weak_password", "Choose a real password, not a placeholder.")
        data = password.encode()
        if len(data) > 72:
            # bcrypt reads only 72 bytes; a longer password would silently lose its tail.
            raise AccountError("weak_password", "Passwords may be at most 72 bytes long.")
        return bcrypt.hashpw(data, bcrypt.gensalt(rounds=self._rounds))

    def add_user(self, username: str, password: str, role: Role | str, *, actor: str) -> User:
        if not USERNAME.match(username or ""):
            raise AccountError(
                "invalid_username",
                "User names are 2-64 characters: letters a-z (no accents), digits, dots, dashes, "
                "underscores or @, starting with a letter or digit.",
            )
        role = _role(role)
        hashed = self._check_password(password).decode()
        now = self._clock()
        try:
            with self._db() as db:
                cursor = db.execute(
                    "INSERT INTO users(username, password_hash, role, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (username, hashed, role.value, now),
                )
        except sqlite3.IntegrityError:
            raise AccountError(
                "user_exists", f"A user named '{username}' already exists."
            ) from None
        self.audit(actor, "user.add", username, {"role": role.value})
        return User(int(cursor.lastrowid or 0), username, role, now)

    def get(self, username: str) -> User | None:
        with self._db() as db:
            row = db.execute(
                "SELECT id, username, role, created_at FROM users WHERE username = ?", (username,)
            ).fetchone()
        return User(row[0], row[1], Role(row[2]), row[3]) if row else None

    def _require(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise AccountError("unknown_user", f"There is no user named '{username}'.")
        return user

    def users(self) -> list[User]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, username, role, created_at FROM users ORDER BY username"
            ).fetchall()
        return [User(r[0], r[1], Role(r[2]), r[3]) for r in rows]

    def set_role(self, username: str, role: Role | str, *, actor: str) -> User:
        user, role = self._require(username), _role(role)
        with self._db() as db:
            # Checked in the same statement as the change: two admins demoting each other at
            # once cannot both see two admins.
            changed = db.execute(
                f"UPDATE users SET role = ? WHERE id = ? AND NOT ({_LAST_ADMIN} AND ? != 'admin')",
                (role.value, user.id, role.value),
            ).rowcount
        if not changed:
            raise AccountError("last_admin", "The last admin cannot lose the admin role.")
        self.audit(actor, "user.set_role", username, {"from": user.role.value, "to": role.value})
        return User(user.id, user.username, role, user.created_at)

    def set_password(self, username: str, password: str, *, actor: str) -> None:
        user = self._require(username)
        hashed = self._check_password(password).decode()
        with self._db() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (hashed, user.id))
            # A reset password ends every sign-in made with the old one.
            db.execute("DELETE FROM staff_sessions WHERE user_id = ?", (user.id,))
        self.audit(actor, "user.set_password", username)

    def remove(self, username: str, *, actor: str) -> None:
        user = self._require(username)
        if user.username.casefold() == actor.casefold():
            # It would end the sign-in the admin is using mid-action; another admin can.
            raise AccountError(
                "own_account", "You cannot remove your own account; ask another admin to."
            )
        with self._db() as db:
            removed = db.execute(
                f"DELETE FROM users WHERE id = ? AND NOT {_LAST_ADMIN}", (user.id,)
            ).rowcount
        if not removed:
            raise AccountError("last_admin", "The last admin cannot be removed.")
        self.audit(actor, "user.remove", username)

    def ensure_first_admin(self, environ: Mapping[str, str]) -> User | None:
        """At first start (no users yet), create the admin named by the environment."""
        username = environ.get(self.settings.admin_username_env, "").strip()
        password = environ.get(self.settings.admin_password_env, "")
        existing = self.users()
        if existing:
            if username and username not in {u.username for u in existing}:
                log.warning(
                    "%s names %s, but staff accounts exist already: the first admin is only "
                    "made at first start. Add one with `chatbot users add %s --role admin`",
                    self.settings.admin_username_env,
                    username,
                    username,
                )
            return None
        if not username or not password:
            log.warning(
                "no staff accounts yet: set %s and %s to create the first admin, or run "
                "`chatbot users add`",
                self.settings.admin_username_env,
                self.settings.admin_password_env,
            )
            return None
        try:
            admin = self.add_user(username, password, Role.ADMIN, actor="environment")
        except AccountError as exc:
            raise AccountError(
                exc.code,
                f"First admin from {self.settings.admin_username_env}/"
                f"{self.settings.admin_password_env}: {exc.message}",
            ) from None
        log.info("created the first admin, %s, from %s", username, self.settings.admin_username_env)
        return admin

    # ----- sign-in
    def sign_in(self, username: str, password: str, client: str) -> tuple[User, str]:
        """A new sign-in session token; failed attempts per name and address, and the names
        failing from one address, are limited."""
        with self._signin_lock:
            row = self._check_credentials(username, password, client)
        user = User(row[0], row[1], Role(row[2]), row[3])
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._db() as db:
            db.execute(
                "INSERT INTO staff_sessions(token_hash, user_id, created_at, last_seen)"
                " VALUES (?, ?, ?, ?)",
                (_hash_token(token), user.id, now, now),
            )
        return user, token

    def _check_credentials(self, username: str, password: str, client: str):
        with self._db() as db:
            row = db.execute(
                "SELECT id, username, role, created_at, password_hash FROM users"
                " WHERE username = ?",
                (username,),
            ).fetchone()
        stored = row[4].encode() if row else self._dummy_hash
        # Failures count against the password being guessed: once an admin resets it (from
        # any process, the command line too), the user can sign in with the new one at once.
        name = username.lower()
        key = f"{name}|{client}|{_hash_token(stored.decode())[:16]}"
        wait = self._failures.blocked(key) or self._sprays.blocked(client, name)
        if wait:
            raise AccountError(
                "too_many_attempts",
                f"Too many failed sign-ins. Try again in {math.ceil(wait / 60)} min.",
                retry_after=wait,
            )
        if not bcrypt.checkpw(password.encode()[:72], stored) or row is None:
            self._failures.hit(key)
            if self._sprays.failed(client, name) == self._sprays.limit:
                log.warning(
                    "sign-ins failed for %d different names from %s; it must pause for others",
                    self._sprays.limit,
                    client,
                )
            raise AccountError("bad_credentials", "Wrong user name or password.")
        self._sprays.succeeded(client, name)
        return row

    def session_user(self, token: str | None) -> User | None:
        """The signed-in user of a session token, if it has not timed out (and mark it active)."""
        if not token:
            return None
        now = self._clock()
        with self._db() as db:
            row = db.execute(
                "SELECT u.id, u.username, u.role, u.created_at, s.created_at, s.last_seen"
                " FROM staff_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
                (_hash_token(token),),
            ).fetchone()
            if row is None:
                return None
            idle = now - row[5] > self.settings.session_idle_minutes * 60
            too_old = now - row[4] > self.settings.session_max_hours * 3600
            if idle or too_old:
                db.execute("DELETE FROM staff_sessions WHERE token_hash = ?", (_hash_token(token),))
                return None
            db.execute(
                "UPDATE staff_sessions SET last_seen = ? WHERE token_hash = ?",
                (now, _hash_token(token)),
            )
        return User(row[0], row[1], Role(row[2]), row[3])

    def sign_out(self, token: str | None) -> None:
        if token:
            with self._db() as db:
                db.execute("DELETE FROM staff_sessions WHERE token_hash = ?", (_hash_token(token),))

    # ----- API tokens
    def create_token(self, username: str, name: str, *, actor: str) -> tuple[ApiToken, str]:
        """A new API token for the user; the secret is returned once and never stored."""
        user = self._require(username)
        name = " ".join(name.split())
        if shows_nothing(name) or len(name) > TOKEN_NAME_MAX_CHARS:
            raise AccountError(
                "invalid_token_name",
                f"Name the token in 1-{TOKEN_NAME_MAX_CHARS} characters, after the program or "
                "person that will use it, so that it can be told apart when it is revoked.",
            )
        secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO api_tokens(user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (user.id, name, _hash_token(secret), now),
            )
        self.audit(actor, "token.create", username, {"name": name})
        return ApiToken(int(cursor.lastrowid or 0), user.id, name, now, None, None), secret

    def tokens(self, username: str | None = None) -> list[tuple[str, ApiToken]]:
        where, args = ("WHERE u.username = ?", (username,)) if username else ("", ())
        with self._db() as db:
            rows = db.execute(
                "SELECT u.username, t.id, t.user_id, t.name, t.created_at, t.last_used,"
                f" t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id {where}"
                " ORDER BY t.id DESC",
                args,
            ).fetchall()
        return [(row[0], ApiToken(*row[1:])) for row in rows]

    def revoke_token(self, token_id: int, *, actor: str) -> bool:
        with self._db() as db:
            changed = db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self._clock(), token_id),
            ).rowcount
        if changed:
            self.audit(actor, "token.revoke", str(token_id))
        return bool(changed)

    def token_user(self, secret: str | None) -> User | None:
        if not secret or not secret.startswith(API_TOKEN_PREFIX):
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT u.id, u.username, u.role, u.created_at, t.token_hash FROM api_tokens t"
                " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND t.revoked_at IS NULL",
                (_hash_token(secret),),
            ).fetchone()
            if row is None or not hmac.compare_digest(row[4], _hash_token(secret)):
                return None
            db.execute(
                "UPDATE api_tokens SET last_used = ? WHERE token_hash = ?",
                (self._clock(), row[4]),
            )
        return User(row[0], row[1], Role(row[2]), row[3])

    # ----- audit log
    def audit(self, actor: str, action: str, target: str, detail: dict | None = None) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO audit_log(at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (self._clock(), actor, action, target, json.dumps(detail or {})),
            )

    def audit_log(self, limit: int = 200, offset: int = 0) -> list[AuditEntry]:
        """Newest first, ``limit`` entries after the first ``offset``."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id, at, actor, action, target, detail FROM audit_log"
                " ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [AuditEntry(*row[:5], json.loads(row[5])) for row in rows]

    def audit_count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
