"""Minimal reproduction: Tansu 0.6.0 answers ListOffsets(LATEST) with the *base offset of the last
record batch* + 1 instead of the last offset + 1 (the high watermark). Fetch responses carry the
right high watermark. Anything that reads "the end" with ``end_offsets``/``seek_to_end`` stops early
on this broker; eventpipe's DLQ reader uses fetch high watermarks instead.

Run: ``.venv/bin/python bench/repro_tansu_list_offsets.py`` (starts its own broker on a free port).
"""

from __future__ import annotations

import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from embedded.broker import EmbeddedBroker, free_port


def main() -> int:
    broker = EmbeddedBroker(host="127.0.0.1", port=free_port()).start()
    try:
        bs = [broker.bootstrap]
        admin = KafkaAdminClient(bootstrap_servers=bs)
        admin.create_topics([NewTopic("repro", 1, 1)])
        admin.close()
        time.sleep(1)
        producer = KafkaProducer(bootstrap_servers=bs, acks="all", linger_ms=50)
        tp = TopicPartition("repro", 0)
        consumer = KafkaConsumer(bootstrap_servers=bs, consumer_timeout_ms=2000)
        consumer.assign([tp])
        wrong = 0
        for n in (1, 10, 5):
            futures = [producer.send("repro", value=b"v%d" % i) for i in range(n)]
            producer.flush()
            offsets = [f.get().offset for f in futures]
            end = consumer.end_offsets([tp])[tp]
            wrong += end != offsets[-1] + 1
            print(f"one batch of {n:2d}: offsets {offsets[0]}..{offsets[-1]}  end_offsets={end}  expected={offsets[-1] + 1}")
        consumer.seek_to_beginning(tp)
        records = list(consumer)
        print(f"consumed {len(records)} records, last offset {records[-1].offset}, fetch high watermark {consumer.highwater(tp)}")
        producer.close()
        consumer.close()
        print("BUG REPRODUCED" if wrong else "not reproduced (fixed broker?)")
        return 1 if wrong else 0
    finally:
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
