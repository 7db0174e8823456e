"""Enrichment rules for one event hour: pure, vectorized functions over Arrow/numpy; no Dagster, no I/O.

The Dagster asset (``orchestration.lake.assets``) and the Spark job (``spark_jobs``, per session-key
bucket of an hour) both call :func:`enrich_hour`, so the two paths produce the same rows. Everything
that is not in the hour's raw rows comes in explicitly:

* ``carry`` — session state at the end of the previous hour (:func:`session_state_from_enriched`),
  which is how sessions crossing an hour boundary keep their ``session_id``;
* ``identity_map`` — device -> user learned so far (kept in ClickHouse ``identity_map``);
* ``geo_lookup`` — an IP -> :class:`GeoRecord` function (MaxMind reader in production).

Rules (the contract; tests/enrichment_reference.py is the per-row oracle they are tested against):

* dedupe: one row per ``insert_id``, the first landed by (received_at, kafka_partition, kafka_offset);
* identity: ``resolved_user_id`` = ``user_id`` as sent, else the device's user (the known map wins, else
  the earliest (first_seen, user_id) pair of this hour); ``actor_id`` = resolved user, else device, else "";
* sessions per key (device ``d:<id>`` — a device id already starting with ``u:`` is used as is — else
  user ``u:<id>``), rows ordered by (event_time, insert_id): a sent ``session_id`` >= 0 wins and anchors the
  key's later unsent rows; an unsent row continues the key's session when the previous row (or the
  carried last event) is at most ``session_timeout`` earlier, else starts one at its own time;
* user agent: ua-parser once per distinct agent; bot = ua-parser's ``Spider`` device ("ua:spider"),
  else :data:`BOT_UA_PATTERN` ("ua:pattern"), else a device with more than ``bot_max_events_per_minute``
  events in one clock minute of the hour ("rate:<busiest minute>/min", on all its rows);
* geo: the event's own country/region/city/dma, else geo-IP of its ``ip`` (when an address), else of the
  request's ``client_ip`` — one lookup per distinct pair.

Every step works on whole columns; Python runs once per *distinct* agent, IP pair, device or session
key, never per row. Output is deterministic: rows sorted by (event_time, insert_id), fixed Arrow
schema (:data:`ENRICHED_SCHEMA`, the column order of ``analytics.events``) and fixed Parquet writer
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
import pyarrow.compute as pc
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


# --- column helpers ------------------------------------------------------------------------------

Carry = Mapping[str, tuple[int, int]]
_MS_PER_MINUTE, _MS_PER_HOUR, _MS_PER_DAY = 60_000, 3_600_000, 86_400_000
_STRING_DEFAULTS = {f.name: _JSON_DEFAULTS.get(f.name, "") for f in ENRICHED_SCHEMA
                    if f.type == pa.string() and not f.nullable}


def _col(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _ms(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamp column -> epoch milliseconds (int64)."""
    return np.asarray(col.cast(_TS).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _encode(col: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode: (int64 code per row, -1 for null; the distinct values)."""
    enc = pc.dictionary_encode(col, null_encoding="mask")
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    codes = np.asarray(enc.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes, enc.dictionary


def _codes(col: pa.Array) -> tuple[np.ndarray, list]:
    """Like :func:`_encode`, the distinct values as Python objects (for per-distinct Python work)."""
    codes, dictionary = _encode(col)
    return codes, dictionary.to_pylist()


def _take(values: list, codes: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Per-distinct values spread back over the rows (codes index ``values``)."""
    return pa.array(values, type=type_).take(pa.array(codes))


def _order(codes_and_keys: list[np.ndarray]) -> np.ndarray:
    """Stable order by several integer keys, the first most significant."""
    return np.lexsort(tuple(reversed(codes_and_keys)))


def _string_rank(col: pa.Array) -> np.ndarray:
    """Rank of each row's string in code-point (= UTF-8 byte) order; equal strings share a rank, nulls last."""
    ranks = pc.rank(col, sort_keys="ascending", tiebreaker="dense")  # nulls at the end by default
    return np.asarray(ranks.to_numpy(zero_copy_only=False), dtype=np.int64)


def _group_starts(sorted_codes: np.ndarray) -> np.ndarray:
    """True where a run of equal codes starts (input sorted by code)."""
    first = np.ones(len(sorted_codes), dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return first


# --- the rules --------------------------------------------------------------------------------------


def dedupe_indices(raw: pa.Table) -> np.ndarray:
    """Row positions of the rows kept by :func:`dedupe`, ascending."""
    if raw.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    codes, _ = _encode(_col(raw, "insert_id"))
    keys = [codes]
    for name in ("received_at", "kafka_partition", "kafka_offset"):
        if name in raw.column_names:
            col = _col(raw, name)
            keys.append(_ms(col) if pa.types.is_timestamp(col.type) else np.asarray(col.to_numpy(zero_copy_only=False)))
    order = _order(keys)
    return np.sort(order[_group_starts(codes[order])])


def dedupe(raw: pa.Table) -> pa.Table:
    """Keep one row per ``insert_id``: the first landed (received_at, kafka_partition, kafka_offset)."""
    return raw.take(pa.array(dedupe_indices(raw)))


def session_keys(table: pa.Table) -> pa.Array:
    """Who a session belongs to: the device (Amplitude sessions are per device), else the user."""
    device, user = _col(table, "device_id"), _col(table, "user_id")
    as_device = pc.if_else(pc.starts_with(device, "u:"), device, pc.binary_join_element_wise("d:", device, ""))
    as_user = pc.binary_join_element_wise("u:", pc.fill_null(user, ""), "")
    return pc.if_else(pc.is_null(device), as_user, as_device)


#: :func:`session_keys` as a ClickHouse SQL expression over ``device_id`` / ``user_id`` columns: the same rule,
#: for queries that compute session keys on the server (``orchestration.sensors.live.rebuild_state``).
#: Keep the two in step (tests/test_enrichment_differential.py checks they agree).
SESSION_KEY_SQL = ("if(device_id IS NULL, concat('u:', ifNull(user_id, '')), "
                   "if(startsWith(device_id, 'u:'), device_id, concat('d:', device_id)))")


def session_key(df: pd.DataFrame | pa.Table) -> pd.Series:
    """:func:`session_keys` as a pandas Series (index kept), for callers holding pandas frames."""
    if isinstance(df, pd.DataFrame):
        t = pa.table({"device_id": pa.array(df["device_id"], type=pa.string(), from_pandas=True),
                      "user_id": pa.array(df["user_id"], type=pa.string(), from_pandas=True)})
        return pd.Series(session_keys(t).to_pylist(), index=df.index, dtype=object)
    return pd.Series(session_keys(df).to_pylist(), dtype=object)


def _last_per_key(keys: pa.Array, t: np.ndarray, iid: pa.Array, sid: np.ndarray) -> dict[str, tuple[int, int]]:
    """{key: (t, sid) of its last row in (t, insert_id) order}."""
    if len(t) == 0:
        return {}
    codes, values = _codes(keys)
    order = _order([codes, t, _string_rank(iid)])
    sc = codes[order]
    last = np.ones(len(sc), dtype=bool)
    last[:-1] = sc[1:] != sc[:-1]
    rows = order[last]
    return {values[c]: (int(a), int(b)) for c, a, b in zip(codes[rows].tolist(), t[rows].tolist(), sid[rows].tolist(),
                                                            strict=True)}


def sessionize(table: pa.Table, carry: Carry, timeout: timedelta) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """``session_id`` (session start, epoch ms) for every row of ``table`` (in its order), plus the state to
    carry on (``carry`` updated with each key's last (event ms, session id)). The rule is in the module docstring."""
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=np.int64), dict(carry)
    timeout_ms = int(timeout.total_seconds() * 1000)
    keys = session_keys(table)
    codes, values = _codes(keys)
    t = _ms(_col(table, "event_time"))
    iid = _col(table, "insert_id")
    order = _order([codes, t, _string_rank(iid)])
    k, ts = codes[order], t[order]
    sent_col = _col(table, "session_id") if "session_id" in table.column_names else pa.nulls(n, pa.int64())
    sent_raw = np.asarray(sent_col.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)[order]
    sent_ok = sent_raw >= 0
    first = _group_starts(k)
    carried = [carry.get(v) for v in values]  # once per distinct key
    has_carry = np.array([c is not None for c in carried], dtype=bool)
    carry_t = np.array([c[0] if c is not None else 0 for c in carried], dtype=np.int64)
    carry_sid = np.array([c[1] if c is not None else 0 for c in carried], dtype=np.int64)
    prev_t = np.empty(n, dtype=np.int64)
    prev_t[1:] = ts[:-1]
    prev_t[first] = carry_t[k[first]]
    has_prev = ~first | has_carry[k]
    gap_ok = has_prev & (ts - prev_t <= timeout_ms)
    anchor = np.zeros(n, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    cont = first & gap_ok
    anchor[cont], valid[cont] = carry_sid[k[cont]], True
    anchor[~gap_ok], valid[~gap_ok] = ts[~gap_ok], True
    anchor[sent_ok], valid[sent_ok] = sent_raw[sent_ok], True
    # forward fill within a key: every key's first row is valid (carried or a new start), so a global fill suffices
    src = np.maximum.accumulate(np.where(valid, np.arange(n), 0))
    sid_sorted = anchor[src]
    sid = np.empty(n, dtype=np.int64)
    sid[order] = sid_sorted
    last = np.ones(n, dtype=bool)
    last[:-1] = k[1:] != k[:-1]
    state = dict(carry)
    for c, a, b in zip(k[last].tolist(), ts[last].tolist(), sid_sorted[last].tolist(), strict=True):
        state[values[c]] = (int(a), int(b))
    return sid, state


def session_state_from_enriched(enriched: pa.Table | pd.DataFrame, hour_start: datetime,
                                timeout: timedelta) -> dict[str, tuple[int, int]]:
    """Carry-over state from the previous hour's enriched rows: last (event_time_ms, session_id) per key,
    only for keys active within ``timeout`` of ``hour_start`` (older sessions cannot continue)."""
    if isinstance(enriched, pd.DataFrame):
        enriched = pa.table({
            "device_id": pa.array(enriched["device_id"], type=pa.string(), from_pandas=True),
            "user_id": pa.array(enriched["user_id"], type=pa.string(), from_pandas=True),
            "event_time": pa.array(pd.to_datetime(enriched["event_time"], utc=True), type=_TS),
            "insert_id": pa.array(enriched["insert_id"], type=pa.string(), from_pandas=True),
            "session_id": pa.array(enriched["session_id"].astype("int64"), type=pa.int64()),
        })
    if enriched.num_rows == 0:
        return {}
    cutoff = int((hour_start - timeout).timestamp() * 1000)
    t = _ms(_col(enriched, "event_time"))
    recent = pa.array(t >= cutoff)
    part = enriched.select(["device_id", "user_id", "event_time", "insert_id", "session_id"]).filter(recent)
    sid = np.asarray(_col(part, "session_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    return _last_per_key(session_keys(part), _ms(_col(part, "event_time")), _col(part, "insert_id"), sid)


def learn_identities(table: pa.Table) -> pd.DataFrame:
    """device -> user pairs from events carrying both, with the first time each pair was seen
    (columns device_id, user_id, first_seen; sorted by device, user)."""
    both = table.select(["device_id", "user_id", "event_time"]).filter(
        pc.and_(pc.is_valid(_col(table, "device_id")), pc.is_valid(_col(table, "user_id"))))
    if both.num_rows == 0:
        return pd.DataFrame({"device_id": pd.Series(dtype=object), "user_id": pd.Series(dtype=object),
                             "first_seen": pd.Series(dtype="datetime64[ms, UTC]")})
    out = both.group_by(["device_id", "user_id"], use_threads=False).aggregate([("event_time", "min")])
    out = out.sort_by([("device_id", "ascending"), ("user_id", "ascending")])
    return pd.DataFrame({"device_id": out.column("device_id").to_pylist(), "user_id": out.column("user_id").to_pylist(),
                         "first_seen": out.column("event_time_min").cast(_TS).to_pandas()})


def earliest_users(learned: pd.DataFrame) -> dict[str, str]:
    """device -> the user of its earliest (first_seen, user_id) pair in ``learned``."""
    if learned.empty:
        return {}
    ordered = learned.sort_values(["first_seen", "user_id"], kind="mergesort").drop_duplicates("device_id", keep="first")
    return dict(zip(ordered["device_id"].tolist(), ordered["user_id"].tolist(), strict=True))


def merge_identity_map(known: Mapping[str, str], learned: pd.DataFrame) -> dict[str, str]:
    """device -> user: the earliest user seen on a device wins (known map first, then ``learned``)."""
    return {**earliest_users(learned), **known}


def resolve_identity(table: pa.Table, known: Mapping[str, str], learned: Mapping[str, str]) -> tuple[pa.Array, pa.Array]:
    """(resolved_user_id, actor_id): user_id as sent, else the device's stitched user (``known`` first, then
    ``learned``); actor falls back to the device, then ""."""
    device, user = _col(table, "device_id"), _col(table, "user_id")
    codes, devices = _codes(device)
    stitched_values = [known[d] if d in known else learned.get(d) for d in devices]  # once per distinct device
    stitched = _take([*stitched_values, None], np.where(codes < 0, len(devices), codes), pa.string())
    resolved = pc.coalesce(user, stitched)
    actor = pc.coalesce(resolved, device, pa.scalar("", pa.string()))
    return resolved, actor


@functools.lru_cache(maxsize=1)
def _ua_parser():  # noqa: ANN202 - ua_parser.Parser
    """ua-parser's best compiled backend (``ua-parser[regex]`` = ua-parser-rs, else re2, else pure Python), no
    result cache: :func:`user_agent_columns` parses each distinct agent once anyway. All backends read the
    same builtin regexes; tests/test_enrichment_differential.py checks them against the pure-Python one."""
    from ua_parser import BasicResolver, BestAvailableResolver, Parser, load_builtins, load_lazy_builtins

    matchers = load_builtins() if BestAvailableResolver is BasicResolver else load_lazy_builtins()
    return Parser(BestAvailableResolver(matchers))


def parse_user_agent(ua: str) -> UserAgentInfo:
    """ua-parser 1.x: browser family + version, OS family, device family."""
    if not ua:
        return UserAgentInfo()
    r = _ua_parser().parse(ua)
    browser = version = os_name = device = ""
    if r.user_agent is not None:
        browser = r.user_agent.family or ""
        version = ".".join(p for p in (r.user_agent.major, r.user_agent.minor, r.user_agent.patch) if p)
    if r.os is not None:
        os_name = r.os.family or ""
    if r.device is not None:
        device = r.device.family or ""
    return UserAgentInfo(browser, version, os_name, device, is_spider=device == "Spider")


def user_agent_columns(agents: pa.Array) -> tuple[dict[str, pa.Array], np.ndarray, list[str]]:
    """(ua_* columns, per-row code of the agent, per-distinct-agent UA bot reason) — one parse per distinct agent."""
    codes, distinct = _codes(pc.fill_null(agents, ""))
    infos = [parse_user_agent(a) for a in distinct]
    cols = {
        "ua_browser": _take([i.browser for i in infos], codes, pa.string()),
        "ua_browser_version": _take([i.browser_version for i in infos], codes, pa.string()),
        "ua_os": _take([i.os for i in infos], codes, pa.string()),
        "ua_device": _take([i.device for i in infos], codes, pa.string()),
    }
    reasons = ["ua:spider" if a and i.is_spider else "ua:pattern" if a and BOT_UA_PATTERN.search(a) else ""
               for a, i in zip(distinct, infos, strict=True)]
    return cols, codes, reasons


def rate_reasons(device: pa.Array, t: np.ndarray, max_per_minute: int) -> pa.Array:
    """"rate:N/min" on every row of a device whose busiest clock minute has N > ``max_per_minute`` events, else ""."""
    codes, devices = _codes(device)
    keep = codes >= 0
    busiest = np.zeros(len(devices), dtype=np.int64)
    if keep.any():
        d, m = codes[keep], t[keep] // _MS_PER_MINUTE
        order = _order([d, m])
        d, m = d[order], m[order]
        starts = np.flatnonzero(_group_starts(d) | np.concatenate(([True], m[1:] != m[:-1])))
        counts = np.diff(np.append(starts, len(d)))
        np.maximum.at(busiest, d[starts], counts)
    labels = [f"rate:{int(b)}/min" if b > max_per_minute else "" for b in busiest.tolist()]
    return _take([*labels, ""], np.where(keep, codes, len(devices)), pa.string())


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


def geo_columns(table: pa.Table, geo_lookup: Callable[[str], GeoRecord | None] | None) -> dict[str, pa.Array]:
    """country/region/city/dma: the event's own value, else geo-IP (one lookup per distinct (ip, client_ip))."""
    own = {f: pc.fill_null(_col(table, f), "") for f in _GEO_FIELDS}
    if geo_lookup is None or table.num_rows == 0:
        return own
    ip_codes, ips = _codes(pc.fill_null(_col(table, "ip"), ""))
    cip_codes, cips = _codes(pc.fill_null(_col(table, "client_ip"), ""))
    pair_codes, inverse = np.unique(ip_codes * len(cips) + cip_codes, return_inverse=True)
    found: dict[str, GeoRecord] = {}
    records = []
    for pair in pair_codes.tolist():  # once per distinct pair, once per distinct address
        address = lookup_ip(ips[pair // len(cips)], cips[pair % len(cips)])
        if address not in found:
            found[address] = (geo_lookup(address) if address else None) or GeoRecord()
        records.append(found[address])
    out = {}
    for f in _GEO_FIELDS:
        geo = _take([getattr(r, f) for r in records], inverse.reshape(-1), pa.string())
        out[f] = pc.if_else(pc.not_equal(own[f], ""), own[f], geo)
    return out


def _nan_to_null(col: pa.Array) -> pa.Array:
    """Float NaN reads as "missing" like null (what the lake's readers and ClickHouse expect)."""
    if pa.types.is_floating(col.type):
        return pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    return col


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Fixed writer options so the same rows give byte-identical files."""
    sink = io.BytesIO()
    pq.write_table(
        table.combine_chunks().replace_schema_metadata(None), sink, compression="zstd", compression_level=3,
        row_group_size=1_000_000, use_dictionary=True, write_statistics=True, version="2.6",
        data_page_version="1.0", store_schema=False,
    )
    return sink.getvalue()


def _as_raw_table(raw: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(raw, pd.DataFrame):
        from eventpipe_core.event_model import RAW_EVENT_SCHEMA

        fields = [f for f in RAW_EVENT_SCHEMA if f.name in raw.columns]
        if "ingested_at" in raw.columns:
            fields.append(pa.field("ingested_at", _TS))
        return pa.Table.from_pandas(raw[[f.name for f in fields]], schema=pa.schema(fields), preserve_index=False)
    return raw


def enrich_hour(
    raw: pa.Table | pd.DataFrame,
    *,
    hour_start: datetime,
    carry: Carry | None = None,
    identity_map: Mapping[str, str] | None = None,
    geo_lookup: Callable[[str], GeoRecord | None] | None = None,
    config: EnrichmentConfig = EnrichmentConfig(),  # noqa: B008 - frozen dataclass
) -> EnrichResult:
    """Raw landed rows of one hour (RAW_EVENT_SCHEMA, plus optional ``ingested_at``) -> enriched rows.

    Steps: dedupe by insert_id -> identity stitching -> sessionization -> user agent -> bot flag -> geo-IP.
    """
    raw = _as_raw_table(raw)
    hour_start = hour_start.astimezone(UTC)
    stats = {"raw_rows": raw.num_rows}
    if raw.num_rows == 0:
        return EnrichResult(ENRICHED_SCHEMA.empty_table(), learn_identities(_empty_ids()), dict(carry or {}),
                            {**stats, "rows": 0, "duplicates": 0})
    kept = dedupe_indices(raw)
    t = _ms(_col(raw, "event_time"))[kept]
    # the output order: (event_time, insert_id), unique after dedupe; one take of the wide table
    order = _order([t, _string_rank(_col(raw, "insert_id").take(pa.array(kept)))])
    df = raw.take(pa.array(kept[order])).combine_chunks()
    t = t[order]
    n = df.num_rows
    stats["duplicates"] = raw.num_rows - n

    learned = learn_identities(df)
    resolved, actor = resolve_identity(df, identity_map or {}, earliest_users(learned))
    session_id, state = sessionize(df, carry or {}, config.session_timeout)
    ua_cols, ua_codes, ua_reasons = user_agent_columns(_col(df, "user_agent"))
    reason = _take(ua_reasons, ua_codes, pa.string())
    if _col(df, "device_id").null_count < n:
        reason = pc.if_else(pc.equal(reason, ""), rate_reasons(_col(df, "device_id"), t, config.bot_max_events_per_minute),
                            reason)
    is_bot = pc.not_equal(reason, "").cast(pa.uint8())
    hour_ms = t - t % _MS_PER_HOUR

    computed: dict[str, pa.Array] = {
        "event_time": pa.array(t, type=pa.int64()).cast(_TS),
        "event_hour": pa.array(hour_ms, type=pa.int64()).cast(_TS),
        "event_date": pa.array((t // _MS_PER_DAY).astype(np.int32), type=pa.int32()).cast(pa.date32()),
        "resolved_user_id": resolved,
        "actor_id": actor,
        "session_id": pa.array(session_id, type=pa.int64()),
        **ua_cols,
        "is_bot": is_bot,
        "bot_reason": reason,
        **geo_columns(df, geo_lookup),
        "ingested_at": _col(df, "ingested_at") if "ingested_at" in df.column_names else _col(df, "received_at"),
    }
    arrays = []
    for f in ENRICHED_SCHEMA:
        col = computed[f.name] if f.name in computed else _nan_to_null(_col(df, f.name))
        if f.name in _STRING_DEFAULTS:
            col = pc.fill_null(col, _STRING_DEFAULTS[f.name])
        arrays.append(col.cast(f.type))
    table = pa.Table.from_arrays(arrays, schema=ENRICHED_SCHEMA)

    plan = table.column("plan_violations")
    stats.update(
        rows=n,
        bots=int(np.count_nonzero(is_bot.to_numpy(zero_copy_only=False))),
        stitched=int(pc.sum(pc.and_(pc.is_null(table.column("user_id")), pc.is_valid(resolved))).as_py() or 0),
        plan_violations=int(pc.sum(pc.not_equal(plan, "").cast(pa.int64())).as_py() or 0),
        outside_hour=int(np.count_nonzero(hour_ms != int(hour_start.timestamp() * 1000))),
    )
    return EnrichResult(table, learned, state, stats)


def _empty_ids() -> pa.Table:
    return pa.table({"device_id": pa.array([], pa.string()), "user_id": pa.array([], pa.string()),
                     "event_time": pa.array([], _TS)})


def plan_violation_count(values: pd.Series | pa.Array | pa.ChunkedArray) -> int:
    """Number of tracking-plan violations listed in the ``plan_violations`` JSON arrays (each distinct text parsed once)."""
    counts: dict[str, int] = {}
    total = 0
    for v in values.tolist() if isinstance(values, pd.Series) else values.to_pylist():
        if not v:
            continue
        if v not in counts:
            try:
                counts[v] = len(json.loads(v))
            except (ValueError, TypeError):
                counts[v] = 1
        total += counts[v]
    return total
