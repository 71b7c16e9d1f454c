"""Transparency log figures: fsynced appends, concurrent publishers, search over a
million records, verify.

    python benchmarks/translog.py [--transactions 1000000] [--blocks 300] [--dir /var/tmp]
                                  [--publishers 64] [--publishes 100]

Appends go through `Ledger.publish` (sign, block file written in place with O_DSYNC,
index row) on the disk under --dir. "Concurrent publishers" runs --publishers threads,
each publishing --publishes 1-transaction batches, against the same real durable
ledger; the writer groups what waits into one block (group commit), so committed
transactions per second is the figure, blocks written shows how many publishes shared
each durable write, and CPU per transaction is the whole process's user + system time
(every thread: callers signing, writer, disk, index) over the transactions. The search index is filled in
bulk (rows written straight into the SQLite schema the ledger uses; signing a million
transactions would only measure Ed25519) and queried the way `pyrsia log search`
queries it. `verify` re-checks every block in full: checksums, signatures,
certificates, roots. The CPU probe (`cpu_probe.py`) runs before the appends and after
the concurrent publishers. Beside them, the floor: the same publishers handing
each publish to one thread that makes the transaction's two signatures (its own and
the endorsement) and answers through a future, with no log at all; the log can come
no closer to it than that.
"""

from __future__ import annotations

import argparse
import queue
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from nacl.signing import SigningKey
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.cpu_probe import ed25519_check_us, shown
from pyrsia.translog.index import Index, Query
from pyrsia.translog.ledger import Ledger, verify_chain
from pyrsia.translog.tx import AddArtifact


def payload(i: int) -> AddArtifact:
    return AddArtifact(
        package_type="docker",
        package_id=f"library/bench{i % 5000}:{i}",
        path=f"/v2/library/bench{i % 5000}/blobs/sha256:{i:064x}",
        digest=f"sha256:{i:064x}",
        size=i,
        chunk_size=1_048_576,
        chunk_root=bytes(32),
        media_type="application/vnd.oci.image.layer.v1.tar+gzip",
        source="https://registry-1.docker.io",
        author=f"author{i % 20000} <a{i % 20000}@example.com>",
        dependencies=(f"library/base{i % 100}:1",),
    )


def appends(root: Path, blocks: int, per_block: int) -> float:
    ledger = Ledger.open(root, SigningKey.generate())
    started = time.perf_counter()
    for b in range(blocks):
        ledger.publish([payload(b * per_block + i) for i in range(per_block)])
    elapsed = time.perf_counter() - started
    ledger.close()
    return blocks / elapsed


def concurrent(root: Path, publishers: int, publishes: int) -> tuple[float, int, float]:
    """Committed tx/s with `publishers` threads each publishing 1-tx batches; blocks written;
    CPU seconds of the whole process (every thread: user + system) per transaction. The
    payloads are built before the clock starts: the figure is the log's, not the caller's."""
    ledger = Ledger.open(root, SigningKey.generate())
    start = threading.Barrier(publishers + 1)
    work = [[payload(w * publishes + i) for i in range(publishes)] for w in range(publishers)]

    def publisher(worker: int) -> None:
        start.wait()
        for p in work[worker]:
            ledger.publish([p])

    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(publishers)]
    for thread in threads:
        thread.start()
    start.wait()
    started, cpu = time.perf_counter(), _cpu()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    blocks = ledger.height
    ledger.close()
    total = publishers * publishes
    return total / elapsed, blocks, cpu / total


