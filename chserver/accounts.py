"""User management statements, emulated: ``CREATE/ALTER/DROP USER``, ``GRANT``/``REVOKE``, ``SHOW GRANTS``/``USERS``.

chDB refuses access management (its users are not configurable), yet dbt-clickhouse's test fixtures
and BI setup scripts create users and grant them databases. chserver keeps such users in its own
table (``chserver-users.json`` in the data dir, mode 0600, passwords only as salted SHA-256):

* only the writer (an unrestricted user, not readonly) may create, alter, drop, grant and revoke;
  the users of the server's configuration (``default``, ``reader``, ``query_service``) cannot be
  changed here, as ClickHouse's users.xml users cannot be changed by SQL;
* a created user follows the reader rules (:class:`~chserver.access.Profile`: SELECT-class statements,
  allowlisted table functions, the reader's limits) limited to what was granted: ``GRANT … ON db.*``
  permits the database, ``ON db.t`` that one table, ``ON *.*`` every database; ``system`` and
  ``information_schema`` are always readable (BI tools need them), minus the private system tables.
  Which privileges are named (SELECT, INSERT, ALL …) is recorded and shown by SHOW GRANTS, but a
  created user is always read-only: writing stays the writer's;
* ``SHOW GRANTS [FOR u]`` works for every user about itself, for the writer about anyone.

Not emulated: roles, row policies, quotas, settings profiles, ``system.users``/``system.grants``
(chDB's stay empty), column-level grants (refused), authentication other than passwords.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from chserver.access import Profile
from chserver.errors import ACCESS_DENIED, NOT_IMPLEMENTED, READONLY, SYNTAX_ERROR, ClickHouseError
from chserver.sql import Token, tokens

USERS_FILE = "chserver-users.json"
ADMIN_KINDS = frozenset({"CREATE USER", "ALTER USER", "DROP USER", "SHOW GRANTS", "SHOW USERS"})
UNKNOWN_USER = 192
ACCESS_ENTITY_ALREADY_EXISTS = 493
ALWAYS = frozenset({"system", "information_schema", "INFORMATION_SCHEMA"})


def admin_kind(text: str) -> str | None:
    """The statement kind if ``text`` is one of the emulated access statements (``CREATE USER`` …), else None."""
    words = [t.text.upper() for t in _head(text, 4) if t.kind == "word"]
    if len(words) >= 2 and " ".join(words[:2]) in ADMIN_KINDS:
        return " ".join(words[:2])
    if words[:1] in (["GRANT"], ["REVOKE"]):
        return words[0]
    if words[:4] == ["CREATE", "OR", "REPLACE", "USER"]:
        return "CREATE USER"
    return None


def _head(text: str, n: int) -> list[Token]:
    out: list[Token] = []
    for tok in tokens(text):
        out.append(tok)
        if len(out) >= n:
            break
    return out


@dataclass
class Grant:
    privileges: str  # as written: "SELECT", "SELECT, INSERT", "ALL"
    database: str  # "*" = every database
    table: str  # "*" = every table


@dataclass
class Account:
    name: str
    sha256: str  # hex(SHA-256(password + salt)); "" with no password
    salt: str = ""
    double_sha1: str = ""  # hex(SHA1(SHA1(password))), for IDENTIFIED WITH double_sha1_hash
    default_database: str = ""
    grants: list[Grant] = field(default_factory=list)

    def check_password(self, password: str) -> bool:
        if self.double_sha1:
            digest = hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest()  # noqa: S324 - ClickHouse's scheme
            return secrets.compare_digest(digest, self.double_sha1.lower())
        if not self.sha256:
            return password == ""
        digest = hashlib.sha256((password + self.salt).encode()).hexdigest()
        return secrets.compare_digest(digest, self.sha256.lower())

    def profile(self, template: Profile) -> Profile:
        databases = {g.database for g in self.grants if g.table == "*"}
        tables = frozenset((g.database, g.table) for g in self.grants if g.table != "*")
        patterns = frozenset({"*"} if "*" in databases else databases) | ALWAYS
        default = self.default_database or next(iter(sorted(databases - {"*"})), "") or next(
            (db for db, _ in sorted(tables)), template.default_database
        )
        return dataclasses.replace(template, restricted=True, databases=patterns, tables=tables, default_database=default,
                                   file_roots=(), url_prefixes=())


class AccountStore:
    """Created users, persisted as JSON next to the data (written atomically, mode 0600)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self.accounts: dict[str, Account] = {}
        if path is not None and path.exists():
            for raw in json.loads(path.read_text()):
                grants = [Grant(**g) for g in raw.pop("grants", [])]
                self.accounts[raw["name"]] = Account(**raw, grants=grants)

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([dataclasses.asdict(a) for a in self.accounts.values()], f, indent=1)
        os.replace(tmp, self.path)


# --- parsing ---------------------------------------------------------------------------------------
def _name(tok: Token) -> str:
    if tok.kind == "qid" or tok.kind == "str":
        return tok.text[1:-1].replace("\\'", "'").replace("``", "`")
    if tok.kind == "word":
        return tok.text
    raise ClickHouseError(SYNTAX_ERROR, f"Expected a name, got {tok.text!r}")


