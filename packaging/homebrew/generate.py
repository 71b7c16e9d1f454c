"""Writes pyrsia's Homebrew formulas from what pip resolves and from built artifacts.

    python packaging/homebrew/generate.py source --sdist dist/pyrsia-0.1.0.tar.gz > pyrsia.rb
    python packaging/homebrew/generate.py share --out dist
    python packaging/homebrew/generate.py binary --dist dist > pyrsia-bin.rb

`source`: the formula Homebrew builds from the release sdist with
`virtualenv_install_with_resources`. pip resolves the sdist's dependencies (`pip install
--dry-run --report`, against PyPI only); each resolved release becomes a `resource`
with its sdist's URL and sha256 from PyPI's JSON simple index, the same file and hash
pip would fetch with `--no-binary`. The sdist's own sha256 is computed from the file.

`share`: the release asset `pyrsia-VERSION-share.tar.gz` (completions and the man
page), byte for byte reproducible. `binary`: the formula for the single-file
executables, one `url`/`sha256` per platform asset `pyrsia-VERSION-OS-ARCH` found in
`--dist`, plus the share tarball as a resource; platforms without an asset are left out.

Rendering is pure (`render_source`, `render_binary`); only `main` and the helpers it
names touch pip, the network or files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INDEX = "https://pypi.org/simple"
RELEASES = "https://github.com/pyrsia/pyrsia/releases/download"
PLATFORMS = ("darwin-arm64", "darwin-x86_64", "linux-arm64", "linux-x86_64")
SHARE_FILES = (  # (source in the checkout, name in the tarball)
    ("completions/pyrsia.bash", "pyrsia.bash"),
    ("completions/_pyrsia", "_pyrsia"),
    ("completions/pyrsia.fish", "pyrsia.fish"),
    ("packaging/man/pyrsia.1", "pyrsia.1"),
)
DESC = "Decentralized package network for Docker images and Maven artifacts"
HOMEPAGE = "https://github.com/pyrsia/pyrsia"
PYTHON_FORMULA = "python@3.13"
INDEX_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    name: str  # the project's name as PyPI spells it
    version: str
    url: str
    sha256: str


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- pure: pip's report, the index's answer, the formulas ----------------------------


def resolved(report: dict[str, object], project: str = "pyrsia") -> list[tuple[str, str]]:
    """(name, version) of everything a `pip install --report` would install, but `project`."""
    found = []
    for item in report["install"]:  # type: ignore[attr-defined]
        metadata = item["metadata"]
        if canonical(metadata["name"]) != canonical(project):
            found.append((str(metadata["name"]), str(metadata["version"])))
    return sorted(found, key=lambda pair: canonical(pair[0]))


def sdist_file(index_page: dict[str, object], name: str, version: str) -> tuple[str, str]:
    """(url, sha256) of `name` `version`'s sdist in a PEP 691 JSON index page."""
    stem = f"{canonical(name).replace('-', '_')}-{version}"
    legacy = f"{canonical(name)}-{version}"
    for entry in index_page["files"]:  # type: ignore[attr-defined]
        filename = str(entry["filename"])
        if not filename.endswith((".tar.gz", ".zip")):
            continue
        base = filename.removesuffix(".tar.gz").removesuffix(".zip")
        if canonical(base) in {canonical(stem), canonical(legacy)} and not entry.get("yanked"):
            return str(entry["url"]), str(entry["hashes"]["sha256"])
    raise LookupError(f"no sdist of {name} {version} in the index")


def _resource_stanzas(resources: list[Resource]) -> list[str]:
    out = []
    for resource in resources:
        out += [
            f'  resource "{canonical(resource.name)}" do',
            f'    url "{resource.url}"',
            f'    sha256 "{resource.sha256}"',
            "  end",
            "",
        ]
    return out


SERVICE = """\
  service do
    run [opt_bin/"pyrsia", "daemon", "--home", var/"pyrsia"]
    keep_alive true
    working_dir var/"pyrsia"
    log_path var/"log/pyrsia.log"
    error_log_path var/"log/pyrsia.log"
  end
"""

POST_INSTALL = """\
  def post_install
    (var/"pyrsia").mkpath
  end
"""

TEST = """\
  test do
    assert_equal "pyrsia #{version}", shell_output("#{bin}/pyrsia --version").strip
    assert_match "daemon", shell_output("#{bin}/pyrsia --help")
    assert_path_exists man1/"pyrsia.1"
  end
"""


