"""`pyrsia pull …`: fetch artifacts through a node without docker or mvn.

While progress bars run, `PeerWatch` polls the node's `/api/v1/status` (its
`exchange.transfers`) and notes "from N peers" on the bar of each blob the node is
fetching from its peers; a blob the node serves from its store or its upstream gets no
note. Nothing is polled when the bars are off (no terminal), so `--json` and piped
output stay as they were, with an optional `peers` field when a count was seen.

What a pull writes is registered with `interrupt.partial`, so a failed or interrupted
pull leaves no partial file, and pulled files get the mode `open()` would give them
(0644 under umask 022), not the blob store's 0600.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType

import typer

from pyrsia.cli import console, interrupt, options, settings

STATUS_POLL_S = 0.5


def file_mode() -> int:
    """0666 less this process's umask: what `open()` would give a new file (0644 under umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def publish(layout: Path, mode: int) -> None:
    """Give every file of a pulled layout `mode`: the blob store writes its files 0600."""
    from pyrsia.errors import StorageError

    try:
        for path in layout.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(mode)
    except OSError as exc:
        raise StorageError(f"cannot set the mode of the files in {layout}: {exc.strerror}") from exc


def peers_by_digest(status: object) -> dict[str, int]:
    """`{digest: providers}` of every peer transfer in a node's status document; odd entries skipped."""
    exchange = status.get("exchange") if isinstance(status, dict) else None
    transfers = exchange.get("transfers") if isinstance(exchange, dict) else None
    found: dict[str, int] = {}
    for transfer in transfers if isinstance(transfers, list) else []:
        if not isinstance(transfer, dict):
            continue
        digest, providers = transfer.get("digest"), transfer.get("providers")
        if isinstance(digest, str) and isinstance(providers, list) and providers:
            found[digest] = len(providers)
    return found


def peers_note(count: int) -> str:
    return f"from {count} peer{'' if count == 1 else 's'}"


class PeerWatch:
    """A light background poll of the node's status while bars run; notes peers on watched bars."""

    def __init__(self, node: str, *, enabled: bool) -> None:
        self._node = node
        self._enabled = enabled
        self._bars: dict[str, console.Bar] = {}
        self._peers: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, digest: str, bar: console.Bar) -> None:
        with self._lock:
            self._bars[digest] = bar

    @property
    def peers(self) -> int:
        """The most peers any watched blob came from (0 when none came from peers)."""
        with self._lock:
            return max(self._peers.values(), default=0)

    def _poll(self) -> None:
        from pyrsia.cli.client import NodeClient
        from pyrsia.errors import PyrsiaError

        client = NodeClient(self._node)
        while not self._stopped.wait(STATUS_POLL_S):
            try:
                found = peers_by_digest(client.get_json("/api/v1/status"))
            except PyrsiaError:
                continue  # the pull itself reports a node that went away
            with self._lock:
                for digest, count in found.items():
                    bar = self._bars.get(digest)
                    if bar is not None and self._peers.get(digest) != count:
                        self._peers[digest] = count
                        bar.note(peers_note(count))

    def __enter__(self) -> PeerWatch:
        if self._enabled:
            self._thread = threading.Thread(target=self._poll, name="pull-peers", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=STATUS_POLL_S * 4)


pull_app = typer.Typer(
    help="Fetch artifacts through a pyrsia node, without docker or mvn.", no_args_is_help=True
)


