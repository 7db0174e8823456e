"""Users of the server: the writer from CLICKHOUSE_URL, a read-only user for BI tools, a trusted service user.

* the writer (``default`` unless CLICKHOUSE_URL names another) may do anything; on the embedded
  stack its password is generated at first start (see ``Settings.clickhouse``), so no request
  without credentials, from another local process or a web page, can write or read files;
* the read-only user (``reader``) gets :class:`~chserver.access.Profile` rules: SELECT-class
  statements on permitted databases, allowlisted table functions, bounded time/memory/rows;
* the service user (``query_service``) gets the same rules plus ``file()``/``s3()`` under the lake.

chDB refuses user management (CREATE USER → ACCESS_DENIED), so these users live in the server's
configuration, as in a real server's users.xml; users created with SQL are emulated by
:mod:`chserver.accounts` (reader rules limited to their grants). Credentials come, as ClickHouse accepts them, from
HTTP Basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers or ``user``/``password`` URL parameters.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chserver.access import SAFE_TABLE_FUNCTIONS, Profile
from chserver.errors import AUTHENTICATION_FAILED, ClickHouseError

if TYPE_CHECKING:
    from chserver.accounts import Accounts
    from eventpipe_core.settings import Settings


WRITER = Profile(restricted=False)


@dataclass(frozen=True)
class User:
    name: str
    password: str
    readonly: bool = False
    profile: Profile = WRITER


def _lake_locations(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(file roots, URL prefixes) of the lake, as file()/s3() spell them."""
    from urllib.parse import unquote, urlsplit

    assert settings.lake_url is not None
    parts = urlsplit(settings.lake_url)
    if parts.scheme == "file":
        return (unquote(parts.path).rstrip("/"),), ()
    bucket, prefix = parts.netloc, parts.path.strip("/")
    key = f"{bucket}/{prefix}".rstrip("/")
    prefixes = [f"s3://{key}", f"https://{bucket}.s3.amazonaws.com/{prefix}".rstrip("/"),
                f"https://{bucket}.s3.{settings.aws_region}.amazonaws.com/{prefix}".rstrip("/")]
    if settings.aws_endpoint_url:
        prefixes.append(f"{settings.aws_endpoint_url.rstrip('/')}/{key}")
    return (), tuple(prefixes)


def reader_profile(settings: Settings, service: bool = False) -> Profile:
    """Readers: the URL's database + system; limits from CHSERVER_READER_*; the service adds the lake."""
    database = settings.clickhouse.database
    extra = {d.strip() for d in settings.chserver_reader_databases.split(",") if d.strip()}
    limits = {
        "max_execution_time": (
            settings.chserver_service_max_execution_time if service else settings.chserver_reader_max_execution_time
        ),
        "max_memory_usage": settings.chserver_reader_max_memory_usage,
        "max_rows_to_read": settings.chserver_reader_max_rows_to_read,
        "max_result_rows": settings.chserver_reader_max_result_rows,
    }
    files, urls = _lake_locations(settings) if service else ((), ())
    return Profile(
        restricted=True,
        databases=frozenset({database, "system", "information_schema", "INFORMATION_SCHEMA", *extra}),
        default_database=database,
        table_functions=SAFE_TABLE_FUNCTIONS | ({"file", "s3"} if service else set()),
        file_roots=files,
        url_prefixes=urls,
        limits=limits,
        max_concurrent_queries=settings.chserver_reader_max_concurrent_queries,
    )


class Users:
    """Authenticates requests against the configured users and those created with SQL (:mod:`chserver.accounts`)."""

    def __init__(self, users: list[User]):
        self._users = {u.name: u for u in users}
        self.accounts: Accounts | None = None

    def attach_store(self, path: Path | None) -> Accounts:
        """Load (and from now on keep) the users created with CREATE USER in ``path``."""
        from chserver.accounts import Accounts, AccountStore

        writer = next((u.name for u in self._users.values() if not u.profile.restricted), "default")
        template = next(
            (u.profile for u in self._users.values() if u.profile.restricted and not u.profile.file_roots
             and not u.profile.url_prefixes),
            Profile(restricted=True, limits={"max_execution_time": 60}),
        )
        builtin = {u.name: u.profile for u in self._users.values()}
        self.accounts = Accounts(AccountStore(path), builtin, writer, template)
        return self.accounts

    def _created(self, name: str) -> User | None:
        account = self.accounts.store.accounts.get(name) if self.accounts is not None else None
        if account is None or self.accounts is None:
            return None
        return User(name, "", readonly=True, profile=account.profile(self.accounts.template))

    @classmethod
    def from_settings(cls, settings: Settings) -> Users:
        """The CLICKHOUSE_URL user (``default`` unless the URL names another) and the read-only user."""
        target = settings.clickhouse
        users = [User(target.user, target.password, readonly=False)]
        if settings.clickhouse_readonly_user and settings.clickhouse_readonly_user != target.user:
            users.append(
                User(settings.clickhouse_readonly_user, settings.clickhouse_readonly_password, True, reader_profile(settings))
            )
        service = settings.clickhouse_service_target
        if service is not None and service.user not in (target.user, settings.clickhouse_readonly_user):
            users.append(User(service.user, service.password, True, reader_profile(settings, service=True)))
        return cls(users)

    def names(self) -> list[str]:
        return list(self._users)

    def get(self, name: str) -> User:
        user = self._users.get(name) or self._created(name)
        if user is None:
            raise ClickHouseError(AUTHENTICATION_FAILED, f"{name}: there is no such user (any more)")
        return user

    def authenticate(self, headers: Mapping[str, str], params: Mapping[str, str]) -> User:
        """The request's user; no credentials at all (for a user with a password) is HTTP 401, a wrong one 403."""
        name, password = credentials(headers, params)
        user = self._users.get(name)
        # Compare even for unknown users so timing does not reveal which names exist.
        ok = hmac.compare_digest(password.encode(), (user.password if user else "\0invalid").encode())
        if user is None and self.accounts is not None and name in self.accounts.store.accounts:
            ok = self.accounts.store.accounts[name].check_password(password)
            user = self._created(name)
        if user is None or not ok:
            exc = ClickHouseError(
                AUTHENTICATION_FAILED,
                f"{name}: Authentication failed: password is incorrect, or there is no user with such name.",
            )
            if not has_credentials(headers, params):
                exc.status_override = 401
            raise exc
        return user


def has_credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> bool:
    return bool(headers.get("authorization") or "x-clickhouse-user" in headers or "x-clickhouse-key" in headers
                or "user" in params or "password" in params)


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """(user, password) from the request; no credentials at all means ``default`` with an empty password."""
    auth = headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ClickHouseError(AUTHENTICATION_FAILED, "Malformed HTTP Basic authorization header") from None
        name, _, password = decoded.partition(":")
        return name or "default", password
    if "x-clickhouse-user" in headers or "x-clickhouse-key" in headers:
        return headers.get("x-clickhouse-user") or "default", headers.get("x-clickhouse-key", "")
    return params.get("user") or "default", params.get("password", "")