def render_source(*, version: str, sdist_sha256: str, resources: list[Resource]) -> str:
    """The from-source formula: the release sdist plus one resource per dependency."""
    names = {canonical(r.name) for r in resources}
    build_deps = ['  depends_on "pkgconf" => :build']
    if "pydantic-core" in names:  # its sdist is a Rust crate built by maturin
        build_deps.append('  depends_on "rust" => :build')
    runtime_deps = [f'  depends_on "{PYTHON_FORMULA}"']
    if "pynacl" in names:  # link the system libsodium rather than build the bundled copy
        runtime_deps.insert(0, '  depends_on "libsodium"')
    lines = [
        "# Homebrew formula for pyrsia, built from the release sdist.",
        "# Generated by packaging/homebrew/generate.py from what pip resolves: do not edit.",
        "class Pyrsia < Formula",
        "  include Language::Python::Virtualenv",
        "",
        f'  desc "{DESC}"',
        f'  homepage "{HOMEPAGE}"',
        f'  url "{RELEASES}/v{version}/pyrsia-{version}.tar.gz"',
        f'  sha256 "{sdist_sha256}"',
        '  license "Apache-2.0"',
        "",
        *build_deps,
        *runtime_deps,
        "",
        '  uses_from_macos "libffi"',
        "",
        *_resource_stanzas(resources),
        "  def install",
        '    ENV["SODIUM_INSTALL"] = "system"' if "pynacl" in names else None,
        "    virtualenv_install_with_resources",
        '    man1.install "packaging/man/pyrsia.1"',
        '    bash_completion.install "completions/pyrsia.bash" => "pyrsia"',
        '    zsh_completion.install "completions/_pyrsia"',
        '    fish_completion.install "completions/pyrsia.fish"',
        "  end",
        "",
        POST_INSTALL,
        SERVICE,
        TEST.rstrip("\n"),
        "end",
    ]
    return "\n".join(line for line in lines if line is not None) + "\n"


def render_binary(*, version: str, assets: dict[str, str], share_sha256: str) -> str:
    """The binary formula: `assets` maps a platform (`darwin-arm64`, …) to its sha256."""
    unknown = set(assets) - set(PLATFORMS)
    if unknown or not assets:
        raise ValueError(f"assets must be some of {PLATFORMS}, got {sorted(assets)}")
    blocks: list[str] = []
    for system, ruby_system in (("darwin", "on_macos"), ("linux", "on_linux")):
        arches = [(arch, block) for arch, block in (("arm64", "on_arm"), ("x86_64", "on_intel"))]
        present = [(arch, block) for arch, block in arches if f"{system}-{arch}" in assets]
        if not present:
            continue
        blocks.append(f"  {ruby_system} do")
        for arch, block in present:
            platform = f"{system}-{arch}"
            blocks += [
                f"    {block} do",
                f'      url "{RELEASES}/v#{{version}}/pyrsia-#{{version}}-{platform}"',
                f'      sha256 "{assets[platform]}"',
                "    end",
            ]
        blocks += ["  end", ""]
    lines = [
        "# Homebrew formula for pyrsia's single-file executable (PyInstaller), one asset per",
        "# platform, plus completions and the man page from the share tarball.",
        "# Generated by packaging/homebrew/generate.py from the built artifacts: do not edit.",
        "class PyrsiaBin < Formula",
        f'  desc "{DESC} (prebuilt binary)"',
        f'  homepage "{HOMEPAGE}"',
        f'  version "{version}"',
        '  license "Apache-2.0"',
        "",
        *blocks,
        '  conflicts_with "pyrsia", because: "both install the `pyrsia` executable"',
        "",
        '  resource "share" do',
        f'    url "{RELEASES}/v#{{version}}/pyrsia-#{{version}}-share.tar.gz"',
        f'    sha256 "{share_sha256}"',
        "  end",
        "",
        "  def install",
        "    # A bare (uncompressed) download is staged under its asset name.",
        '    bin.install Dir["pyrsia-#{version}-*"].first => "pyrsia"',
        '    resource("share").stage do # Homebrew enters the tarball\'s single top directory',
        '      man1.install "pyrsia.1"',
        '      bash_completion.install "pyrsia.bash" => "pyrsia"',
        '      zsh_completion.install "_pyrsia"',
        '      fish_completion.install "pyrsia.fish"',
        "    end",
        "  end",
        "",
        POST_INSTALL,
        SERVICE,
        TEST.rstrip("\n"),
        "end",
    ]
    return "\n".join(lines) + "\n"


