"""Secret keys of API keys: the password half of the Dashboard API's HTTP Basic ``api_key:secret_key``.

Unlike API keys (which ship inside client apps), a secret key grants read access to a project's analytics,
so only a salted SHA-256 of it is stored and it is shown once, when created. Secrets are 32 random bytes, so a
fast hash is enough (no password-stretching needed against brute force of a 256-bit space).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa

from eventpipe_core.metadata.store import MetadataStore, api_keys, meta, projects

api_secrets = sa.Table(
    "api_secrets", meta,
    sa.Column("api_key", sa.String(64), sa.ForeignKey("api_keys.api_key", ondelete="CASCADE"), primary_key=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def create_secret(store: MetadataStore, api_key: str) -> str:
    """A new secret key for ``api_key`` (replacing any earlier one); returned once, stored hashed."""
    store.ensure_schema()
    secret = secrets.token_hex(32)
    salt = secrets.token_hex(16)
    with store.engine.begin() as conn:
        conn.execute(api_secrets.delete().where(api_secrets.c.api_key == api_key))
        conn.execute(api_secrets.insert().values(api_key=api_key, salt=salt, secret_sha256=_digest(salt, secret),
                                                 created_at=datetime.now(UTC)))
    return secret


def create_key_with_secret(store: MetadataStore, project: str) -> tuple[str, str]:
    """(api_key, secret_key) for ``project`` (created if new)."""
    key = store.create_key(project)
    return key, create_secret(store, key)


def project_for_credentials(store: MetadataStore, api_key: str, secret: str) -> str | None:
    """The project of an active key whose secret matches, else None (unknown, revoked, no secret, wrong secret)."""
    store.ensure_schema()
    q = (
        sa.select(projects.c.name, api_secrets.c.salt, api_secrets.c.secret_sha256)
        .select_from(api_keys.join(projects, projects.c.id == api_keys.c.project_id)
                     .join(api_secrets, api_secrets.c.api_key == api_keys.c.api_key))
        .where(api_keys.c.api_key == api_key, api_keys.c.revoked_at.is_(None))
    )
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        _digest("x", secret)  # same work either way
        return None
    return row[0] if hmac.compare_digest(_digest(row[1], secret), row[2]) else None