@pull_app.command(
    "artifact",
    epilog="Example: pyrsia pull artifact org.apache.commons:commons-lang3:3.14.0 -o lang3.jar",
)
def artifact(
    coordinates: str = typer.Argument(
        ..., metavar="GROUP:ARTIFACT[:EXTENSION[:CLASSIFIER]]:VERSION", help="Maven coordinates."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the file (default: its Maven file name, here)."
    ),
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """Download one Maven artifact through the node, checked against the node's sha256."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    from pyrsia.cli.client import NodeClient
    from pyrsia.errors import DigestMismatch, StorageError
    from pyrsia.formats.maven_layout import Coordinates

    coords = Coordinates.parse(coordinates)
    target = output or Path(coords.filename)
    client = NodeClient(node)
    url_path = f"/maven2/{coords.path}"
    expected = client.get_text(url_path + ".sha256").strip()
    hasher = hashlib.sha256()
    mode = file_mode()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", suffix=".part")
        os.fchmod(fd, mode)  # mkstemp makes 0600; a pulled file is as readable as any other
    except OSError as exc:
        raise StorageError(f"cannot write to {target.parent}: {exc.strerror}") from exc
    with interrupt.partial(Path(tmp_name)):
        with (
            os.fdopen(fd, "wb") as file,
            PeerWatch(node, enabled=console.err.is_terminal) as watch,
            console.transfer(coords.filename) as progress,
        ):
            watch.watch(f"sha256:{expected}", progress)
            for chunk, total in client.stream(url_path):
                file.write(chunk)
                hasher.update(chunk)
                progress(len(chunk), total)
        if hasher.hexdigest() != expected:
            raise DigestMismatch(
                expected=f"sha256:{expected}", calculated=f"sha256:{hasher.hexdigest()}", source=node
            )
        os.replace(tmp_name, target)
    result: dict[str, object] = {
        "path": str(target),
        "sha256": hasher.hexdigest(),
        "size": target.stat().st_size,
        "coordinates": coordinates,
    }
    if watch.peers:
        result["peers"] = watch.peers
    if json_output:
        console.as_json(result)
    else:
        console.line(f"{target}  sha256:{hasher.hexdigest()}")


@pull_app.command(
    "image",
    epilog="Examples: pyrsia pull image alpine:3.18 --output alpine-oci;  "
    "pyrsia pull image library/alpine:3.18 --format docker-archive -o alpine.tar --platform linux/arm64",
)
def image(
    reference: str = typer.Argument(
        ...,
        metavar="[HOST/]NAME[:TAG|@DIGEST]",
        help="Image to pull, e.g. alpine:3.18 or ghcr.io/org/app:1.0 (a registry host other than docker.io"
        " picks that registry's upstream).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Directory (oci) or file (docker-archive) to write [default: from the name].",
    ),
    output_format: str = typer.Option("oci", "--format", help="oci (an OCI image layout) or docker-archive."),
    platform: str | None = typer.Option(
        None, "--platform", help="OS/ARCH to pick from a multi-platform image (default: this machine's)."
    ),
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """Pull an image through the node into an OCI layout or a `docker load`-able archive."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    import shutil

    from pyrsia.artifacts.image_export import Platform, pull_to_layout, write_docker_archive
    from pyrsia.errors import NodeUnreachable, RegistryError, UpstreamUnavailable, UsageError
    from pyrsia.formats.digest import Digest
    from pyrsia.formats.reference import parse_image_reference
    from pyrsia.upstream.registry import RegistryClient

    if output_format not in ("oci", "docker-archive"):
        raise UsageError(f"--format must be oci or docker-archive, not {output_format!r}")
    try:
        name, ref = parse_image_reference(reference)
    except RegistryError as exc:  # typed by the user: a usage error, not a registry answer
        raise UsageError(f"{reference!r} is not an image reference: {exc.message}") from exc
    short = name.removeprefix("library/")
    label = f"{short}:{ref}" if ":" not in ref else f"{short}@{ref}"
    default_name = short.replace("/", "-") + ("-" + ref if ":" not in ref else "")
    chosen_platform = Platform.parse(platform) if platform else Platform.host()
    client = RegistryClient(node, retries_max=1, role="pyrsia node")
    archive = output_format == "docker-archive"
    target = output or Path(default_name + (".tar" if archive else ""))
    layout = Path(tempfile.mkdtemp(prefix=".pyrsia-pull-", dir=target.parent)) if archive else target
    # What this pull creates goes again if it fails or is interrupted; a directory that was
    # there before keeps what it had (its blobs are whole: each is placed only once verified).
    made = layout if archive or not target.exists() else layout / ".tmp"
    mode = file_mode()
    try:
        with (
            interrupt.partial(made),
            PeerWatch(node, enabled=console.err.is_terminal) as watch,
            console.transfers(f"pulling {label}") as start_bar,
        ):

            def start(digest: Digest, total: int) -> console.Bar:
                bar = start_bar(digest.hex[:12], total)
                watch.watch(str(digest), bar)
                return bar

            pulled = pull_to_layout(client, name, ref, layout, chosen_platform, start)
            if archive:
                with interrupt.partial(target):
                    write_docker_archive(pulled, label if ":" not in ref else f"{short}:latest", target)
            else:
                publish(layout, mode)
    except UpstreamUnavailable as exc:
        raise NodeUnreachable(f"cannot pull {label} from the node at {node}: {exc.message}") from exc
    finally:
        client.close()
        if archive:
            shutil.rmtree(layout, ignore_errors=True)
    result: dict[str, object] = {
        "reference": label,
        "output": str(target),
        "format": output_format,
        "manifest_digest": str(pulled.manifest_digest),
        "config_digest": str(pulled.config_digest),
        "layers": [str(d) for d in pulled.layer_digests],
        "bytes": pulled.total_bytes,
        "platform": str(pulled.platform) if pulled.platform else None,
    }
    if watch.peers:
        result["peers"] = watch.peers
    if json_output:
        console.as_json(result)
    else:
        console.line(f"{target}  {pulled.manifest_digest}")
