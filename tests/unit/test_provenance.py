from __future__ import annotations

import json

import pytest

from pyrsia.artifacts.provenance import of_image, of_pom
from pyrsia.translog.tx import DEPENDENCIES_MAX, TEXT_FIELD_CHARS_MAX


def test_image_author_from_annotation_over_label() -> None:
    config = json.dumps({"config": {"Labels": {"org.opencontainers.image.authors": "label <l@x>"}}}).encode()
    manifest = json.dumps({"annotations": {"org.opencontainers.image.authors": "anno <a@x>"}}).encode()
    assert of_image("library/alpine", manifest, config).author == "anno <a@x>"
    assert of_image("library/alpine", b"{}", config).author == "label <l@x>"


def test_image_author_falls_back_to_namespace_and_base_is_a_dependency() -> None:
    manifest = json.dumps(
        {"annotations": {"org.opencontainers.image.base.name": "docker.io/library/debian:12"}}
    )
    found = of_image("team/tools/hello", manifest.encode(), None)
    assert found.author == "team" and found.dependencies == ("docker.io/library/debian:12",)
    assert of_image("alpine", b"not json", b"[]").author == "library"


POM = b"""<?xml version="1.0"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <parent><groupId>com.example</groupId><artifactId>parent</artifactId><version>2.0</version></parent>
  <artifactId>app</artifactId>
  <properties><lib.version>1.4</lib.version></properties>
  <developers>
    <developer><id>ada</id><name>Ada L</name><email>ada@example.com</email></developer>
    <developer><id>bob</id></developer>
  </developers>
  <organization><name>Example Org</name></organization>
  <dependencies>
    <dependency><groupId>com.example</groupId><artifactId>lib-a</artifactId><version>${lib.version}</version></dependency>
    <dependency><groupId>com.example</groupId><artifactId>core</artifactId><version>${project.version}</version></dependency>
    <dependency><groupId>org.managed</groupId><artifactId>no-version</artifactId></dependency>
  </dependencies>
</project>"""


def test_pom_developers_and_dependencies() -> None:
    found = of_pom(POM, "com.example")
    assert found.author == "Ada L <ada@example.com>, bob"
    assert found.dependencies == ("com.example:lib-a:1.4", "com.example:core:2.0", "org.managed:no-version")


def test_pom_organization_then_group_fallbacks() -> None:
    org = b"<project><organization><name>Example Org</name></organization></project>"
    assert of_pom(org, "g").author == "Example Org"
    assert of_pom(b"<project/>", "com.acme").author == "com.acme"
    assert of_pom(b"<<not xml", "com.acme").author == "com.acme"


def test_an_over_long_author_is_cut_to_the_log_limit() -> None:
    manifest = json.dumps({"annotations": {"org.opencontainers.image.authors": "A" * 5000}}).encode()
    assert of_image("x/y", manifest, None).author == "A" * TEXT_FIELD_CHARS_MAX
    developers = "".join(f"<developer><name>{'D' * 100}{i}</name></developer>" for i in range(100))
    pom = f"<project><developers>{developers}</developers></project>".encode()
    assert len(of_pom(pom, "g").author) == TEXT_FIELD_CHARS_MAX


def test_dependencies_fit_a_log_record() -> None:
    too_long = json.dumps({"annotations": {"org.opencontainers.image.base.name": "b" * 5000}}).encode()
    assert of_image("x/y", too_long, None).dependencies == ()
    deps = "".join(
        f"<dependency><groupId>g</groupId><artifactId>a{i}</artifactId></dependency>"
        for i in range(DEPENDENCIES_MAX + 5)
    )
    found = of_pom(f"<project><dependencies>{deps}</dependencies></project>".encode(), "g")
    assert len(found.dependencies) == DEPENDENCIES_MAX


@pytest.mark.parametrize(
    "config",
    [
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,
        json.dumps(
            {"config": {"Labels": {"org.opencontainers.image.authors": ["x"], "k": {"n": 1}}}}
        ).encode(),
        b"\xff\xfe",
    ],
    ids=["nested-object", "nested-list", "non-string-labels", "not-utf8"],
)
def test_unreadable_config_gives_no_labels(config: bytes) -> None:
    assert of_image("library/alpine", b"{}", config).author == "library"