def _string(tok: Token) -> str:
    if tok.kind != "str" or not tok.text.startswith("'"):
        raise ClickHouseError(SYNTAX_ERROR, f"Expected a string literal, got {tok.text!r}")
    return tok.text[1:-1].replace("\\'", "'").replace("''", "'").replace("\\\\", "\\")


class _Cursor:
    def __init__(self, text: str):
        self.toks = [t for t in tokens(text) if t.kind != "semi"]
        self.i = 0

    def peek(self, *words: str) -> bool:
        ws = [t.text.upper() for t in self.toks[self.i : self.i + len(words)]]
        return ws == list(words)

    def take(self, *words: str) -> bool:
        if self.peek(*words):
            self.i += len(words)
            return True
        return False

    def next(self) -> Token:
        if self.i >= len(self.toks):
            raise ClickHouseError(SYNTAX_ERROR, "Unexpected end of the statement")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def names(self) -> list[str]:
        out = [self.user_name()]
        while self.take(","):
            out.append(self.user_name())
        return out

    def user_name(self) -> str:
        name = _name(self.next())
        if self.peek("@"):  # name@'host': hosts are not restricted here
            self.i += 2
        return name


def _identified(cur: _Cursor, account: Account) -> None:
    """``IDENTIFIED [WITH method] BY 'secret' [SALT 's']`` / ``NOT IDENTIFIED`` / ``IDENTIFIED WITH no_password``."""
    if cur.take("NOT", "IDENTIFIED"):
        account.sha256, account.salt, account.double_sha1 = "", "", ""
        return
    if not cur.take("IDENTIFIED"):
        return
    method = "plaintext_password"
    if cur.take("WITH"):
        method = _name(cur.next()).lower()
    if method == "no_password":
        account.sha256, account.salt, account.double_sha1 = "", "", ""
        return
    if not cur.take("BY"):
        raise ClickHouseError(SYNTAX_ERROR, "IDENTIFIED … BY '<password>' expected")
    secret = _string(cur.next())
    account.double_sha1 = ""
    if method in ("plaintext_password", "sha256_password", "double_sha1_password", "bcrypt_password"):
        account.salt = secrets.token_hex(16)
        account.sha256 = hashlib.sha256((secret + account.salt).encode()).hexdigest()
    elif method == "sha256_hash":
        account.sha256, account.salt = secret.lower(), ""
        if cur.take("SALT"):
            account.salt = _string(cur.next())
    elif method == "double_sha1_hash":
        account.sha256, account.salt, account.double_sha1 = "x", "", secret.lower()
    else:
        raise ClickHouseError(NOT_IMPLEMENTED, f"Authentication method {method} is not supported by this server")


def _skip_clauses(cur: _Cursor, account: Account) -> None:
    """The clauses after the name: IDENTIFIED, DEFAULT DATABASE; HOST, SETTINGS, DEFAULT ROLE … are accepted and ignored."""
    while not cur.done():
        if cur.peek("IDENTIFIED") or cur.peek("NOT", "IDENTIFIED"):
            _identified(cur, account)
        elif cur.take("DEFAULT", "DATABASE"):
            account.default_database = "" if cur.take("NONE") else _name(cur.next())
        else:
            cur.next()


def _targets(cur: _Cursor) -> tuple[str, str]:
    """``*.*`` / ``db.*`` / ``db.t`` / ``t`` / ``*`` → (database, table); a bare name is in the current database."""
    first = cur.next()
    a = "*" if first.text == "*" else _name(first)
    if cur.take("."):
        second = cur.next()
        return a, "*" if second.text == "*" else _name(second)
    return "", a  # database filled in by the caller


def _privileges(cur: _Cursor) -> str:
    start = cur.i
    while not cur.peek("ON"):
        tok = cur.next()
        if tok.kind == "open":
            raise ClickHouseError(NOT_IMPLEMENTED, "Column-level grants are not supported by this server")
    if cur.i == start:
        raise ClickHouseError(SYNTAX_ERROR, "GRANT/REVOKE: privileges expected before ON")
    return " ".join(t.text.upper() if t.kind == "word" else t.text for t in cur.toks[start : cur.i]).replace(" ,", ",")


