"""Kafka -> lake landing with an exactly-once effect.

Roles (after Confluent's kafka-connect-storage-cloud): :mod:`.partitioner` (event hour -> folder,
object names), :mod:`.writer` (records -> rows -> Parquet, dead letters split off), the lake
(:mod:`eventpipe_core.lake_store`), :mod:`.commit_log` (offset tracking in the lake), :mod:`.dlq`,
:mod:`.cleanup`, :mod:`.metrics` and the loop in :mod:`.consumer`; :mod:`.cli` adds the commands.

Protocol (DESIGN §8, "stronger variant": the lake is the source of truth for offsets)
------------------------------------------------------------------------------------
Per Kafka partition ``p`` the lake holds a commit log ``raw/events/_commits/p=<p>/<seq>.json``
(:mod:`eventpipe_core.lake_catalog`). Record ``seq`` covers the offset range ``[start, end)`` and
record ``seq + 1`` starts exactly at ``end``; a record is created with a conditional create
(S3 ``If-None-Match: *``, ``link()`` on a directory), so exactly one writer wins each ``seq``.

1. On (re)assignment a member reads the partition's last commit record and seeks to its
   ``end_offset`` (to the earliest retained offset if there is none). Kafka's committed offset is
   never read; it is written after each lake commit as a hint for lag tools only.
2. Records are buffered per partition. A record below the expected next offset was already landed
   and is skipped, so a batch always starts exactly at the last committed ``end_offset``.
3. A batch is flushed on record count, raw bytes or age. Flushing decodes the batch in bulk
   (:func:`ingest_consumer.writer.decode_records`: a msgspec fast path for envelopes as the
   collector writes them — typed structs whose constraints accept only what the shared rule
   accepts, property maps kept as their raw JSON slices when canonical — and for every other
   record the general path, parsed as ``json.loads`` would and checked by the shared rule
   :func:`eventpipe_core.event_model.parse_envelope`, which alone decides dead letters; Arrow column
   by column, an Arrow filter per event hour; both agree with the per-record reference
   :func:`~eventpipe_core.event_model.envelope_to_row`); invalid records become dead letters.
4. Dead letters are produced to ``events.dlq`` (acks=all) and acknowledged **before** anything is
   committed.
5. One Parquet object per event hour is written under ``raw/events/event_date=…/event_hour=…/``
   with a name unique to this attempt: ``p<partition>-o<start>-<end>-<written_ms>-<random>.parquet``.
   Nothing refers to it yet, so readers cannot see it.
6. The commit record naming those objects (rows per hour, offset range, record and dead-letter
   counts, min/max event time) is created with ``put_if_absent`` at the next ``seq``. This single
   conditional create is the commit point.

   * Won: the batch is visible; the next batch starts at ``end``.
   * Lost (a zombie or a second member of the same partition committed that ``seq`` first): the
     attempt deletes its own objects, re-reads the log forward and seeks to the winner's end — the
     winner's range may differ from ours, which is fine because the next ``seq`` starts exactly
     there.
   * Ambiguous (the create raised, e.g. a timeout after the server stored it): the retry finds the
     key present and compares the stored record's attempt id with its own.

Why it holds whatever instant the process dies: before step 6 nothing is visible and the next
owner re-reads the same offsets from the lake's end; after step 6 the range is committed and the
next owner starts behind it. Two members holding one partition at once (Tansu's rebalance gaps,
DESIGN §4) cannot both commit a ``seq``, and each member builds ``seq + 1`` only from a known
``end``, so the log stays gap- and overlap-free. Partitions revoked on rebalance drop their
in-memory batch (nothing was written yet); SIGTERM flushes, commits and leaves the group.

Leftovers: objects of crashed or losing attempts are not named by any commit record. Cleanup (at
startup and periodically) deletes such objects once older than ``CONSUMER_ORPHAN_GRACE_S`` — the
write time is in the object name. A writer whose objects are older than half the grace period when
it is about to commit rewrites them under a new attempt id, so cleanup never deletes an object that
is then committed.

Dead letters are at-least-once on the topic: a crash between step 4 and step 6 (or a losing
attempt) dead-letters the same record again when its range is re-read. Every dead letter carries
its source coordinates (topic, partition, offset), so counting and ``eventpipe dlq replay`` dedupe
by them; the commit records hold the exact count (``dead_lettered``) and the offsets
(``extra["dead_lettered_offsets"]``), so landed rows plus dead-lettered offsets of the committed
records cover every consumed offset exactly once.

Operating it
------------
``eventpipe consumer [--metrics-port N]`` (one process = one group member; ``CONSUMER_*`` settings
for flush thresholds, grace period, retry backoff; ``CONSUMER_ASSIGN_PARTITIONS`` bypasses group
coordination), ``eventpipe lake files [--date D] [--hour H]`` (committed objects only),
``eventpipe lake cleanup``, ``eventpipe dlq stats`` and ``eventpipe dlq replay [--dry-run]
[--reason-contains TEXT] [--from-beginning]``. Lake or DLQ failures are retried with backoff and
never committed past; after SIGTERM the retries stop after ``SHUTDOWN_FLUSH_S`` and the open batches
stay uncommitted (re-read by the next owner). A status line (records/s, lag per partition, open
batches) is logged every ``CONSUMER_LOG_INTERVAL_S``; Prometheus metrics are ``eventpipe_landing_*``.
Lag uses fetch high watermarks: Tansu 0.6.0 answers ListOffsets(latest) with the last batch's base
offset + 1 (``bench/repro_tansu_list_offsets.py``).

Kafka client: librdkafka (confluent-kafka). The group callbacks only note assigned/revoked
partitions; the loop reads each one's lake position and then ``assign()``s exactly the positioned
partitions at their next expected offsets (so nothing is fetched from Kafka's committed offset,
and a seek after a lost race is a re-assign). Dead letters still go through kafka-python.
"""
