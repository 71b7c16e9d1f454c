"""`pyrsia pull …`: fetch artifacts through a node without docker or mvn."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import typer

from pyrsia.cli import console, options

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
    node: str = options.NODE,
    json_output: bool = options.JSON,
) -> None:
    """Download one Maven artifact through the node, checked against the node's sha256."""
    from pyrsia.cli.client import NodeClient
    from pyrsia.errors import DigestMismatch, StorageError
    from pyrsia.registry.maven_layout import Coordinates

    coords = Coordinates.parse(coordinates)
    target = output or Path(coords.filename)
    client = NodeClient(node)
    url_path = f"/maven2/{coords.path}"
    expected = client.get_text(url_path + ".sha256").strip()
    hasher = hashlib.sha256()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", suffix=".part")
    except OSError as exc:
        raise StorageError(f"cannot write to {target.parent}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as file, console.transfer(coords.filename) as progress:
            for chunk, total in client.stream(url_path):
                file.write(chunk)
                hasher.update(chunk)
                progress(len(chunk), total)
        if hasher.hexdigest() != expected:
            raise DigestMismatch(
                expected=f"sha256:{expected}", calculated=f"sha256:{hasher.hexdigest()}", source=node
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    result = {
        "path": str(target),
        "sha256": hasher.hexdigest(),
        "size": target.stat().st_size,
        "coordinates": coordinates,
    }
    if json_output:
        console.as_json(result)
    else:
        console.line(f"{target}  sha256:{hasher.hexdigest()}")
