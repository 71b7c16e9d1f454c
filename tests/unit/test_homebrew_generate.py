"""packaging/homebrew/generate.py's pure parts: reading pip's report and the index's
answer, rendering both formulas, and the reproducible share tarball."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "homebrew_generate", ROOT / "packaging" / "homebrew" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gen = load()
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def blocks_balance(formula: str) -> bool:
    """Every Ruby block the formula opens (class, def, `do`) is closed by an `end` at its
    own indentation (no ruby here to parse it)."""
    stack: list[int] = []
    for line in formula.splitlines():
        indent = len(line) - len(line.lstrip())
        words = line.split("#")[0].split()
        if words[:1] in (["class"], ["def"]) or words[-1:] == ["do"]:
            stack.append(indent)
        elif words == ["end"] and (not stack or stack.pop() != indent):
            return False
    return not stack


def test_resolved_leaves_the_project_out_and_sorts_by_canonical_name() -> None:
    report = {
        "install": [
            {"metadata": {"name": "pyrsia", "version": "0.1.0"}},
            {"metadata": {"name": "typing_extensions", "version": "4.16.0"}},
            {"metadata": {"name": "PyNaCl", "version": "1.6.2"}},
            {"metadata": {"name": "anyio", "version": "4.16.0"}},
        ]
    }
    assert gen.resolved(report) == [("anyio", "4.16.0"), ("PyNaCl", "1.6.2"), ("typing_extensions", "4.16.0")]


def test_sdist_file_picks_the_sdist_of_that_version_only() -> None:
    page = {
        "files": [
            {"filename": "PyNaCl-1.6.2-cp38-abi3-manylinux.whl", "url": "u-whl", "hashes": {"sha256": SHA_A}},
            {"filename": "pynacl-1.6.1.tar.gz", "url": "u-old", "hashes": {"sha256": SHA_B}},
            {"filename": "pynacl-1.6.2.tar.gz", "url": "u-new", "hashes": {"sha256": SHA_C}},
        ]
    }
    assert gen.sdist_file(page, "PyNaCl", "1.6.2") == ("u-new", SHA_C)
    with pytest.raises(LookupError):  # a wheel-only release is not a resource
        gen.sdist_file({"files": page["files"][:1]}, "PyNaCl", "1.6.2")
    yanked = {"files": [{**page["files"][2], "yanked": "broken"}]}
    with pytest.raises(LookupError):
        gen.sdist_file(yanked, "PyNaCl", "1.6.2")
    # Names normalise: typing_extensions' sdist is typing_extensions-V.tar.gz
    assert gen.sdist_file(
        {"files": [{"filename": "typing_extensions-4.16.0.tar.gz", "url": "u", "hashes": {"sha256": SHA_A}}]},
        "typing-extensions",
        "4.16.0",
    ) == ("u", SHA_A)


def test_source_formula_has_one_resource_per_dependency() -> None:
    resources = [
        gen.Resource(
            name="PyNaCl", version="1.6.2", url="https://files.example/pynacl-1.6.2.tar.gz", sha256=SHA_A
        ),
        gen.Resource(
            name="typer", version="0.29.2", url="https://files.example/typer-0.29.2.tar.gz", sha256=SHA_B
        ),
    ]
    formula = gen.render_source(version="1.2.3", sdist_sha256=SHA_C, resources=resources)
    assert 'url "https://github.com/pyrsia/pyrsia/releases/download/v1.2.3/pyrsia-1.2.3.tar.gz"' in formula
    assert re.findall(r'^  sha256 "(\w+)"$', formula, re.M) == [SHA_C]  # the sdist's, at the top level
    stanzas = re.findall(
        r'^  resource "([^"]+)" do\n    url "([^"]+)"\n    sha256 "(\w+)"\n  end$', formula, re.M
    )
    assert stanzas == [
        ("pynacl", "https://files.example/pynacl-1.6.2.tar.gz", SHA_A),
        ("typer", "https://files.example/typer-0.29.2.tar.gz", SHA_B),
    ]
    assert (
        "include Language::Python::Virtualenv" in formula and "virtualenv_install_with_resources" in formula
    )
    assert 'man1.install "packaging/man/pyrsia.1"' in formula
    assert 'depends_on "libsodium"' in formula and 'ENV["SODIUM_INSTALL"] = "system"' in formula
    assert 'depends_on "rust"' not in formula  # only pydantic-core's sdist needs it
    assert blocks_balance(formula)


def test_binary_formula_lists_only_the_platforms_built() -> None:
    formula = gen.render_binary(
        version="1.2.3", assets={"linux-x86_64": SHA_A, "darwin-arm64": SHA_B}, share_sha256=SHA_C
    )
    assert 'version "1.2.3"' in formula
    macos = formula[formula.index("on_macos do") : formula.index("on_linux do")]
    assert "on_arm do" in macos and "on_intel do" not in macos and SHA_B in macos
    assert "pyrsia-#{version}-darwin-arm64" in macos
    linux = formula[formula.index("on_linux do") : formula.index('resource "share"')]
    assert "on_intel do" in linux and "on_arm do" not in linux and SHA_A in linux
    share = formula[formula.index('resource "share"') :]
    assert f'sha256 "{SHA_C}"' in share and "pyrsia-#{version}-share.tar.gz" in share
    assert 'man1.install "pyrsia.1"' in formula and blocks_balance(formula)
    with pytest.raises(ValueError):
        gen.render_binary(version="1", assets={"windows-x86_64": SHA_A}, share_sha256=SHA_C)
    with pytest.raises(ValueError):
        gen.render_binary(version="1", assets={}, share_sha256=SHA_C)


def test_share_tarball_is_reproducible_and_laid_out_for_homebrew() -> None:
    files = {"pyrsia.1": b".TH PYRSIA 1\n", "pyrsia.bash": b"complete\n"}
    first = gen.share_tarball_bytes("1.2.3", files)
    assert first == gen.share_tarball_bytes("1.2.3", dict(reversed(list(files.items()))))
    assert first != gen.share_tarball_bytes("1.2.4", files)
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "pyrsia-1.2.3-share",
            *(f"pyrsia-1.2.3-share/{n}" for n in sorted(files)),
        ]
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
        extracted = tar.extractfile("pyrsia-1.2.3-share/pyrsia.1")
        assert extracted is not None and extracted.read() == files["pyrsia.1"]