class Accounts:
    """Runs the emulated statements against an :class:`AccountStore`; ``builtin`` are the configured users."""

    def __init__(self, store: AccountStore, builtin: dict[str, Profile], writer: str, template: Profile):
        self.store = store
        self.builtin = builtin
        self.writer = writer
        self.template = template

    def execute(self, kind: str, text: str, user: str, may_admin: bool, current_db: str) -> tuple[list[str], list[list[str]]]:
        """(column names, rows) of the statement's answer; raises ClickHouseError."""
        if kind in ("SHOW GRANTS", "SHOW USERS"):
            return self._show(kind, text, user, may_admin)
        if not may_admin:  # as ClickHouse answers a readonly user
            raise ClickHouseError(READONLY, f"{user}: Cannot execute query in readonly mode.")
        cur = _Cursor(text)
        with self.store._lock:
            if kind == "CREATE USER":
                self._create(cur)
            elif kind == "ALTER USER":
                self._alter(cur)
            elif kind == "DROP USER":
                self._drop(cur)
            else:
                self._grant(cur, kind == "GRANT", current_db)
            self.store.save()
        return [], []

    def _check_mutable(self, name: str) -> None:
        if name in self.builtin:
            raise ClickHouseError(ACCESS_DENIED, f"User {name} is configured in the server's settings and cannot be "
                                  "changed with SQL")

    def _create(self, cur: _Cursor) -> None:
        cur.take("CREATE")
        replace = cur.take("OR", "REPLACE")
        cur.take("USER")
        if_not_exists = cur.take("IF", "NOT", "EXISTS")
        names = cur.names()
        start = cur.i
        for name in names:
            self._check_mutable(name)
            if name in self.store.accounts and not replace:
                if if_not_exists:
                    continue
                raise ClickHouseError(ACCESS_ENTITY_ALREADY_EXISTS, f"user `{name}`: cannot insert because user `{name}` "
                                      "already exists in local_directory")
            account = Account(name=name, sha256="")
            cur.i = start
            _skip_clauses(cur, account)
            self.store.accounts[name] = account

    def _alter(self, cur: _Cursor) -> None:
        cur.take("ALTER", "USER")
        if_exists = cur.take("IF", "EXISTS")
        names = cur.names()
        start = cur.i
        for name in names:
            self._check_mutable(name)
            account = self.store.accounts.get(name)
            if account is None:
                if if_exists:
                    continue
                raise ClickHouseError(UNKNOWN_USER, f"There is no user `{name}` in user directories")
            if cur.take("RENAME", "TO"):
                raise ClickHouseError(NOT_IMPLEMENTED, "ALTER USER … RENAME is not supported by this server")
            cur.i = start
            _skip_clauses(cur, account)

    def _drop(self, cur: _Cursor) -> None:
        cur.take("DROP", "USER")
        if_exists = cur.take("IF", "EXISTS")
        for name in cur.names():
            self._check_mutable(name)
            if self.store.accounts.pop(name, None) is None and not if_exists:
                raise ClickHouseError(UNKNOWN_USER, f"There is no user `{name}` in user directories")

    def _grant(self, cur: _Cursor, grant: bool, current_db: str) -> None:
        cur.next()  # GRANT / REVOKE
        if cur.take("ON", "CLUSTER"):
            cur.next()
        if not grant:
            cur.take("GRANT", "OPTION", "FOR")
        privileges = _privileges(cur)
        cur.take("ON")
        database, table = _targets(cur)
        if not database:
            database = current_db
        if not (cur.take("TO") if grant else cur.take("FROM")):
            raise ClickHouseError(SYNTAX_ERROR, f"{'GRANT … TO' if grant else 'REVOKE … FROM'} <user> expected")
        grantees = cur.names()
        for name in grantees:
            self._check_mutable(name)
            account = self.store.accounts.get(name)
            if account is None:
                raise ClickHouseError(UNKNOWN_USER, f"There is no user `{name}` in user directories")
            if grant:
                if not any((g.database, g.table, g.privileges) == (database, table, privileges) for g in account.grants):
                    account.grants.append(Grant(privileges, database, table))
            else:
                account.grants = [
                    g for g in account.grants
                    if not ((database == "*" or g.database == database) and (table == "*" or g.table == table))
                ]

    def _show(self, kind: str, text: str, user: str, may_admin: bool) -> tuple[list[str], list[list[str]]]:
        cur = _Cursor(text)
        cur.take("SHOW")
        cur.next()
        if kind == "SHOW USERS":
            if not may_admin:
                raise ClickHouseError(ACCESS_DENIED, f"{user}: Not enough privileges for SHOW USERS")
            return ["name"], [[n] for n in [*self.builtin, *self.store.accounts]]
        names = [user]
        if cur.take("FOR"):
            names = cur.names()
        if any(n != user for n in names) and not may_admin:
            raise ClickHouseError(ACCESS_DENIED, f"{user}: Not enough privileges for SHOW GRANTS of another user")
        rows: list[list[str]] = []
        for name in names:
            rows.extend([line] for line in self.grants_of(name))
        return [f"GRANTS FOR {names[0]}" if len(names) == 1 else "GRANTS"], rows

    def grants_of(self, name: str) -> list[str]:
        def quote(n: str) -> str:
            return n if n.replace("_", "").isalnum() or n == "*" else "`" + n.replace("`", "``") + "`"

        if name == self.writer:
            return [f"GRANT ALL ON *.* TO {quote(name)} WITH GRANT OPTION"]
        if name in self.builtin:
            profile = self.builtin[name]
            return [f"GRANT SELECT ON {quote(db)}.* TO {quote(name)}" for db in sorted(profile.databases)]
        account = self.store.accounts.get(name)
        if account is None:
            raise ClickHouseError(UNKNOWN_USER, f"There is no user `{name}` in user directories")
        return [f"GRANT {g.privileges} ON {quote(g.database)}.{quote(g.table)} TO {quote(name)}" for g in account.grants]
