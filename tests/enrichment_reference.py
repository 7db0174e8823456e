"""The enrichment rules as they were before vectorization (commit 111ca3d, per-row pandas): the oracle of
tests/test_enrichment_differential.py. Do not "fix" or speed up this file: its output is the contract
the vectorized :mod:`enrichment.rules` must reproduce byte for byte.

Original docstring follows.

Enrichment rules for one event hour: pure functions over pandas/Arrow, no Dagster, no I/O.

The Dagster asset (``orchestration.lake.assets``) and the Spark job (``spark_jobs``, per session-key
bucket of an hour) both call :func:`enrich_hour`, so the two paths produce the same rows. Everything
that is not in the hour's raw rows comes in explicitly:

* ``carry`` — session state at the end of the previous hour (:func:`session_state_from_enriched`),
  which is how sessions crossing an hour boundary keep their ``session_id``;
* ``identity_map`` — device -> user learned so far (kept in ClickHouse ``identity_map``);
* ``geo_lookup`` — an IP -> :class:`GeoRecord` function (MaxMind reader in production).

Output is deterministic: rows sorted by (event_time, insert_id), fixed Arrow schema
(:data:`ENRICHED_SCHEMA`, the column order of ``analytics.events``) and fixed Parquet writer
options (:func:`to_parquet_bytes`), so the same input gives byte-identical files.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_TS = pa.timestamp("ms", tz="UTC")

# Column order and types == analytics.events (orchestration/clickhouse/schema.py).
ENRICHED_SCHEMA = pa.schema(
    [
        pa.field("event_time", _TS, nullable=False),
        pa.field("event_hour", _TS, nullable=False),  # Parquet has no second unit: ms, whole hours
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("insert_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("project", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("resolved_user_id", pa.string()),
        pa.field("actor_id", pa.string(), nullable=False),
        pa.field("session_id", pa.int64(), nullable=False),
        pa.field("event_id", pa.int64()),
        *[
            pa.field(name, pa.string(), nullable=False)
            for name in (
                "event_properties", "user_properties", "groups", "group_properties", "app_version", "platform",
                "os_name", "os_version", "device_brand", "device_manufacturer", "device_model", "carrier",
                "language", "country", "region", "city", "dma",
            )
        ],
        pa.field("location_lat", pa.float64()),
        pa.field("location_lng", pa.float64()),
        *[
            pa.field(name, pa.string(), nullable=False)
            for name in ("ip", "ua_browser", "ua_browser_version", "ua_os", "ua_device")
        ],
        pa.field("is_bot", pa.uint8(), nullable=False),
        pa.field("bot_reason", pa.string(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("quantity", pa.int64()),
        pa.field("revenue", pa.float64()),
        *[pa.field(name, pa.string(), nullable=False) for name in ("product_id", "revenue_type", "library", "user_agent")],
        pa.field("received_at", _TS, nullable=False),
        *[pa.field(name, pa.string(), nullable=False) for name in ("client_ip", "upload_id", "plan_violations")],
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("ingested_at", _TS, nullable=False),
    ]
)
ENRICHED_COLUMNS: tuple[str, ...] = tuple(ENRICHED_SCHEMA.names)

_JSON_DEFAULTS = {"event_properties": "{}", "user_properties": "{}", "groups": "{}", "group_properties": "{}"}
_NULLABLE = {f.name for f in ENRICHED_SCHEMA if f.nullable}
_GEO_FIELDS = ("country", "region", "city", "dma")

# User-agent rules for the bot flag: ua-parser's "Spider" device family plus common automation clients.
BOT_UA_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|headless|phantomjs|puppeteer|playwright|selenium|lighthouse|"
    r"curl/|wget/|python-requests|python-urllib|aiohttp|go-http-client|okhttp|java/|libwww|httpclient|scrapy",
    re.IGNORECASE,
)
NO_SESSION = -1


@dataclass(frozen=True)
class GeoRecord:
    country: str = ""
    region: str = ""
    city: str = ""
    dma: str = ""


@dataclass(frozen=True)
class UserAgentInfo:
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    device: str = ""
    is_spider: bool = False


@dataclass(frozen=True)
class EnrichmentConfig:
    session_timeout: timedelta = timedelta(minutes=30)
    bot_max_events_per_minute: int = 100


@dataclass
class EnrichResult:
    table: pa.Table  # ENRICHED_SCHEMA, sorted
    identities: pd.DataFrame  # new device -> user pairs seen in this hour: device_id, user_id, first_seen
    session_state: dict[str, tuple[int, int]] = field(default_factory=dict)  # carry for the next hour
    stats: dict[str, int] = field(default_factory=dict)


# --- small pure helpers -----------------------------------------------------------------------


def _ms(series: pd.Series) -> np.ndarray:
    """Timestamp column -> epoch milliseconds (int64)."""
    return pd.to_datetime(series, utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per ``insert_id``: the first landed (received_at, kafka_partition, kafka_offset)."""
    order = [c for c in ("insert_id", "received_at", "kafka_partition", "kafka_offset") if c in df.columns]
    return df.sort_values(order, kind="mergesort").drop_duplicates("insert_id", keep="first")


