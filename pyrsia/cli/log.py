"""`pyrsia log …` and `pyrsia inspect-log …`: read and check the transparency log.

`search`, `show` and `proof` ask a running node (`/api/v1/log`); `proof` verifies what
it gets itself (checkpoint signature, then the Merkle path) instead of trusting the
node's word. `verify` reads the block files under `--home` directly, so it works on a
node that refuses to start.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from pyrsia.cli import console, layout, options, settings

log_app = typer.Typer(help="Search, show, prove and verify the transparency log.", no_args_is_help=True)
inspect_app = typer.Typer(
    help="Transparency log records of one image or Maven artifact (JSON or CSV).", no_args_is_help=True
)
SEARCH_COLUMNS = (
    layout.fixed("height"),
    layout.fixed("time", drop=3),
    layout.fixed("package_type", drop=4),
    layout.fixed("registry", drop=7),
    layout.Column(header="package_id"),
    layout.Column(header="path"),
    layout.id_column("digest"),
    layout.fixed("chunk_size", drop=5),
    layout.id_column("chunk_root", drop=6),
    layout.Column(header="author", drop=2),
)


def _client(node: str | None) -> Any:
    from pyrsia.cli.client import NodeClient

    return NodeClient(settings.node_url(node))


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bytes(count: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} B"


def _since(text: str | None) -> str | None:
    """Unix seconds, or an ISO date/time (UTC unless it says otherwise)."""
    if not text:
        return None
    from pyrsia.errors import UsageError

    if text.isdigit():
        return text
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since takes unix seconds or an ISO date, not {text!r}") from exc
    return str(int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()))


def _search(node: str | None, **params: str | None) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in params.items() if v})
    results: list[dict[str, Any]] = _client(node).get_json(f"/api/v1/log/search?{query}")["results"]
    return results


@log_app.command(
    "search",
    epilog="Examples: pyrsia log search --package library/alpine;  pyrsia log search --registry ghcr.io;  "
    "pyrsia log search --author 'Ada' --type maven --since 2026-01-01 --json",
)
def search(
    author: str | None = typer.Option(None, "--author", help="Author, or the start of it."),
    package: str | None = typer.Option(
        None, "--package", help="library/alpine, library/alpine:3.18 or com.example:lib:1.0."
    ),
    depends_on: str | None = typer.Option(
        None, "--depends-on", help="A dependency, e.g. com.example:lib:1.0."
    ),
    digest: str | None = typer.Option(None, "--digest", help="sha256:… of a file."),
    package_type: str | None = typer.Option(None, "--type", help="docker or maven."),
    registry: str | None = typer.Option(
        None, "--registry", help="Registry host (docker.io, ghcr.io …) or Maven repository id."
    ),
    source: str | None = typer.Option(
        None, "--source", help="Git URL: files rebuilt from source from that repository."
    ),
    reproducible: bool = typer.Option(
        False, "--reproducible", help="Only rebuilt files byte-identical to the upstream's published file."
    ),
    since: str | None = typer.Option(None, "--since", help="Unix seconds or ISO date."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="Most records to show, newest first."),
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
    wide: bool = options.WIDE,
) -> None:
    """Find committed artifacts by author, package, dependency, digest, type, registry, source or time."""
    found = _search(
        node,
        author=author,
        package=package,
        depends_on=depends_on,
        digest=digest,
        type=package_type,
        registry=registry,
        build_source=source,
        reproduces_upstream="yes" if reproducible else None,
        since=_since(since),
        limit=str(limit),
    )
    if settings.wants_json(json_output):
        console.as_json(found)
        return
    rows = [
        (
            r["height"],
            _when(r["time"]),
            r["package_type"],
            r.get("registry", ""),
            r["package_id"],
            r["path"],
            r["digest"],
            _bytes(r["chunk_size"]),
            r["chunk_root"],
            r["author"],
        )
        for r in found
    ]
    console.table(f"{len(found)} records", SEARCH_COLUMNS, rows, wide=wide)


@log_app.command("show", epilog="Example: pyrsia log show 12")
def show(
    height: int | None = typer.Argument(None, help="Block height (default: the newest block)."),
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
    wide: bool = options.WIDE,
) -> None:
    """Show one block: its header and transactions."""
    block = _client(node).get_json(f"/api/v1/log/blocks/{'latest' if height is None else height}")
    if settings.wants_json(json_output):
        console.as_json(block)
        return
    console.key_values(
        f"block {block['height']}",
        [
            ("hash", block["hash"]),
            ("previous", block["prev_hash"]),
            ("time", _when(block["time"])),
            ("proposer", block["proposer"]),
            ("log size", block["log_size"]),
            ("log root", block["log_root"]),
            ("certified by", block["certificate"]),
        ],
    )
    rows = [
        (t["leaf"], t["type"], _subject(t["payload"]),
         t["payload"].get("path", ""), t["payload"].get("digest", ""))
        for t in block["transactions"]
    ]  # fmt: skip
    columns = (layout.fixed("leaf"), layout.fixed("type"), "package", "path", layout.id_column("digest"))
    console.table("transactions", columns, rows, wide=wide)


@log_app.command("verify", epilog="Example: pyrsia log verify --home /var/lib/pyrsia")
def verify(home: Path | None = options.HOME, json_output: bool | None = options.JSON) -> None:
    """Check every block on disk: checksums, links, signatures, certificates, Merkle roots."""
    from pyrsia.config import default_home
    from pyrsia.errors import ChainBroken
    from pyrsia.translog.ledger import verify_chain

    root = (home or default_home()) / "translog"
    report = verify_chain(root)
    if settings.wants_json(json_output):
        console.as_json(
            {"ok": report.ok, "blocks": report.blocks, "transactions": report.transactions,
             "bad_height": report.bad_height, "reason": report.reason}
        )  # fmt: skip
    if not report.ok:
        assert report.bad_height is not None
        raise ChainBroken(report.bad_height, report.reason)
    if not json_output:
        console.success(f"{report.blocks} blocks and {report.transactions} transactions verify ({root})")


@log_app.command(
    "proof",
    epilog="Example: pyrsia log proof "
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
)
def proof(
    digest: str = typer.Argument(..., help="Digest of a logged file, sha256:…"),
    trust: list[str] | None = typer.Option(
        None,
        "--trust",
        help="Peer id whose checkpoint signature to accept (default: the node's authorities).",
    ),
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """Prove a digest is in the log: verify the checkpoint, then the inclusion path."""
    from pyrsia.translog import checkpoint, merkle

    client = _client(node)
    doc = client.get_json(f"/api/v1/log/proof/{digest}")
    trusted = set(trust or client.get_json("/api/v1/log")["authorities"])
    head = checkpoint.verify(doc["checkpoint"], trusted)
    if head.size != doc["tree_size"]:
        from pyrsia.errors import ProofInvalid

        raise ProofInvalid(f"proof is for tree size {doc['tree_size']}, checkpoint for {head.size}")
    hashes = [bytes.fromhex(h) for h in doc["hashes"]]
    merkle.verify_inclusion(bytes.fromhex(doc["leaf_hash"]), doc["leaf_index"], head.size, hashes, head.root)
    doc["verified"] = True
    if settings.wants_json(json_output):
        console.as_json(doc)
        return
    record = doc["record"]
    console.success(
        f"{digest} is leaf {doc['leaf_index']} of {head.size} in {head.origin} "
        f"({record['package_id']} {record['path']}, block {record['height']})"
    )


def _inspect(package: str, fmt: str, fields: str | None, latest: bool, node: str | None) -> None:
    from pyrsia.errors import UsageError

    if fmt not in ("json", "csv"):
        raise UsageError(f"--format must be json or csv, not {fmt!r}")
    records = _search(node, package=package, limit="10000")
    if latest and records:
        top = max(r["height"] for r in records)
        records = [r for r in records if r["height"] == top]
    _add_builders(records, node)
    columns = [f.strip() for f in fields.split(",")] if fields else list(records[0]) if records else []
    unknown = [c for c in columns if records and c not in records[0]]
    if unknown:
        raise UsageError(f"unknown field(s): {', '.join(unknown)}; known: {', '.join(records[0])}")
    rows = [{c: r[c] for c in columns} for r in records]
    if fmt == "json":
        console.as_json(rows)
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ";".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
    console.line(out.getvalue().rstrip("\n"))


def _add_builders(records: list[dict[str, Any]], node: str | None) -> None:
    """`builders` of each record: for a file rebuilt from source, the authorities that
    endorsed it (each built the same bytes); empty for a mirrored file."""
    blocks: dict[int, dict[str, Any]] = {}
    for record in records:
        record["builders"] = []
        if not record.get("build_source"):
            continue
        height = int(record["height"])
        if height not in blocks:
            blocks[height] = _client(node).get_json(f"/api/v1/log/blocks/{height}")
        for tx in blocks[height]["transactions"]:
            if tx["id"] == record["tx_id"]:
                record["builders"] = sorted(tx["endorsements"])


FORMAT = typer.Option("json", "--format", help="json or csv.")
FIELDS = typer.Option(None, "--fields", help="Comma-separated fields to keep, e.g. height,path,digest.")
LATEST = typer.Option(False, "--latest", help="Only the records of the newest block for it.")


@inspect_app.command("docker", epilog="Example: pyrsia inspect-log docker --image alpine:3.18 --format csv")
def inspect_docker(
    image: str = typer.Option(..., "--image", help="NAME:TAG or NAME@DIGEST."),
    fmt: str = FORMAT,
    fields: str | None = FIELDS,
    latest: bool = LATEST,
    node: str | None = options.NODE,
) -> None:
    """Log records of every file of an image."""
    from pyrsia.errors import RegistryError, UsageError
    from pyrsia.formats.reference import parse_image_reference

    try:
        name, ref = parse_image_reference(image)
    except RegistryError as exc:
        raise UsageError(f"{image!r} is not an image reference: {exc.message}") from exc
    _inspect(f"{name}{'@' if ':' in ref else ':'}{ref}", fmt, fields, latest, node)


@inspect_app.command("maven", epilog="Example: pyrsia inspect-log maven --gav com.example:hello:1.0")
def inspect_maven(
    gav: str = typer.Option(..., "--gav", help="GROUP:ARTIFACT:VERSION"),
    fmt: str = FORMAT,
    fields: str | None = FIELDS,
    latest: bool = LATEST,
    node: str | None = options.NODE,
) -> None:
    """Log records of every file of a Maven artifact version; a rebuilt file shows its
    source, commit, spec digest, builder and the authorities that built it (`builders`)."""
    from pyrsia.errors import UsageError

    if gav.count(":") != 2 or not all(gav.split(":")):
        raise UsageError(f"--gav takes GROUP:ARTIFACT:VERSION, not {gav!r}")
    _inspect(gav, fmt, fields, latest, node)


def _subject(payload: dict[str, Any]) -> str:
    """What a transaction is about: an artifact's package, an authority's peer id or a registry host."""
    for key in ("package_id", "peer_id", "host"):
        if key in payload:
            return str(payload[key])
    return ""
