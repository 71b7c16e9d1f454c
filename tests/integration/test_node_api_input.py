"""Hostile input to the node API gets a clear 4xx, never a 500, and never lands on disk.

A real daemon (request heads up to 256 KiB, so a 100,000-digit number reaches the
handler) is sent, over raw sockets so no client library cleans anything up: bearer
tokens with non-ASCII bytes, numbers in the log API's query and path that are huge,
signed, fractional or made of non-ASCII digits, and `PUT /api/v1/config` bodies with
`1e400` (which JSON reads as infinity), `NaN`, `Infinity`, deep nesting and values
TOML could not hold. Afterwards `pyrsia.toml` does not exist and the node restarts.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.support.node import NodeProcess

HEAD_BYTES_MAX = 256 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    home = tmp_path_factory.mktemp("node")
    flags = ("--docker-upstream", "http://127.0.0.1:9", "--http-header-bytes-max", str(HEAD_BYTES_MAX))
    with NodeProcess(home, *flags) as node:
        yield node


def token(node: NodeProcess) -> str:
    return (node.home / "admin.token").read_text().strip()


def raw(
    node: NodeProcess, method: str, target: str, headers: bytes = b"", body: bytes = b""
) -> tuple[int, bytes]:
    host, port = node.address.split(":")
    head = f"{method} {target} HTTP/1.1\r\nHost: {node.address}\r\nConnection: close\r\n".encode()
    head += headers + f"Content-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def error_message(body: bytes) -> str:
    (error,) = json.loads(body)["errors"]
    message = str(error["message"])
    assert message and "\n" not in message and len(message) < 1000, message
    return message


@pytest.mark.parametrize(
    "value",
    ["café".encode(), "caf\u00e9".encode("latin-1"), b"\xff\xfe\x80x", "\u4f60\u597d".encode(), b"", b" "],
    ids=["utf8", "latin1", "binary", "cjk", "empty", "space"],
)
def test_bearer_tokens_with_any_bytes_are_401(node: NodeProcess, value: bytes) -> None:
    status, body = raw(node, "GET", "/api/v1/config", b"Authorization: Bearer " + value + b"\r\n")
    assert status == 401, body
    assert "admin token" in error_message(body)
    assert raw(node, "GET", "/api/v1/config", f"Authorization: Bearer {token(node)}\r\n".encode())[0] == 200


BAD_NUMBERS = [
    "1e20",
    "99999999999999999999",
    "9" * 5000,
    "9" * 100_000,
    "-1",
    "+1",
    "1.5",
    " 1",
    "0x10",
    "\u00b2",
    "\u0661\u0662",
    "inf",
    "nan",
]


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=lambda v: v[:12])
@pytest.mark.parametrize("param", ["since", "limit"])
def test_bad_numbers_in_the_log_search_are_400_naming_the_parameter(
    node: NodeProcess, param: str, value: str
) -> None:
    status, body = raw(node, "GET", f"/api/v1/log/search?{param}={quote(value)}")
    assert status == 400, body[:300]
    assert error_message(body).startswith(f"{param} must be a whole number from ")


@pytest.mark.parametrize("value", ["0", "10001"])
def test_limit_outside_its_range_is_400(node: NodeProcess, value: str) -> None:
    status, body = raw(node, "GET", f"/api/v1/log/search?limit={value}")
    assert status == 400 and "limit must be a whole number from 1 to 10000" in error_message(body)


def test_good_numbers_still_work(node: NodeProcess) -> None:
    status, body = raw(node, "GET", "/api/v1/log/search?since=0&limit=10000")
    assert status == 200 and json.loads(body) == {"count": 0, "results": []}
    status, body = raw(node, "GET", f"/api/v1/log/search?since={2**63 - 1}&limit=1")
    assert status == 200 and json.loads(body)["count"] == 0


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "99999999999999999999", "-1", "1e3", "9" * 5000])
@pytest.mark.parametrize("kind", ["blocks", "consistency"])
def test_bad_numbers_in_log_paths_are_400(node: NodeProcess, kind: str, value: str) -> None:
    status, body = raw(node, "GET", f"/api/v1/log/{kind}/{quote(value)}")
    assert status == 400, body[:300]
    assert "must be a whole number" in error_message(body)


BAD_BODIES = {
    "1e400": b'{"key": "http_port", "value": 1e400}',
    "-1e400 float": b'{"key": "http_idle_timeout_s", "value": -1e400}',
    "NaN": b'{"key": "http_idle_timeout_s", "value": NaN}',
    "Infinity": b'{"key": "maven_metadata_ttl_s", "value": Infinity}',
    "-Infinity": b'{"key": "upstream_timeout_s", "value": -Infinity}',
    "nested value": b'{"key": "http_port", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested body": b"[" * 100_000 + b"]" * 100_000,
    "nested dict": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "list": b'{"key": "http_port", "value": [8080]}',
    "object": b'{"key": "http_port", "value": {"a": 1}}',
    "bool": b'{"key": "http_port", "value": true}',
    "null": b'{"key": "http_port", "value": null}',
    "fraction": b'{"key": "http_port", "value": 8080.5}',
    "huge int": b'{"key": "http_port", "value": ' + b"9" * 5000 + b"}",
    "huge string int": b'{"key": "http_port", "value": "' + b"9" * 5000 + b'"}',
    "inf string": b'{"key": "http_idle_timeout_s", "value": "inf"}',
    "lone surrogate": b'{"key": "http_host", "value": "\\ud800"}',
    "control char": b'{"key": "http_host", "value": "a\\u0000b"}',
    "newline": b'{"key": "log_level", "value": "info\\n"}',
    "long key": b'{"key": "' + b"k" * 100_000 + b'", "value": 1}',
    "not utf-8": b'{"key": "http_host", "value": "\xff"}',
    "not json": b"http_port=1",
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_config_bodies_are_400_and_never_written(node: NodeProcess, body: bytes) -> None:
    auth = f"Authorization: Bearer {token(node)}\r\n".encode()
    status, answer = raw(node, "PUT", "/api/v1/config", auth + b"Content-Type: application/json\r\n", body)
    assert status == 400, answer[:300]
    error_message(answer)
    assert not (node.home / "pyrsia.toml").exists()


def test_the_node_restarts_after_all_of_it(node: NodeProcess) -> None:
    auth = f"Authorization: Bearer {token(node)}\r\n".encode()
    for body in BAD_BODIES.values():
        raw(node, "PUT", "/api/v1/config", auth, body)
    status, answer = raw(node, "PUT", "/api/v1/config", auth, b'{"key": "log_level", "value": "debug"}')
    assert status == 200, answer
    try:
        assert node.stop() == 0
        node.start()
        status, answer = raw(node, "GET", "/api/v1/config", auth)
        assert status == 200 and json.loads(answer)["log_level"] == "debug"
    finally:
        (node.home / "pyrsia.toml").unlink(missing_ok=True)
