"""`eventpipe demo` and `eventpipe generate`: a synthetic product sent through the whole pipeline.

* :mod:`demo.generator` — seeded, deterministic synthetic product (users, devices, sessions, funnels,
  retention decay, identity merges, duplicates, late events, bots, malformed requests);
* :mod:`demo.truth` — the figures the marts must show, computed independently in plain Python;
* :mod:`demo.sender` — HTTP to the collector (Batch API, retries like the SDKs), poison records to Kafka;
* :mod:`demo.dagster_api` / :mod:`demo.waiter` — Dagster GraphQL and ClickHouse polling with progress bars;
* :mod:`demo.report` — the marts read back over HTTP and printed with rich;
* :mod:`demo.runner` — the demo itself on the embedded stack; :mod:`demo.load` — the load tool.
"""
