"""`GET /v2/_catalog`: the repositories the transparency log holds, paged like the tags list.

A real docker-registry upstream holds four repositories; the node pulls three of them
(one by digest only), so the catalog must list exactly those three, sorted, from the
log — the fourth exists only upstream and was never vouched for. Paging follows
distribution-spec "content discovery": `n`, `last`, and a `Link` header to the next
page, which a client follows until none is sent. The catalog survives a restart
because it is read from the log, not from memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

THREE = images.three_layer("library/threelayer", "1.0")
MULTI = images.multi_arch("library/multi", "2.0")
NESTED = images.nested("team/tools/hello", "v3")
NEVER_PULLED = images.nested("library/upstream-only", "1")
PULLED = sorted([THREE.name, MULTI.name, NESTED.name])
LINK = re.compile(r'^<(/v2/[^>]+)>; rel="next"$')


@dataclass(frozen=True, slots=True)
class Stack:
    registry: RegistryProcess
    node: NodeProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        for image in (THREE, MULTI, NESTED, NEVER_PULLED):
            images.push(registry.url, image)
        with NodeProcess(tmp_path_factory.mktemp("node"), "--docker-upstream", registry.url) as node:
            for image, reference in ((THREE, THREE.tag), (MULTI, MULTI.tag), (NESTED, NESTED.top)):
                got = httpx.get(f"{node.url}/v2/{image.name}/manifests/{reference}", timeout=30)
                assert got.status_code == 200, got.text
            yield Stack(registry, node)


def catalog(node: NodeProcess, **params: str) -> httpx.Response:
    return httpx.get(f"{node.url}/v2/_catalog", params=params, timeout=30)


def follow(node: NodeProcess, first: str) -> tuple[list[str], list[str]]:
    """Every repository, following `Link` headers from `first`; (names, links seen)."""
    names: list[str] = []
    links: list[str] = []
    url: str | None = first
    while url is not None:
        response = httpx.get(node.url + url, timeout=30)
        assert response.status_code == 200, response.text
        names += response.json()["repositories"]
        link = response.headers.get("link")
        if link is None:
            url = None
        else:
            match = LINK.match(link)
            assert match, link
            links.append(match.group(1))
            url = match.group(1)
        assert len(links) <= 10, "the Link chain does not end"
    return names, links


def test_catalog_lists_the_repositories_the_log_holds(stack: Stack) -> None:
    response = catalog(stack.node)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.json() == {"repositories": PULLED}
    assert "link" not in response.headers
    assert NEVER_PULLED.name not in response.json()["repositories"]


def test_head_catalog_answers_without_a_body(stack: Stack) -> None:
    response = httpx.head(f"{stack.node.url}/v2/_catalog", timeout=30)
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == len(catalog(stack.node).content)


def test_pages_of_one_follow_the_link_header_to_the_end(stack: Stack) -> None:
    names, links = follow(stack.node, "/v2/_catalog?n=1")
    assert names == PULLED
    assert links == [
        f"/v2/_catalog?last={PULLED[0].replace('/', '%2F')}&n=1",
        f"/v2/_catalog?last={PULLED[1].replace('/', '%2F')}&n=1",
    ]


def test_n_and_last(stack: Stack) -> None:
    two = catalog(stack.node, n="2")
    assert two.json() == {"repositories": PULLED[:2]}
    assert two.headers["link"] == f'</v2/_catalog?last={PULLED[1].replace("/", "%2F")}&n=2>; rel="next"'
    assert catalog(stack.node, n="3").json() == {"repositories": PULLED}
    assert "link" not in catalog(stack.node, n="3").headers
    assert catalog(stack.node, n="0").json() == {"repositories": []}
    assert catalog(stack.node, last=PULLED[0]).json() == {"repositories": PULLED[1:]}
    assert catalog(stack.node, last=PULLED[0], n="1").json() == {"repositories": [PULLED[1]]}
    assert catalog(stack.node, last="zzz").json() == {"repositories": []}
    assert catalog(stack.node, last="").json() == {"repositories": PULLED}


def test_tags_list_pages_with_the_same_link_shape(stack: Stack) -> None:
    response = httpx.get(f"{stack.node.url}/v2/{THREE.name}/tags/list", params={"n": "1"}, timeout=30)
    assert response.json() == {"name": THREE.name, "tags": [THREE.tag]}
    assert "link" not in response.headers  # the only tag: nothing follows


@pytest.mark.parametrize("n", ["-1", "x", "1e3", "1.0", "\u00b2", "\u0663", " 1", "10001", "9" * 40])
def test_bad_page_sizes_are_pagination_errors(stack: Stack, n: str) -> None:
    for path in ("/v2/_catalog", f"/v2/{THREE.name}/tags/list"):
        response = httpx.get(stack.node.url + path, params={"n": n}, timeout=30)
        assert response.status_code == 400, response.text
        (error,) = response.json()["errors"]
        assert error["code"] == "PAGINATION_NUMBER_INVALID"
        assert "n must be a whole number from 0 to 10000" in error["message"]


def test_catalog_is_read_only(stack: Stack) -> None:
    response = httpx.delete(f"{stack.node.url}/v2/_catalog", timeout=30)
    assert response.status_code == 405
    assert response.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_catalog_survives_a_restart_without_the_upstream(stack: Stack) -> None:
    stack.registry.stop()
    stack.node.stop()
    stack.node.start()
    assert catalog(stack.node).json() == {"repositories": PULLED}