def floor(publishers: int, publishes: int) -> float:
    """Publishes per second the `concurrent` harness allows with no log behind it: each
    publish handed to one signing thread (two Ed25519 signatures, what the log's signing
    thread does per transaction) and answered through a future."""
    key, message = SigningKey.generate(), bytes(300)
    waiting: queue.SimpleQueue[Future[None] | None] = queue.SimpleQueue()
    start = threading.Barrier(publishers + 1)

    def signer() -> None:
        while (future := waiting.get()) is not None:
            key.sign(message)
            key.sign(message)
            future.set_result(None)

    def publisher() -> None:
        start.wait()
        for _ in range(publishes):
            future: Future[None] = Future()
            waiting.put(future)
            future.result()

    threads = [threading.Thread(target=publisher) for _ in range(publishers)]
    signing = threading.Thread(target=signer)
    for thread in [signing, *threads]:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    waiting.put(None)
    signing.join()
    return publishers * publishes / elapsed


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fill_index(path: Path, records: int) -> Index:
    index = Index(path)
    db = index._db  # bulk load through the real schema
    db.execute("BEGIN")
    batch = 50_000
    for start in range(0, records, batch):
        rows, deps = [], []
        for i in range(start, min(start + batch, records)):
            p = payload(i)
            kind = "maven" if i % 3 else "docker"
            rows.append(
                (i, i // 10, i.to_bytes(32, "big"), 1_700_000_000 + i, "12D3KooWBench", kind,
                 p.package_id, p.path, p.digest, p.size, p.chunk_size, p.chunk_root, p.media_type,
                 p.source, p.author, p.registry_or_default, "", "", "", "", "", "")
            )  # fmt: skip
            deps.append((i, p.dependencies[0]))
        db.executemany(
            "INSERT INTO artifact (leaf, height, tx_id, time, submitter, package_type, package_id, path,"
            " digest, size, chunk_size, chunk_root, media_type, source, author, registry,"
            " build_source, build_commit, build_spec, builder_jdk, builder_maven, reproduces_upstream)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        db.executemany("INSERT INTO dependency (leaf, name) VALUES (?, ?)", deps)
    db.execute("COMMIT")
    db.execute("ANALYZE")
    return index


def timed(queries: list[Query], run: Callable[[Query], object]) -> tuple[float, float]:
    samples = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--transactions", "--records", dest="records", type=int, default=1_000_000,
        help="AddArtifact records in the search index (default: 1,000,000)",
    )  # fmt: skip
    parser.add_argument("--blocks", type=int, default=300)
    parser.add_argument("--publishers", type=int, default=64, help="concurrent publisher threads")
    parser.add_argument("--publishes", type=int, default=100, help="1-tx publishes per publisher thread")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    rng = random.Random(7)
    console = Console()
    table = Table(title="pyrsia transparency log")
    for column in ("measure", "value", "notes"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        probe_before = ed25519_check_us()
        one = appends(root / "one", args.blocks, 1)
        ten = appends(root / "ten", args.blocks, 10)
        table.add_row("appends, 1 tx/block", f"{one:,.0f} blocks/s", "one O_DSYNC write in place per block")
        table.add_row("appends, 10 tx/block", f"{ten:,.0f} blocks/s ({ten * 10:,.0f} tx/s)", "")
        rate, written, cpu = concurrent(root / "concurrent", args.publishers, args.publishes)
        total = args.publishers * args.publishes
        table.add_row(
            f"{args.publishers} concurrent publishers",
            f"{rate:,.0f} tx/s committed",
            f"{total:,} 1-tx publishes in {written:,} blocks ({total / written:.1f} per durable block);"
            f" CPU {cpu * 1e6:,.0f} µs per tx (process user + sys)",
        )
        table.add_row(
            "  floor: signing alone",
            f"{floor(args.publishers, args.publishes):,.0f} tx/s",
            "the same publishers, one thread making each tx's two signatures, no log",
        )
        table.add_row("cpu probe: one core", shown(probe_before, ed25519_check_us()), "cpu_probe.py")
        started = time.perf_counter()
        report = verify_chain(root / "ten")
        verify_s = time.perf_counter() - started
        assert report.ok
        table.add_row(
            "verify", f"{report.blocks / verify_s:,.0f} blocks/s", f"{report.transactions} txs, in full"
        )

        started = time.perf_counter()
        index = fill_index(root / "index.sqlite3", args.records)
        table.add_row(
            "bulk index fill",
            f"{time.perf_counter() - started:.1f} s",
            f"{args.records:,} rows straight into the ledger's SQLite schema, one transaction, ANALYZE",
        )
        n = args.records
        reader = index.reader()
        suites = {
            "search --package NAME": [
                Query(package=f"library/bench{rng.randrange(5000)}") for _ in range(200)
            ],
            "search --author PREFIX": [Query(author=f"author{rng.randrange(20000)} ") for _ in range(200)],
            "search --digest X": [Query(digest=f"sha256:{rng.randrange(n):064x}") for _ in range(200)],
            "search --depends-on D": [
                Query(depends_on=f"library/base{rng.randrange(100)}:1") for _ in range(200)
            ],
            "search --type maven --since T": [
                Query(package_type="maven", since=1_700_000_000 + rng.randrange(n)) for _ in range(200)
            ],
            "search --author A --type docker": [
                Query(author=f"author{rng.randrange(20000)} ", package_type="docker") for _ in range(200)
            ],
            "search --package NAME --since T": [
                Query(package=f"library/bench{rng.randrange(5000)}", since=1_700_000_000 + rng.randrange(n))
                for _ in range(200)
            ],
            "search --author NOBODY --since T": [
                Query(author=f"nobody{rng.randrange(n)}", since=1_700_000_000) for _ in range(200)
            ],
        }
        for name, queries in suites.items():
            p50, p95 = timed(queries, reader.search)
            table.add_row(name, f"p50 {p50:.2f} ms", f"p95 {p95:.2f} ms, limit 100, {n:,} records")
        reader.close()
        index.close()
    console.print(table)


if __name__ == "__main__":
    main()
