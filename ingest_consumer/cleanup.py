"""Delete leftovers of crashed or losing attempts: landed-looking objects no commit record names.

Readers never see such objects (they read through commit records), so cleanup only reclaims
space. The grace period protects attempts still in flight; the write time comes from the object
name, so no per-object metadata calls are needed. Writers rewrite objects older than half the
grace period before committing (see :mod:`ingest_consumer.consumer`), so an object this deletes is
never committed afterwards.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from eventpipe_core.lake_catalog import COMMITS_PREFIX, RAW_PREFIX, iter_commit_records
from eventpipe_core.lake_store import LakeStore, LocalLakeStore
from ingest_consumer.partitioner import parse_object_key

log = logging.getLogger(__name__)


@dataclass
class CleanupResult:
    scanned: int = 0
    orphans_deleted: int = 0
    temp_files_deleted: int = 0


def delete_orphans(lake: LakeStore, grace_s: float, now_ms: int | None = None) -> CleanupResult:
    """Delete uncommitted landing objects older than ``grace_s`` (and stale local temp files)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - int(grace_s * 1000)
    result = CleanupResult()
    candidates: list[str] = []
    for key in lake.list(RAW_PREFIX):
        if key.startswith(COMMITS_PREFIX):
            continue
        name = parse_object_key(key)
        if name is None:
            continue
        result.scanned += 1
        if name.written_ms <= cutoff:
            candidates.append(key)
    if candidates:
        # Commit records are read after listing objects: an object committed in between is seen.
        referenced = {obj.key for rec in iter_commit_records(lake) for obj in rec.objects}
        for key in candidates:
            if key not in referenced:
                lake.delete(key)
                result.orphans_deleted += 1
    if isinstance(lake, LocalLakeStore):
        result.temp_files_deleted = _delete_local_temp_files(lake, cutoff / 1000)
    if result.orphans_deleted or result.temp_files_deleted:
        log.info("cleanup: deleted %d uncommitted objects and %d temp files (scanned %d)",
                 result.orphans_deleted, result.temp_files_deleted, result.scanned)
    return result


def _delete_local_temp_files(lake: LocalLakeStore, cutoff_s: float) -> int:
    """A SIGKILL during a local put leaves a hidden ``.<name>.*.tmp``; readers skip it, we remove it."""
    deleted = 0
    base = lake.root / RAW_PREFIX
    if not base.exists():
        return 0
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                path = os.path.join(dirpath, name)
                try:
                    if os.stat(path).st_mtime <= cutoff_s:
                        os.unlink(path)
                        deleted += 1
                except FileNotFoundError:
                    pass
    return deleted