def learn_identities(df: pd.DataFrame) -> pd.DataFrame:
    """device -> user pairs from events carrying both, with the first time each pair was seen."""
    both = df[df["user_id"].notna() & df["device_id"].notna()]
    if both.empty:
        return pd.DataFrame({"device_id": pd.Series(dtype=object), "user_id": pd.Series(dtype=object),
                             "first_seen": pd.Series(dtype="datetime64[ms, UTC]")})
    out = both.groupby(["device_id", "user_id"], as_index=False, sort=True)["event_time"].min()
    return out.rename(columns={"event_time": "first_seen"})


def merge_identity_map(known: Mapping[str, str], learned: pd.DataFrame) -> dict[str, str]:
    """device -> user: the earliest user seen on a device wins (known map first, then this hour)."""
    merged = dict(known)
    for row in learned.sort_values(["first_seen", "user_id"], kind="mergesort").itertuples(index=False):
        merged.setdefault(row.device_id, row.user_id)
    return merged


def resolve_identity(df: pd.DataFrame, identity_map: Mapping[str, str]) -> tuple[pd.Series, pd.Series]:
    """(resolved_user_id, actor_id): user_id as sent, else the device's stitched user; actor falls back to device."""
    stitched = df["device_id"].map(lambda d: identity_map.get(d) if isinstance(d, str) else None)
    resolved = df["user_id"].where(df["user_id"].notna(), stitched)
    resolved = resolved.where(resolved.notna(), None)
    actor = resolved.where(resolved.notna(), df["device_id"]).fillna("")
    return resolved.astype(object), actor.astype(object)


def session_key(df: pd.DataFrame) -> pd.Series:
    """Who a session belongs to: the device (Amplitude sessions are per device), else the user."""
    return df["device_id"].where(df["device_id"].notna(), "u:" + df["user_id"].fillna("")).map(
        lambda v: v if v.startswith("u:") else "d:" + v
    )


def sessionize(
    df: pd.DataFrame, carry: Mapping[str, tuple[int, int]], timeout: timedelta
) -> tuple[pd.Series, dict[str, tuple[int, int]]]:
    """Assign ``session_id`` (session start, epoch ms) to every row; return it plus the state to carry on.

    A sent ``session_id`` (>= 0) is honoured and anchors later unsent events of the same key. An unsent
    event continues the key's current session if the previous event (in this hour, or ``carry`` from the
    previous hour) is at most ``timeout`` earlier; otherwise it starts a session at its own time.
    """
    if df.empty:
        return pd.Series([], dtype="int64", index=df.index), dict(carry)
    timeout_ms = int(timeout.total_seconds() * 1000)
    work = pd.DataFrame({"key": session_key(df), "t": _ms(df["event_time"]), "iid": df["insert_id"]}, index=df.index)
    sent = pd.to_numeric(df["session_id"], errors="coerce") if "session_id" in df else pd.Series(np.nan, index=df.index)
    work["sent"] = sent.where(sent >= 0)
    work = work.sort_values(["key", "t", "iid"], kind="mergesort")
    first = ~work["key"].duplicated()
    prev_t = work.groupby("key", sort=False)["t"].shift(1)
    carry_t = work["key"].map(lambda k: carry[k][0] if k in carry else np.nan)
    carry_sid = work["key"].map(lambda k: carry[k][1] if k in carry else np.nan)
    prev_t = prev_t.where(~first, carry_t)
    gap_ok = (work["t"] - prev_t) <= timeout_ms  # False when there is no previous event
    anchor = pd.Series(np.nan, index=work.index)
    # first row of a key continuing the carried session
    anchor = anchor.mask(first & gap_ok, carry_sid)
    # a new session starts at the row's own time
    anchor = anchor.mask(~gap_ok, work["t"].astype("float64"))
    # a sent session id always wins
    anchor = anchor.mask(work["sent"].notna(), work["sent"])
    sid = anchor.groupby(work["key"], sort=False).ffill().astype("int64")
    last = pd.DataFrame({"key": work["key"], "t": work["t"], "sid": sid}).groupby("key", sort=False).last()
    state = dict(carry)
    for key, row in last.iterrows():
        state[key] = (int(row["t"]), int(row["sid"]))
    return sid.reindex(df.index), state


