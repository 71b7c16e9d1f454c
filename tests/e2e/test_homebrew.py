"""The Homebrew formulas against the real world: PyPI and the built artifacts.

`packaging/homebrew/pyrsia.rb` (from source): every resource's sha256 is the sha256
of the file at its URL, that file is the sdist of the release the resource names,
and pip, constrained to exactly those releases, resolves pyrsia's dependencies to
exactly that set (none missing, none extra). The generator, given a built sdist,
writes that sdist's own hash. The binary formula's hashes are those of the files the
generator read: the frozen executable and the share tarball it packs reproducibly.

PyPI must be reachable (pip's index, files.pythonhosted.org); no Homebrew runs here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

import pyrsia
from tests.e2e.test_man_page import sdist  # noqa: F401  (the module's sdist fixture)
from tests.support.containers import ROOT, frozen_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GENERATE = ROOT / "packaging" / "homebrew" / "generate.py"
FORMULA = ROOT / "packaging" / "homebrew" / "pyrsia.rb"
RESOURCE = re.compile(
    r'^  resource "([^"]+)" do\n    url "([^"]+)"\n    sha256 "([0-9a-f]{64})"\n  end$', re.M
)
SDIST_NAME = re.compile(r"^(?P<name>.+?)-(?P<version>[0-9][^-]*)\.(?:tar\.gz|zip)$")
VERSION = pyrsia.__version__


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resources() -> list[tuple[str, str, str]]:
    found = RESOURCE.findall(FORMULA.read_text())
    assert found, "no resource stanzas in pyrsia.rb"
    return found


def generate(*args: str, timeout_s: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, str(GENERATE), *args],
        capture_output=True, text=True, timeout=timeout_s, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_resource_hashes_match_the_downloaded_sdists() -> None:
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        for name, url, sha256 in resources():
            filename = url.rsplit("/", 1)[-1]
            parsed = SDIST_NAME.match(filename)
            assert parsed and canonical(parsed["name"]) == name, (name, url)
            answer = client.get(url)
            assert answer.status_code == 200, (url, answer.status_code)
            assert hashlib.sha256(answer.content).hexdigest() == sha256, f"{name}: {url}"
            with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
                assert tar.getmembers(), url  # a real archive, not an error page


def test_pip_resolves_exactly_the_formulas_releases(tmp_path: Path) -> None:
    pinned = {}
    for name, url, _ in resources():
        parsed = SDIST_NAME.match(url.rsplit("/", 1)[-1])
        assert parsed is not None
        pinned[name] = parsed["version"]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())))
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--index-url", "https://pypi.org/simple", "--constraint", str(constraints),
         "--report", str(report), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    installed = {
        canonical(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
        if canonical(item["metadata"]["name"]) != "pyrsia"
    }
    assert installed == pinned


def test_source_formula_carries_the_built_sdists_hash(sdist: Path) -> None:  # noqa: F811
    formula = generate("source", "--sdist", str(sdist))
    expected = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert re.findall(r'^  sha256 "(\w+)"$', formula, re.M) == [expected]
    assert (
        f'url "https://github.com/pyrsia/pyrsia/releases/download/v{VERSION}/pyrsia-{VERSION}.tar.gz"'
        in formula
    )
    # The same dependencies as the committed formula (versions may have moved on PyPI since).
    assert {name for name, _, _ in RESOURCE.findall(formula)} == {name for name, _, _ in resources()}


def test_binary_formula_hashes_the_built_artifacts(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    binary = dist / f"pyrsia-{VERSION}-linux-x86_64"
    shutil.copy2(frozen_binary(), binary)
    share = Path(generate("share", "--out", str(dist)).strip())
    assert share == dist / f"pyrsia-{VERSION}-share.tar.gz"
    first = share.read_bytes()
    assert Path(generate("share", "--out", str(dist)).strip()).read_bytes() == first  # reproducible
    with tarfile.open(share) as tar:
        for source, name in (
            ("packaging/man/pyrsia.1", "pyrsia.1"),
            ("completions/pyrsia.bash", "pyrsia.bash"),
            ("completions/_pyrsia", "_pyrsia"),
            ("completions/pyrsia.fish", "pyrsia.fish"),
        ):
            member = tar.extractfile(f"pyrsia-{VERSION}-share/{name}")
            assert member is not None and member.read() == (ROOT / source).read_bytes(), name

    formula = generate("binary", "--dist", str(dist))
    linux = formula[formula.index("on_linux do") : formula.index('resource "share"')]
    assert f'sha256 "{hashlib.sha256(binary.read_bytes()).hexdigest()}"' in linux
    assert "pyrsia-#{version}-linux-x86_64" in linux and "on_macos" not in formula
    share_stanza = formula[formula.index('resource "share"') :]
    assert f'sha256 "{hashlib.sha256(first).hexdigest()}"' in share_stanza
    assert f'version "{VERSION}"' in formula and "0" * 64 not in formula

    # Without any platform asset there is no formula to write.
    binary.unlink()
    result = subprocess.run(
        [sys.executable, str(GENERATE), "binary", "--dist", str(dist)],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode != 0 and "no pyrsia-" in result.stderr
