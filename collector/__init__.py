"""The collector: an Amplitude-compatible ingestion API that produces to Kafka.

Apps keep their Amplitude SDK and set its server URL (``Config(server_url=".../2/httpapi")``).

Endpoints
    ``POST /2/httpapi`` (HTTP V2: ≤ 2000 events, ≤ 1 MiB), ``POST /batch`` (Batch: ≤ 20 MiB),
    ``POST /track`` (V2 limits; the V2 body, or one event object / a list of events / ``{"event": …}``
    with the key in the body or the ``X-API-Key`` header), ``GET /healthz``, ``GET /readyz`` (Kafka
    reachable and topic known), ``GET /metrics`` (Prometheus text). Bodies may be gzip/deflate
    (``Content-Encoding``); size limits apply to the decoded body as well as to the bytes received.

Answers (Amplitude's bodies; the SDKs read ``code`` and the index lists)
    * 200 ``{"code":200,"events_ingested":N,"payload_size_bytes":B,"server_upload_time":ms}`` —
      only after every event of the request was acknowledged by Kafka (``acks=all``);
    * 400 ``error`` one of ``Missing request body``, ``Invalid JSON request body``,
      ``Request missing required field`` (+ ``missing_field`` for ``api_key``/``events``, or
      ``events_with_missing_fields``), ``Invalid field values on some events``
      (+ ``events_with_invalid_fields``), ``Invalid id length for user_id or device_id``
      (+ ``events_with_invalid_id_lengths``), ``Invalid event JSON``, ``Invalid options``,
      ``Invalid API key: <key>`` (unknown or revoked), ``Invalid content type, …``,
      ``Event properties violate the tracking plan`` (+ ``events_with_invalid_fields.event_properties``
      and ``plan_violations``); all index maps are always reported together;
    * 400 ``Some events are larger than the broker's message limit`` (+ ``events_too_large``,
      ``events_with_invalid_fields.event`` — the indexes — and ``max_event_bytes``): an event whose
      envelope exceeds ``COLLECTOR_MAX_EVENT_BYTES`` (1,000,000, Kafka's default message limit);
    * 408 ``Request timeout: the body did not arrive in time`` — the body took longer than
      ``COLLECTOR_BODY_TIMEOUT_S``; a connection whose request line and headers take longer than
      ``COLLECTOR_HEADER_TIMEOUT_S`` is closed (slowloris);
    * 413 ``Payload too large`` (also more than ``COLLECTOR_BATCH_MAX_EVENTS`` = 100,000 events in
      one /batch; Amplitude caps only the size); 415 unsupported ``Content-Encoding``;
    * 429 ``{"code":429,"error":…,"eps_threshold":…,"throttled_devices":{id: eps},
      "throttled_users":{id: eps},"throttled_events":[i,…]}``;
    * 503 ``Service unavailable: events were not written, retry`` — Kafka failed or did not
      acknowledge within ``COLLECTOR_PRODUCE_TIMEOUT_S``.
    A request is all-or-nothing: for any non-200 answer no event of it is produced (the SDKs drop
    the indexed events and re-send the others).

Event rules
    ``event_type`` required (not one of Amplitude's reserved names); ``user_id`` or ``device_id``
    required, strings, not in the invalid-ID list (case-insensitive), at least 5 characters or
    ``options.min_id_length``; every field of its documented type (``time``/ids/``quantity``
    integers in int64, ``time`` in ``[2000-01-01, now + COLLECTOR_MAX_FUTURE_S]`` in ms — an earlier
    one is almost always seconds sent as ms); strings, property
    keys and property strings ≤ 1024 characters and valid Unicode; property objects nested ≤ 40
    levels; JSON without NaN/Infinity. Unknown fields and nulls are dropped, a missing ``time``
    becomes the upload time, ``ip: "$remote"`` becomes the client IP (``X-Forwarded-For`` is
    honoured only when the peer is in ``COLLECTOR_TRUSTED_PROXIES``; the right-most untrusted
    address wins). A missing ``insert_id`` is generated, always deterministically: from the
    project, the event as sent and the number of identical events before it in the request — a
    re-sent request (after a 503, a lost answer or a partial write) gets the same ids and
    downstream deduplication drops the copies (two identical events without ``time`` in separate
    requests count once: send ``time`` or ``insert_id``). Last, the lake's own rule
    (:func:`eventpipe_core.event_model.event_problems`, which the landing consumer dead-letters by,
    e.g. ``insert_id: ""``) is applied: nothing acknowledged is dead-lettered later. An API key
    that is not valid Unicode is an invalid key (400).

Serving
    Requests over 256 KiB are decoded and parsed in the thread pool, and more than 5,000 events are
    validated and encoded in chunks of 5,000 there, so a 20 MB /batch does not stall the event
    loop. CORS: preflights (``OPTIONS``) and responses carry ``Access-Control-Allow-Origin`` for
    ``COLLECTOR_CORS_ORIGINS`` (comma-separated; ``*``, the default, allows any page; empty turns
    CORS off).

Envelope (produced to ``KAFKA_EVENTS_TOPIC``, key ``device_id`` else ``user_id``)
    :func:`eventpipe_core.event_model.make_envelope`: the normalised event plus ``project``,
    ``received_at`` (ms), ``client_ip``, ``upload_id`` (a UUID per request), ``plan_violations``.

Rate limits (token buckets, :mod:`collector.ratelimit`)
    * per device and per user: ``COLLECTOR_V2_EPS`` (30) events/s on /2/httpapi and /track,
      ``COLLECTOR_BATCH_EPS`` (1000) on /batch, averaged over ``COLLECTOR_EPS_WINDOW_S`` (10 s):
      a device may burst up to eps × window events, then sustain eps. Checked after validation;
      if any device or user of the request is over, the answer is 429 listing the throttled
      devices/users (with their rate over the window, this request included) and the indexes of
      their events, and nothing of the request is produced nor charged, so the SDK's retry of the
      other events right away and of the throttled ones after 30 s is counted once; a request
      answered 503 is refunded for the same reason;
    * per API key: ``COLLECTOR_KEY_RPS`` (100) requests/s over the same window; over it, 429 with
      every event index in ``throttled_events`` (SDKs back off 30 s).
    With ``REDIS_URL`` the buckets live in Redis (:class:`collector.ratelimit.RedisTokenBuckets`,
    one atomic script per check) and are shared by every worker (``COLLECTOR_WORKERS``) and host;
    without it each worker process enforces them on the requests it receives (up to N × the limit
    overall). When Redis fails, a worker falls back to its own buckets until it answers again.

Tracking plan (``eventpipe schemas …``)
    Per project an optional JSON Schema for the ``event_properties`` of each event type and an
    enforcement mode: ``off`` (not checked), ``flag`` (accepted; the envelope's
    ``plan_violations`` lists the messages), ``reject`` (400, see above). Event types without a
    schema are not checked. API keys and plans are cached for ``COLLECTOR_METADATA_TTL_S``.
"""
