"""Geo-IP lookups from a MaxMind-format database (GeoLite2/GeoIP2 City layout)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from enrichment.rules import GeoRecord


def _name(node: Any) -> str:
    if isinstance(node, dict):
        names = node.get("names")
        if isinstance(names, dict):
            return str(names.get("en", ""))
    return ""


def record_from_maxmind(rec: dict[str, Any] | None) -> GeoRecord | None:
    """A MaxMind City record -> GeoRecord (English names; DMA = ``location.metro_code``)."""
    if not rec:
        return None
    subdivisions = rec.get("subdivisions") or [{}]
    metro = (rec.get("location") or {}).get("metro_code")
    return GeoRecord(
        country=_name(rec.get("country")),
        region=_name(subdivisions[0]),
        city=_name(rec.get("city")),
        dma=str(metro) if metro not in (None, "") else "",
    )


class GeoIpDatabase:
    """An open MaxMind reader with a per-IP cache; call it like ``geo_lookup(ip)``."""

    def __init__(self, path: Path):
        import maxminddb

        self.path = Path(path)
        self._reader = maxminddb.open_database(str(self.path))
        self.lookup = functools.lru_cache(maxsize=100_000)(self._lookup)

    def _lookup(self, ip: str) -> GeoRecord | None:
        try:
            return record_from_maxmind(self._reader.get(ip))  # type: ignore[arg-type]
        except ValueError:
            return None

    def __call__(self, ip: str) -> GeoRecord | None:
        return self.lookup(ip)

    def close(self) -> None:
        self._reader.close()


def open_geoip(path: Path | None) -> GeoIpDatabase | None:
    """The configured database, or None when GEOIP_DB_PATH is unset or missing (geo columns stay as sent)."""
    if path is None or not Path(path).is_file():
        return None
    return GeoIpDatabase(Path(path))
