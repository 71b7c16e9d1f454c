"""After podman pulls an image through a node, the log holds one record per file of
it, with the digests podman received, each with the size and chunk root of the bytes
the node stored, and each has a proof that verifies. The manifest and config are
committed when the image is first asked for, each layer when its bytes first arrive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyrsia.translog.chunks import CHUNK_BYTES, chunk_hashes, chunk_root
from tests.e2e.test_registry_clients import podman_env, run
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e


def pyrsia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyrsia", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )


def test_podman_pull_is_logged_and_provable(tmp_path: Path) -> None:
    three = images.three_layer()
    with RegistryProcess(tmp_path / "upstream") as registry:
        images.push(registry.url, three)
        with NodeProcess(tmp_path / "node", "--docker-upstream", registry.url) as node:
            env = podman_env(tmp_path / "podman", node)
            reference = f"{node.address}/{three.reference}"
            run("podman", "pull", "--tls-verify=false", reference, env=env)
            received = run(
                "podman", "image", "inspect", "--format", "{{.Digest}} {{.Id}}", reference, env=env
            )
            manifest_digest, image_id = received.split()

            found = pyrsia("log", "search", "--package", "library/threelayer", "--json", "--node", node.url)
            assert found.returncode == 0, found.stderr
            records = json.loads(found.stdout)
            digests = sorted(r["digest"] for r in records)
            files = [three.top, *three.blobs]  # manifest, config, three layers
            assert digests == sorted(files) and len(records) == 5
            assert manifest_digest == three.top and f"sha256:{image_id}" in digests
            assert {r["author"] for r in records} == {"Pyrsia Tests <tests@pyrsia.example>"}

            config = f"sha256:{image_id}"
            for record in records:
                held = node.home / "blobs" / "sha256" / record["digest"][7:9] / record["digest"][7:]
                data = held.read_bytes()
                assert record["size"] == len(data) and record["chunk_size"] == CHUNK_BYTES
                assert record["chunk_root"] == chunk_root(chunk_hashes(data)).hex()
                assert (record["height"] == 1) == (record["digest"] in (three.top, config)), record

            for digest in files:
                proved = pyrsia("log", "proof", digest, "--json", "--node", node.url)
                assert proved.returncode == 0, proved.stderr
                assert json.loads(proved.stdout)["verified"] is True

            shown = pyrsia("log", "show", "1", "--json", "--node", node.url)
            block = json.loads(shown.stdout)
            assert sorted(t["payload"]["digest"] for t in block["transactions"]) == sorted(
                [three.top, config]
            )
            table = pyrsia("log", "show", "1", "--node", node.url)
            assert table.returncode == 0 and "transactions" in table.stdout and three.top[:19] in table.stdout
            assert pyrsia("log", "show", "99", "--node", node.url).returncode == 1

            csv_out = pyrsia(
                "inspect-log", "docker", "--image", "threelayer:1.0", "--format", "csv",
                "--fields", "path,digest", "--node", node.url,
            )  # fmt: skip
            assert csv_out.returncode == 0, csv_out.stderr
            lines = csv_out.stdout.strip().splitlines()
            assert lines[0] == "path,digest" and len(lines) == 6
        verified = pyrsia("log", "verify", "--home", str(tmp_path / "node"), "--json")
        assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
