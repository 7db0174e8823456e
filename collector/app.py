"""The collector's ASGI app (Starlette): Amplitude HTTP V2, Batch and /track → Kafka.

Request pipeline (first failing step answers): content type (400) → body size and deadline,
while reading (413, 408) → gzip/deflate decoding (400/413/415) → JSON (400) → request shape (400
``missing_field``) → API key (400 ``Invalid API key: …``) → per-key request rate (429) → event
count (413: V2 and /track 2000, /batch ``COLLECTOR_BATCH_MAX_EVENTS``) → every event's fields
and the lake's rule (400 with the index lists) → tracking plan in ``reject`` mode (400) → encoded
size of each event (400 ``events_too_large``) → per-device / per-user event rate (429) → produce
every envelope and wait for all acks (200, or 503 if Kafka fails or times out). A request is
all-or-nothing: on any 4xx no event of it is produced, which is what the SDKs assume when they
re-send the events not listed; a 503 may follow a partial write, harmless because a re-send
carries the same insert_ids (given or generated deterministically).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fastjsonschema
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from collector import validation as v
from collector.metrics import CONTENT_TYPE_LATEST, CollectorMetrics
from collector.producer import EventProducer, ProduceError, RecordTooLarge
from collector.ratelimit import make_limits
from eventpipe_core.event_model import encode_envelope, event_key, make_envelope
from eventpipe_core.metadata import MetadataError, MetadataStore, ProjectPlan
from eventpipe_core.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    name: str
    max_bytes: int
    max_events: int | None
    batch_limits: bool  # Batch API rate limits (1000 eps) instead of V2's (30 eps)
    bare: bool = False  # /track: also a bare event or list of events


VALIDATE_CHUNK = 5000  # events per chunk of validation/encoding; bigger requests do it in the thread pool
PARSE_INLINE_BYTES = 256 * 1024  # bodies above this are decoded and parsed in the thread pool

V2 = Endpoint("httpapi", v.V2_MAX_BYTES, v.V2_MAX_EVENTS, batch_limits=False)
BATCH = Endpoint("batch", v.BATCH_MAX_BYTES, None, batch_limits=True)
TRACK = Endpoint("track", v.V2_MAX_BYTES, v.V2_MAX_EVENTS, batch_limits=False, bare=True)


class _TTLCache:
    """A small time-bounded cache so a revoked key or a changed plan takes effect within the TTL."""

    def __init__(self, ttl_s: float, max_items: int = 10_000) -> None:
        self.ttl_s, self.max_items = ttl_s, max_items
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl_s, value)


@dataclass
class _CompiledPlan:
    enforcement: str
    validators: dict[str, Any]


def parse_networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()]


def client_ip(request: Request, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str | None:
    """The peer address, or — when the peer is a trusted proxy — the right-most untrusted address
    of ``X-Forwarded-For`` (entries left of it could be forged by the client)."""
    peer = request.client.host if request.client else None

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not peer or not trusted or not is_trusted(peer):
        return peer
    chain = [p.strip() for h in request.headers.getlist("x-forwarded-for") for p in h.split(",") if p.strip()]
    for addr in reversed(chain):
        if not is_trusted(addr):
            try:
                return str(ipaddress.ip_address(addr))
            except ValueError:
                return peer  # garbage in the header: fall back to the proxy itself
    return chain[0] if chain else peer


class Collector:
    """State shared by the request handlers of one app: store, producer, limiters, caches, metrics."""

    def __init__(self, settings: Settings, store: MetadataStore | None = None, producer: EventProducer | None = None) -> None:
        self.settings = settings
        self.store = store or MetadataStore(settings.metadata_db_url or "")
        self.producer = producer or EventProducer(settings)
        self.metrics = CollectorMetrics()
        self.trusted = parse_networks(settings.collector_trusted_proxies)
        self.v2_limits, self.batch_limits, self.key_limits, self.redis = make_limits(settings)
        self.keys = _TTLCache(settings.collector_metadata_ttl_s)
        self.plans = _TTLCache(settings.collector_metadata_ttl_s)

    # --- metadata (cached; DB calls off the event loop) --------------------------------------
    async def project_for_key(self, api_key: str) -> str | None:
        hit, project = self.keys.get(api_key)
        if not hit:
            project = await run_in_threadpool(self.store.project_for_key, api_key)
            self.keys.put(api_key, project)
        return project

    async def plan(self, project: str) -> _CompiledPlan:
        hit, compiled = self.plans.get(project)
        if not hit:
            try:
                plan: ProjectPlan = await run_in_threadpool(self.store.plan, project)
            except MetadataError:
                plan = ProjectPlan(project, "off", {})
            validators = {}
            if plan.enforcement != "off":
                for event_type, schema in plan.schemas.items():
                    try:
                        validators[event_type] = fastjsonschema.compile(schema)
                    except fastjsonschema.JsonSchemaDefinitionException:
                        log.error("tracking plan of %s: schema of %r does not compile; ignored", project, event_type)
            compiled = _CompiledPlan(plan.enforcement, validators)
            self.plans.put(project, compiled)
        return compiled

    # --- the ingestion pipeline ---------------------------------------------------------------
    async def read_body(self, request: Request, endpoint: Endpoint) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > endpoint.max_bytes:
            raise v.error(413, v.ERR_PAYLOAD_TOO_LARGE, "payload_too_large")
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > endpoint.max_bytes:
                    raise v.error(413, v.ERR_PAYLOAD_TOO_LARGE, "payload_too_large")
                chunks.append(chunk)

        try:  # a client trickling its body (slowloris) is cut off: 408, which SDKs retry
            await asyncio.wait_for(read(), self.settings.collector_body_timeout_s)
        except TimeoutError:
            raise v.error(408, v.ERR_BODY_TIMEOUT, "body_timeout") from None
        return b"".join(chunks)

    async def _off_loop(self, big: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the thread pool when the work is big (the event loop keeps answering others)."""
        if big:
            return await run_in_threadpool(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def validate(
        self, upload: v.UploadRequest, *, project: str, now_ms: int, client_ip: str | None,
    ) -> list[dict[str, Any]]:
        """Every event's rules, in chunks of ``VALIDATE_CHUNK`` events (off the loop beyond the first)."""
        n = len(upload.events)
        errors = v.EventErrors()
        seen: dict[str, int] = {}
        out: list[dict[str, Any]] = []
        for start in range(0, n, VALIDATE_CHUNK):
            events, errs = await self._off_loop(
                n > VALIDATE_CHUNK, v.validate_events, upload.events[start:start + VALIDATE_CHUNK], project=project,
                min_id_length=upload.min_id_length, now_ms=now_ms, max_future_ms=self.settings.collector_max_future_s * 1000,
                client_ip=client_ip, index_offset=start, seen=seen,
            )
            errors.merge(errs)
            if not errors:
                out.extend(events)
        if errors:
            raise errors.rejection()
        return out

    def encode(
        self, events: list[dict[str, Any]], start: int, *, project: str, received_at: int, client_ip: str | None,
        upload_id: str, violations: dict[int, list[str]],
    ) -> tuple[list[tuple[bytes | None, bytes]], list[int]]:
        """(key, envelope) records of ``events`` (indexes from ``start``), and the indexes of events
        larger than ``COLLECTOR_MAX_EVENT_BYTES`` once encoded (the broker's message limit)."""
        limit = self.settings.collector_max_event_bytes
        records: list[tuple[bytes | None, bytes]] = []
        too_large: list[int] = []
        for i, event in enumerate(events, start):
            key = event_key(event)
            value = encode_envelope(make_envelope(
                event, project=project, received_at_ms=received_at, client_ip=client_ip, upload_id=upload_id,
                plan_violations=violations.get(i),
            ))
            if len(value) + len(key or b"") > limit:
                too_large.append(i)
            records.append((key, value))
        return records, too_large

    async def ingest(self, request: Request, endpoint: Endpoint) -> tuple[Response, int, str]:
        """Answer one upload; returns (response, number of events, metrics reason)."""
        received_at = int(time.time() * 1000)
        v.check_content_type(request.headers.get("content-type"))
        raw = await self.read_body(request, endpoint)
        big = len(raw) > PARSE_INLINE_BYTES
        body = await self._off_loop(big, v.decode_body, raw, request.headers.get("content-encoding"), endpoint.max_bytes)
        payload = await self._off_loop(big or len(body) > PARSE_INLINE_BYTES, v.parse_json, body)
        upload = v.parse_upload(payload, request.headers.get("x-api-key"), allow_bare=endpoint.bare)
        del payload
        n = len(upload.events)
        request.state.n_events = n

        project = await self.project_for_key(upload.api_key)
        if project is None:
            raise v.error(400, f"{v.ERR_INVALID_KEY_PREFIX}: {upload.api_key[:100]}", "invalid_api_key")
        if await self.key_limits.acquire({upload.api_key: 1}):
            self.metrics.events_throttled.labels(endpoint.name, "api_key").inc(n)
            raise v.error(
                429, v.ERR_KEY_THROTTLED, "throttled_key",
                eps_threshold=self._eps(endpoint), throttled_devices={}, throttled_users={},
                throttled_events=list(range(n)),
            )
        max_events = endpoint.max_events if endpoint.max_events is not None else self.settings.collector_batch_max_events
        if n > max_events:
            raise v.error(413, v.ERR_PAYLOAD_TOO_LARGE, "too_many_events")

        ip = client_ip(request, self.trusted)
        events = await self.validate(upload, project=project, now_ms=received_at, client_ip=ip)
        del upload

        violations = await self.check_plan(project, events)
        upload_id = str(uuid.uuid4())
        records: list[tuple[bytes | None, bytes]] = []
        too_large: list[int] = []
        for start in range(0, n, VALIDATE_CHUNK):
            chunk, large = await self._off_loop(
                n > VALIDATE_CHUNK, self.encode, events[start:start + VALIDATE_CHUNK], start, project=project,
                received_at=received_at, client_ip=ip, upload_id=upload_id, violations=violations,
            )
            records.extend(chunk)
            too_large.extend(large)
        if too_large:
            raise v.error(
                400, v.ERR_EVENT_TOO_LARGE, "event_too_large", events_with_invalid_fields={"event": too_large},
                events_too_large=too_large, max_event_bytes=self.settings.collector_max_event_bytes,
            )
        limits, demand = await self.throttle(endpoint, events)
        del events

        t0 = time.perf_counter()
        try:
            await self.producer.produce(records)
        except RecordTooLarge as exc:  # librdkafka's own limit (normally above ours)
            await limits.refund(demand)
            raise v.error(
                400, v.ERR_EVENT_TOO_LARGE, "event_too_large", events_with_invalid_fields={"event": [exc.index]},
                events_too_large=[exc.index], max_event_bytes=self.settings.collector_max_event_bytes,
            ) from None
        except ProduceError as exc:
            log.warning("answering 503: %s", exc)
            await limits.refund(demand)  # the client will send these events again
            raise v.error(503, v.ERR_UNAVAILABLE, "kafka_unavailable") from None
        self.metrics.produce_latency.observe(time.perf_counter() - t0)
        self.metrics.events_accepted.labels(endpoint.name).inc(n)
        return (
            JSONResponse(
                {"code": 200, "events_ingested": n, "payload_size_bytes": len(body), "server_upload_time": received_at}
            ),
            n,
            "ok",
        )

    def _eps(self, endpoint: Endpoint) -> int | float:
        eps = self.settings.collector_batch_eps if endpoint.batch_limits else self.settings.collector_v2_eps
        return int(eps) if float(eps).is_integer() else eps

    async def check_plan(self, project: str, events: list[dict[str, Any]]) -> dict[int, list[str]]:
        """Violations per event index; in ``reject`` mode any violation answers 400."""
        plan = await self.plan(project)
        if plan.enforcement == "off" or not plan.validators:
            return {}
        violations: dict[int, list[str]] = {}
        for i, event in enumerate(events):
            validate = plan.validators.get(event["event_type"])
            if validate is None:
                continue
            try:
                validate(event.get("event_properties", {}))
            except fastjsonschema.JsonSchemaValueException as exc:
                violations[i] = [f"event_properties: {exc.message}"]
        if violations:
            self.metrics.plan_violations.labels(plan.enforcement).inc(len(violations))
            if plan.enforcement == "reject":
                raise v.error(
                    400, v.ERR_PLAN, "plan_violation",
                    events_with_invalid_fields={"event_properties": sorted(violations)},
                    plan_violations={str(i): msgs for i, msgs in sorted(violations.items())},
                )
        return violations

    async def throttle(self, endpoint: Endpoint, events: list[dict[str, Any]]) -> tuple[Any, dict[tuple[str, str], int]]:
        """Per-device and per-user event rate; 429 in Amplitude's shape if any is over. Returns
        what was charged, so a request that then fails can be refunded."""
        limits = self.batch_limits if endpoint.batch_limits else self.v2_limits
        demand: dict[tuple[str, str], int] = {}
        for event in events:
            for kind in ("device_id", "user_id"):
                value = event.get(kind)
                if value:
                    demand[(kind, value)] = demand.get((kind, value), 0) + 1
        over = await limits.acquire(demand)
        if not over:
            return limits, demand
        devices = {k[1]: rate for k, rate in over.items() if k[0] == "device_id"}
        users = {k[1]: rate for k, rate in over.items() if k[0] == "user_id"}
        throttled = [
            i for i, e in enumerate(events) if e.get("device_id") in devices or e.get("user_id") in users
        ]
        self.metrics.events_throttled.labels(endpoint.name, "device_user").inc(len(throttled))
        raise v.error(
            429, v.ERR_THROTTLED, "throttled", eps_threshold=self._eps(endpoint),
            throttled_devices=devices, throttled_users=users, throttled_events=throttled,
        )


def _handler(endpoint: Endpoint):
    async def handle(request: Request) -> Response:
        collector: Collector = request.app.state.collector
        m = collector.metrics
        t0 = time.perf_counter()
        try:
            response, _n, _reason = await collector.ingest(request, endpoint)
        except v.Rejection as rej:
            response = JSONResponse(rej.body, status_code=rej.status)
            # The whole request is refused: every event in it counts (unknown before parsing: 0).
            m.events_rejected.labels(endpoint.name, rej.reason).inc(getattr(request.state, "n_events", 0))
        m.requests.labels(endpoint.name, str(response.status_code)).inc()
        m.request_latency.labels(endpoint.name).observe(time.perf_counter() - t0)
        return response

    return handle


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "worker": os.getpid()})  # which worker process answered