def session_state_from_enriched(df: pd.DataFrame, hour_start: datetime, timeout: timedelta) -> dict[str, tuple[int, int]]:
    """Carry-over state from the previous hour's enriched rows: last (event_time_ms, session_id) per key,
    only for keys active within ``timeout`` of ``hour_start`` (older sessions cannot continue)."""
    if df.empty:
        return {}
    cutoff = int((hour_start - timeout).timestamp() * 1000)
    work = pd.DataFrame({"key": session_key(df), "t": _ms(df["event_time"]), "iid": df["insert_id"],
                         "sid": df["session_id"].astype("int64")})
    work = work[work["t"] >= cutoff].sort_values(["key", "t", "iid"], kind="mergesort")
    last = work.groupby("key", sort=False).last()
    return {str(k): (int(r["t"]), int(r["sid"])) for k, r in last.iterrows()}


@functools.lru_cache(maxsize=1)
def _basic_parser():  # noqa: ANN202
    from ua_parser import BasicResolver, CachingResolver, Parser, load_builtins
    from ua_parser.caching import S3Fifo

    return Parser(CachingResolver(BasicResolver(load_builtins()), S3Fifo(2000)))


def parse_user_agent(ua: str) -> UserAgentInfo:
    """ua-parser 1.x: browser family + version, OS family, device family (the pure-Python resolver, whatever
    backend is installed: the oracle of the compiled one)."""
    if not ua:
        return UserAgentInfo()
    r = _basic_parser().parse(ua)
    browser = version = os_name = device = ""
    if r.user_agent is not None:
        browser = r.user_agent.family or ""
        version = ".".join(p for p in (r.user_agent.major, r.user_agent.minor, r.user_agent.patch) if p)
    if r.os is not None:
        os_name = r.os.family or ""
    if r.device is not None:
        device = r.device.family or ""
    return UserAgentInfo(browser, version, os_name, device, is_spider=device == "Spider")


def bot_flags(
    df: pd.DataFrame, ua: Mapping[str, UserAgentInfo], max_per_minute: int
) -> tuple[pd.Series, pd.Series]:
    """(is_bot, bot_reason): user-agent rules first, then a per-device rate rule (events in any one minute)."""
    agents = df["user_agent"].fillna("")
    reason = pd.Series("", index=df.index, dtype=object)
    spider = agents.map(lambda a: bool(a) and ua[a].is_spider)
    pattern = agents.map(lambda a: bool(a) and BOT_UA_PATTERN.search(a) is not None)
    reason = reason.mask(pattern, "ua:pattern").mask(spider, "ua:spider")
    if df["device_id"].notna().any():
        minute = _ms(df["event_time"]) // 60_000
        per_min = pd.DataFrame({"d": df["device_id"], "m": minute}).groupby(["d", "m"]).size()
        busiest = per_min.groupby(level="d").max()
        fast = busiest[busiest > max_per_minute]
        rate = df["device_id"].map(lambda d: f"rate:{int(fast[d])}/min" if isinstance(d, str) and d in fast.index else "")
        reason = reason.where(reason != "", rate)
    is_bot = (reason != "").astype("uint8")
    return is_bot, reason


def lookup_ip(ip: str, client_ip: str) -> str:
    """The IP to geolocate: the event's own ``ip`` when it is an address, else the request's client IP."""
    for candidate in (ip, client_ip):
        if candidate and candidate != "$remote":
            try:
                ipaddress.ip_address(candidate)
                return candidate
            except ValueError:
                continue
    return ""


def apply_geo(df: pd.DataFrame, geo_lookup: Callable[[str], GeoRecord | None] | None) -> pd.DataFrame:
    """country/region/city/dma: the event's own value, else geo-IP (one lookup per distinct IP)."""
    out = pd.DataFrame({f: df[f].fillna("") for f in _GEO_FIELDS}, index=df.index)
    if geo_lookup is None:
        return out
    ips = [lookup_ip(a or "", b or "") for a, b in zip(df["ip"].tolist(), df["client_ip"].tolist(), strict=True)]
    cache: dict[str, GeoRecord] = {}
    for ip in set(ips):
        cache[ip] = (geo_lookup(ip) if ip else None) or GeoRecord()
    for f in _GEO_FIELDS:
        geo = pd.Series([getattr(cache[ip], f) for ip in ips], index=df.index, dtype=object)
        out[f] = out[f].where(out[f] != "", geo)
    return out


