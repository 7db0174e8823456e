"""Benchmark: chserver over HTTP vs chDB in-process, measured in one run.

    python bench/chserver.py [--rows 1000000] [--repeat 3]

Starts ``eventpipe chserver`` on a free port and a temp data dir, builds one Native block stream of
``--rows`` rows, then times (best of ``--repeat``):

* a Native INSERT: raw HTTP POST (lz4 body, as clickhouse-connect sends it) vs ``send_insert`` in-process;
* a full scan ``SELECT *`` in Native: HTTP (whole body read) vs ``query`` in-process;
* for reference, clickhouse-connect's own ``insert_df`` / ``query_arrow`` (client-side (de)serialisation included).

Prints rows/s and the server/in-process ratio. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import chdb  # noqa: E402
import clickhouse_connect  # noqa: E402
import httpx  # noqa: E402
import lz4.frame  # noqa: E402

from tests.chserver_support import start_chserver  # noqa: E402

DDL = "CREATE TABLE {name} (id UInt64, user String, ts DateTime64(3, 'UTC'), value Float64) ENGINE = MergeTree ORDER BY id"
GEN = (
    "SELECT number AS id, concat('user-', toString(number % 50000)) AS user, "
    "toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(number) AS ts, number / 7 AS value "
    "FROM numbers({rows}) FORMAT Native"
)


def best(repeat: int, fn: Callable[[int], object]) -> float:
    """Best wall time of ``repeat`` runs; ``fn`` gets the run index (to use a fresh table each time)."""
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows, repeat = args.rows, args.repeat

    with tempfile.TemporaryDirectory(prefix="chserver-bench-") as tmp:
        local = chdb.connect(str(Path(tmp) / "local"))
        native = local._conn.query(GEN.format(rows=rows), "Native", params={}).bytes()
        compressed = lz4.frame.compress(native)
        print(f"{rows:,} rows, Native {len(native) / 1e6:.1f} MB (lz4 {len(compressed) / 1e6:.1f} MB)")

        server = start_chserver(Path(tmp) / "server")
        try:
            http = httpx.Client(base_url=server.url, timeout=600)

            def sql(text: str) -> httpx.Response:
                r = http.post("/", content=text.encode())
                r.raise_for_status()
                return r

            # --- insert -------------------------------------------------------------------------
            # Bodies are compressed up front: the timing is the server's work plus the transfer.
            bodies = [lz4.frame.compress(f"INSERT INTO default.h{i} FORMAT Native\n".encode() + native) for i in range(repeat)]

            def http_insert(i: int) -> None:
                sql(DDL.format(name=f"default.h{i}"))
                r = http.post("/", content=bodies[i], headers={"Content-Encoding": "lz4"})
                r.raise_for_status()

            def local_insert(i: int) -> None:
                local.query(DDL.format(name=f"default.l{i}"))
                with local.send_insert(f"INSERT INTO default.l{i}", "Native") as ins:
                    ins.append(native)
                    ins.finish()

            t_http_ins = best(repeat, http_insert)
            t_local_ins = best(repeat, local_insert)
            assert sql("SELECT count() FROM default.h0").text == f"{rows}\n"

            # --- full scan ----------------------------------------------------------------------
            scan_sizes: list[int] = []

            def http_scan(_: int) -> None:
                scan_sizes.append(len(sql("SELECT * FROM default.h0 FORMAT Native").content))

            def local_scan(_: int) -> None:
                scan_sizes.append(len(local._conn.query("SELECT * FROM default.l0", "Native", params={}).bytes()))

            t_http_scan = best(repeat, http_scan)
            t_local_scan = best(repeat, local_scan)

            # --- clickhouse-connect, client work included ---------------------------------------
            cc = clickhouse_connect.get_client(host=server.host, port=server.port, compress="lz4")
            df = local.query("SELECT * FROM default.l0", "DataFrame")

            def cc_insert(i: int) -> None:
                sql(DDL.format(name=f"default.c{i}"))
                cc.insert_df(f"default.c{i}", df)

            t_cc_ins = best(repeat, cc_insert)
            t_cc_scan = best(repeat, lambda _: cc.query_arrow("SELECT * FROM default.h0"))
            cc.close()
            http.close()
        finally:
            server.stop()
        local.close()

    def line(what: str, t_server: float, t_local: float | None) -> None:
        ratio = f"{(rows / t_server) / (rows / t_local):6.2f}" if t_local else "     -"
        local_rate = f"{rows / t_local:>14,.0f}" if t_local else f"{'-':>14}"
        print(f"{what:<34} {rows / t_server:>14,.0f} {local_rate} {ratio}")

    print(f"\n{'':<34} {'server rows/s':>14} {'chDB rows/s':>14} {'ratio':>6}")
    line("INSERT Native (HTTP, lz4 body)", t_http_ins, t_local_ins)
    line("full scan SELECT * Native (HTTP)", t_http_scan, t_local_scan)
    line("clickhouse-connect insert_df", t_cc_ins, t_local_ins)
    line("clickhouse-connect query_arrow", t_cc_scan, t_local_scan)
    print(f"\nbest of {repeat}; ratio = server throughput / in-process chDB throughput (1.00 = no overhead)")


if __name__ == "__main__":
    main()