def share_tarball_bytes(version: str, files: dict[str, bytes]) -> bytes:
    """`pyrsia-VERSION-share/NAME` for each file: fixed owner, mode and mtime, gzip without a
    timestamp, so the same inputs always give the same bytes (and sha256)."""
    top = f"pyrsia-{version}-share"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        directory = tarfile.TarInfo(top)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(directory)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as compressed:
        compressed.write(raw.getvalue())
    return out.getvalue()


# --- shell: pip, the index, files ----------------------------------------------------


def pip_report(project: Path, no_binary: frozenset[str] = frozenset()) -> dict[str, object]:
    """What `pip install PROJECT` would install here, resolved against PyPI alone (no local
    wheel directories or mirrors from pip's configuration); `no_binary` names projects
    pip must take as sdists (so it picks a release that has one)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--index-url", INDEX, "--report", str(report), str(project),
             *(["--no-binary", ",".join(sorted(no_binary))] if no_binary else [])],
            check=True, env=env,
        )  # fmt: skip
        loaded: dict[str, object] = json.loads(report.read_text())
        return loaded


def index_page(name: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{INDEX}/{canonical(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=INDEX_TIMEOUT_S) as answer:
        loaded: dict[str, object] = json.load(answer)
        return loaded


def resources_for(project: Path, attempts_max: int = 5) -> list[Resource]:
    """One resource per release pip resolves. A release published only as wheels (it
    happens: a `.post1` wheel-only fix) cannot be a resource; pip then resolves again
    with `--no-binary` for that project, which picks its newest release with an sdist."""
    no_binary: frozenset[str] = frozenset()
    pages: dict[str, dict[str, object]] = {}
    for _ in range(attempts_max):
        out, wheel_only = [], set()
        for name, version in resolved(pip_report(project, no_binary)):
            page = pages.setdefault(canonical(name), index_page(name))
            try:
                url, sha256 = sdist_file(page, name, version)
            except LookupError:
                wheel_only.add(canonical(name))
                continue
            out.append(Resource(name=name, version=version, url=url, sha256=sha256))
        if not wheel_only:
            return out
        no_binary |= wheel_only
    raise LookupError(f"pip keeps resolving releases without an sdist: {sorted(no_binary)}")


def version_of_sdist(sdist: Path) -> str:
    match = re.fullmatch(r"pyrsia-(.+)\.tar\.gz", sdist.name)
    if match is None:
        raise SystemExit(f"{sdist} is not named pyrsia-VERSION.tar.gz")
    return match.group(1)


def unpacked(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    return into / sdist.name.removesuffix(".tar.gz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    source = commands.add_parser("source", help="the from-source formula, from a built sdist")
    source.add_argument("--sdist", type=Path, required=True)
    share = commands.add_parser("share", help="write pyrsia-VERSION-share.tar.gz into --out")
    share.add_argument("--out", type=Path, required=True)
    share.add_argument("--version", default=None)
    binary = commands.add_parser("binary", help="the binary formula, from the assets in --dist")
    binary.add_argument("--dist", type=Path, required=True)
    binary.add_argument("--version", default=None)
    args = parser.parse_args(argv)

    if args.command == "source":
        version = version_of_sdist(args.sdist)
        with tempfile.TemporaryDirectory() as scratch:
            # Resolve the sdist's own metadata: what the release declares, not the checkout.
            resources = resources_for(unpacked(args.sdist, Path(scratch)))
        sys.stdout.write(
            render_source(version=version, sdist_sha256=sha256_of(args.sdist), resources=resources)
        )
    elif args.command == "share":
        version = args.version or _checkout_version()
        files = {name: (ROOT / source_path).read_bytes() for source_path, name in SHARE_FILES}
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / f"pyrsia-{version}-share.tar.gz"
        target.write_bytes(share_tarball_bytes(version, files))
        print(target)
    else:
        version = args.version or _checkout_version()
        assets = {
            platform: sha256_of(args.dist / f"pyrsia-{version}-{platform}")
            for platform in PLATFORMS
            if (args.dist / f"pyrsia-{version}-{platform}").is_file()
        }
        if not assets:
            raise SystemExit(f"no pyrsia-{version}-PLATFORM asset in {args.dist}")
        share_file = args.dist / f"pyrsia-{version}-share.tar.gz"
        if not share_file.is_file():
            raise SystemExit(f"{share_file} is missing: run `generate.py share --out {args.dist}` first")
        sys.stdout.write(render_binary(version=version, assets=assets, share_sha256=sha256_of(share_file)))


def _checkout_version() -> str:
    sys.path.insert(0, str(ROOT))
    import pyrsia

    return pyrsia.__version__


if __name__ == "__main__":
    main()