def _empty_frame() -> pd.DataFrame:
    return ENRICHED_SCHEMA.empty_table().to_pandas()


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """pandas -> ENRICHED_SCHEMA table sorted by (event_time, insert_id), no pandas metadata."""
    df = df.sort_values(["event_time", "insert_id"], kind="mergesort").reset_index(drop=True)
    arrays = []
    for f in ENRICHED_SCHEMA:
        col = df[f.name]
        if f.nullable:
            col = col.astype(object).where(col.notna(), None)
        arrays.append(pa.array(col.tolist() if col.dtype == object else col, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=ENRICHED_SCHEMA)


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Fixed writer options so the same rows give byte-identical files."""
    sink = io.BytesIO()
    pq.write_table(
        table.replace_schema_metadata(None), sink, compression="zstd", compression_level=3,
        row_group_size=1_000_000, use_dictionary=True, write_statistics=True, version="2.6",
        data_page_version="1.0", store_schema=False,
    )
    return sink.getvalue()


def enrich_hour(
    raw: pa.Table | pd.DataFrame,
    *,
    hour_start: datetime,
    carry: Mapping[str, tuple[int, int]] | None = None,
    identity_map: Mapping[str, str] | None = None,
    geo_lookup: Callable[[str], GeoRecord | None] | None = None,
    config: EnrichmentConfig = EnrichmentConfig(),  # noqa: B008 - frozen dataclass
) -> EnrichResult:
    """Raw landed rows of one hour (RAW_EVENT_SCHEMA, plus optional ``ingested_at``) -> enriched rows.

    Steps: dedupe by insert_id -> identity stitching -> sessionization -> user agent -> bot flag -> geo-IP.
    """
    df = raw.to_pandas(types_mapper=None) if isinstance(raw, pa.Table) else raw.copy()
    hour_start = hour_start.astimezone(UTC)
    stats = {"raw_rows": len(df)}
    if df.empty:
        return EnrichResult(to_arrow(_empty_frame()), learn_identities(_raw_id_frame()), dict(carry or {}),
                            {**stats, "rows": 0, "duplicates": 0})
    df = dedupe(df).reset_index(drop=True)
    stats["duplicates"] = stats["raw_rows"] - len(df)
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    if "ingested_at" not in df.columns:
        df["ingested_at"] = df["received_at"]

    learned = learn_identities(df)
    mapping = merge_identity_map(identity_map or {}, learned)
    df["resolved_user_id"], df["actor_id"] = resolve_identity(df, mapping)

    df["session_id"], state = sessionize(df, carry or {}, config.session_timeout)

    agents = df["user_agent"].fillna("")
    ua = {a: parse_user_agent(a) for a in agents.unique()}
    df["ua_browser"] = agents.map(lambda a: ua[a].browser)
    df["ua_browser_version"] = agents.map(lambda a: ua[a].browser_version)
    df["ua_os"] = agents.map(lambda a: ua[a].os)
    df["ua_device"] = agents.map(lambda a: ua[a].device)
    df["is_bot"], df["bot_reason"] = bot_flags(df, ua, config.bot_max_events_per_minute)

    geo = apply_geo(df, geo_lookup)
    for f in _GEO_FIELDS:
        df[f] = geo[f]

    df["event_hour"] = df["event_time"].dt.floor("h")
    df["event_date"] = df["event_time"].dt.date
    for name in ENRICHED_COLUMNS:
        if name in _NULLABLE or name in ("event_time", "event_hour", "event_date", "received_at", "ingested_at"):
            continue
        if df[name].dtype == object:
            df[name] = df[name].fillna(_JSON_DEFAULTS.get(name, ""))
    stats.update(
        rows=len(df),
        bots=int(df["is_bot"].sum()),
        stitched=int((df["user_id"].isna() & df["resolved_user_id"].notna()).sum()),
        plan_violations=int((df["plan_violations"] != "").sum()),
        outside_hour=int((df["event_hour"] != pd.Timestamp(hour_start)).sum()),
    )
    return EnrichResult(to_arrow(df), learned, state, stats)


def _raw_id_frame() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(dtype=object), "device_id": pd.Series(dtype=object),
                         "event_time": pd.Series(dtype="datetime64[ms, UTC]")})


def plan_violation_count(values: pd.Series) -> int:
    """Number of tracking-plan violations listed in the ``plan_violations`` JSON arrays."""
    total = 0
    for v in values:
        if v:
            try:
                total += len(json.loads(v))
            except (ValueError, TypeError):
                total += 1
    return total
