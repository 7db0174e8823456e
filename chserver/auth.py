"""Users of the server: the read-write user from CLICKHOUSE_URL and a read-only user for BI tools.

chDB refuses user management (CREATE USER → ACCESS_DENIED), so users live in the server's
configuration, as in a real server's users.xml. Credentials come, as ClickHouse accepts them, from
HTTP Basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers or ``user``/``password`` URL parameters.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chserver.errors import AUTHENTICATION_FAILED, ClickHouseError

if TYPE_CHECKING:
    from eventpipe_core.settings import Settings


@dataclass(frozen=True)
class User:
    name: str
    password: str
    readonly: bool = False


class Users:
    """Authenticates requests against a fixed set of users."""

    def __init__(self, users: list[User]):
        self._users = {u.name: u for u in users}

    @classmethod
    def from_settings(cls, settings: Settings) -> Users:
        """The CLICKHOUSE_URL user (``default`` unless the URL names another) and the read-only user."""
        target = settings.clickhouse
        users = [User(target.user, target.password, readonly=False)]
        if settings.clickhouse_readonly_user and settings.clickhouse_readonly_user != target.user:
            users.append(User(settings.clickhouse_readonly_user, settings.clickhouse_readonly_password, readonly=True))
        return cls(users)

    def names(self) -> list[str]:
        return list(self._users)

    def get(self, name: str) -> User:
        return self._users[name]

    def authenticate(self, headers: Mapping[str, str], params: Mapping[str, str]) -> User:
        name, password = credentials(headers, params)
        user = self._users.get(name)
        # Compare even for unknown users so timing does not reveal which names exist.
        ok = hmac.compare_digest(password.encode(), (user.password if user else "\0invalid").encode())
        if user is None or not ok:
            raise ClickHouseError(
                AUTHENTICATION_FAILED,
                f"{name}: Authentication failed: password is incorrect, or there is no user with such name.",
            )
        return user


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