async def readyz(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    if await collector.producer.ready():
        return JSONResponse({"status": "ready", "kafka": "reachable"})
    return JSONResponse({"status": "not ready", "kafka": "unreachable"}, status_code=503)


async def metrics(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    return Response(collector.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": 404, "error": "Invalid request path"}, status_code=404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": 405, "error": "Method not allowed"}, status_code=405)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return PlainTextResponse("Internal Server Error", status_code=500)


def cors_middleware(settings: Settings) -> list[Middleware]:
    """Browser SDKs post from web pages: answer CORS preflights for ``COLLECTOR_CORS_ORIGINS``
    (comma-separated origins, ``*`` = any — the default, as Amplitude's endpoints; empty = none).
    No credentials are involved (the API key is in the body), so ``*`` exposes nothing a page could
    not send anyway."""
    origins = [o.strip() for o in settings.collector_cors_origins.split(",") if o.strip()]
    if not origins:
        return []
    return [Middleware(
        CORSMiddleware, allow_origins=origins, allow_methods=["POST", "GET", "OPTIONS"], allow_headers=["*"],
        allow_credentials=False, max_age=86_400,
    )]


def _watch_pauses(metrics: CollectorMetrics) -> Any:
    """Tail-latency evidence (and hygiene). Event-loop lag and GC pauses are exported
    (``eventpipe_collector_loop_lag_seconds``, ``eventpipe_collector_gc_pause_seconds``;
    bench/collector.py prints their p99 beside the request's and the produce's). Measured at half
    the maximum rate: GC p99 ≤ 2 ms and loop lag ≤ 5 ms on a quiet machine — the p99 was the
    produce round trip (Nagle's algorithm on librdkafka's socket, see
    :func:`eventpipe_core.kafka_clients.librdkafka_producer_config`). Everything alive after startup
    (imports, the app, compiled validators) is still moved out of the collector's reach
    (``gc.freeze``) so full collections stay cheap as the process ages. Returns the function that
    stops the watch."""
    gc.collect()
    gc.freeze()
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            metrics.gc_pause.labels(str(info.get("generation"))).observe(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)

    async def lag() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.05)
            metrics.loop_lag.observe(max(0.0, loop.time() - t - 0.05))

    task = asyncio.get_running_loop().create_task(lag())

    def stop() -> None:
        task.cancel()
        if on_gc in gc.callbacks:
            gc.callbacks.remove(on_gc)
        gc.unfreeze()

    return stop


def create_app(
    settings: Settings | None = None, *, store: MetadataStore | None = None, producer: EventProducer | None = None,
) -> Starlette:
    """The collector app; ``settings`` default to the environment (``eventpipe collector`` uses this)."""
    settings = settings or get_settings()
    collector = Collector(settings, store=store, producer=producer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(collector.store.ensure_schema)
        collector.producer.start()
        # Connect before serving (bounded): the first requests do not wait for the bootstrap.
        await run_in_threadpool(collector.producer.warm_up, 3.0)
        stop_watch = _watch_pauses(collector.metrics)
        try:
            yield
        finally:
            stop_watch()
            await run_in_threadpool(collector.producer.close)
            if collector.redis is not None:
                await collector.redis.aclose()

    routes = [
        Route("/2/httpapi", _handler(V2), methods=["POST"]),
        Route("/batch", _handler(BATCH), methods=["POST"]),
        Route("/track", _handler(TRACK), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, middleware=cors_middleware(settings),
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
    )
    app.state.collector = collector
    return app
