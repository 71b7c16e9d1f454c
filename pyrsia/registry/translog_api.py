"""Read-only HTTP view of the transparency log under `/api/v1/log`.

    GET /api/v1/log                     height, size, origin, authorities
    GET /api/v1/log/search?author=&package=&depends_on=&digest=&type=&since=&limit=
                                        &build_source=GIT_URL&reproduces_upstream=yes|no|absent
    GET /api/v1/log/blocks/<height>     one block, `latest` for the tip
    GET /api/v1/log/checkpoint          the C2SP signed note of the current tree head
    GET /api/v1/log/proof/<digest>      inclusion proof of the newest record of a digest
    GET /api/v1/log/consistency/<size>  proof that the current tree extends the one of <size>

Numbers in the path and query are checked by `params.whole_number` (`since` in unix
seconds, `limit` from 1 to SEARCH_LIMIT_MAX); a bad one is a 400 naming it.

Bytes (hashes, signatures) are lowercase hex in JSON. The CLI renders these shapes;
scripts get them unchanged with `--json`.
"""

from __future__ import annotations

import json
from typing import Any

from pyrsia.errors import PathUnknown, UsageError
from pyrsia.http.message import Request, Response, json_response
from pyrsia.registry.params import INT64_MAX, whole_number
from pyrsia.translog.block import Block
from pyrsia.translog.index import SEARCH_LIMIT_MAX, Query
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import PACKAGE_TYPES, REPRODUCES_UPSTREAM

PREFIX = "/api/v1/log"


def block_json(block: Block) -> dict[str, Any]:
    header = block.header
    first = header.log_size - len(block.transactions)
    return {
        "height": header.height,
        "hash": header.hash.hex(),
        "prev_hash": header.prev_hash.hex(),
        "tx_root": header.tx_root.hex(),
        "transactions_hash": header.transactions_hash.hex() or None,
        "log_size": header.log_size,
        "log_root": header.log_root.hex(),
        "time": header.time,
        "proposer": header.proposer,
        "authorities_hash": header.authorities_hash.hex(),
        "transactions": [
            {
                "leaf": first + i,
                "id": tx.id.hex(),
                "type": tx.type,
                "submitter": tx.submitter,
                "time": tx.time,
                "payload": {
                    k: v.hex() if isinstance(v, bytes) else v for k, v in tx.payload.to_map().items()
                },
                "endorsements": [e.signer for e in tx.endorsements],
            }
            for i, tx in enumerate(block.transactions)
        ],
        "certificate": [s.signer for s in block.certificate],
    }


def query_from(params: dict[str, str]) -> Query:
    kind = params.get("type") or None
    if kind is not None and kind not in PACKAGE_TYPES:
        raise UsageError(f"type must be one of {', '.join(PACKAGE_TYPES)}")
    since = whole_number(params["since"], "since", 0, INT64_MAX) if params.get("since") else None
    limit = whole_number(params["limit"], "limit", 1, SEARCH_LIMIT_MAX) if params.get("limit") else 100
    reproduces = params.get("reproduces_upstream") or None
    if reproduces is not None and reproduces not in REPRODUCES_UPSTREAM:
        raise UsageError(f"reproduces_upstream must be one of {', '.join(REPRODUCES_UPSTREAM)}")
    return Query(
        author=params.get("author") or None,
        package=params.get("package") or None,
        depends_on=params.get("depends_on") or None,
        digest=params.get("digest") or None,
        package_type=kind,
        registry=(params.get("registry") or "").strip().lower() or None,
        build_source=params.get("build_source") or None,
        reproduces_upstream=reproduces,
        since=since,
        limit=limit,
    )


class TranslogApi:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def handle(self, request: Request) -> Response:
        rest = request.path[len(PREFIX) :].strip("/")
        ledger = self._ledger
        if rest == "":
            return _json(
                {
                    "height": ledger.height,
                    "size": ledger.size,
                    "origin": ledger.origin,
                    "authorities": sorted(ledger.authorities),
                }
            )
        if rest == "search":
            records = ledger.search(query_from(dict(request.query)))
            return _json({"count": len(records), "results": [r.to_json() for r in records]})
        if rest == "checkpoint":
            return Response(
                headers=(("Content-Type", "text/plain; charset=utf-8"),), body=ledger.checkpoint().encode()
            )
        kind, _, arg = rest.partition("/")
        if kind == "blocks" and arg:
            height = ledger.height if arg == "latest" else whole_number(arg, "block height", 0, INT64_MAX)
            return _json(block_json(ledger.block(height)))
        if kind == "proof" and arg:
            proof = ledger.proof(arg)
            return _json(
                {
                    "record": proof.record.to_json(),
                    "leaf_index": proof.leaf_index,
                    "tree_size": proof.tree_size,
                    "leaf_hash": proof.leaf_hash.hex(),
                    "hashes": [h.hex() for h in proof.hashes],
                    "checkpoint": proof.checkpoint,
                }
            )
        if kind == "consistency" and arg:
            old_size = whole_number(arg, "tree size", 1, INT64_MAX)
            hashes, note = ledger.consistency(old_size)
            return _json({"old_size": old_size, "hashes": [h.hex() for h in hashes], "checkpoint": note})
        raise PathUnknown("no such log endpoint", detail=request.path[:300])


def _json(doc: dict[str, Any]) -> Response:
    return json_response(200, json.dumps(doc, sort_keys=True).encode())
