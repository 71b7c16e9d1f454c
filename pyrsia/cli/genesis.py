"""`pyrsia genesis`: write the genesis block of a new network of several authorities.

The block (height 0) holds one AddAuthorizedNode per `--authority` and is signed by the
identity key of `--home`, its creator, who has no say after it (`translog.chain`).
Every node of the network is started with `pyrsia daemon --genesis FILE`; each pins the
block's hash, and a node whose peer id is in the set is an authority. The file is the
block's canonical encoding (`Block.encode`), written atomically; `--registry` (repeatable)
lists the Docker registry hosts the network vouches for (none given: the built-in
ones, docker.io, gcr.io, ghcr.io, quay.io, registry.k8s.io); an existing file is
replaced only with `--force`, so a network's genesis is never lost to a typo.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pyrsia.cli import console, options, settings


def genesis(
    authority: list[str] | None = typer.Option(
        None,
        "--authority",
        "-a",
        metavar="PEER_ID",
        show_default=False,
        help="Peer id (`pyrsia id`) of an initial authority; repeat for each.",
    ),
    origin: str | None = typer.Option(
        None,
        "--origin",
        show_default=False,
        help="The log's name in its checkpoints (default: pyrsia.log/ and the genesis hash).",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", dir_okay=False, help="File to write the genesis block to."
    ),
    registry: list[str] | None = typer.Option(
        None,
        "--registry",
        metavar="HOST",
        show_default=False,
        help="Docker registry host the network vouches for; repeat for each (default: the built-in ones).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    home: Path | None = options.HOME,
    json_output: bool | None = options.JSON,
) -> None:
    """Write the genesis block of a new network whose authorities are the given peers.

    Signed with the identity key of --home (made if there is none). Start each node of
    the network with `pyrsia daemon --genesis FILE`: the ones named here are its
    authorities, every other node a regular node.
    """
    from pyrsia.config import default_home
    from pyrsia.durable import write_atomic
    from pyrsia.errors import NameInvalid, StorageError, UsageError
    from pyrsia.formats.registry_host import check_host
    from pyrsia.node.home import ensure_home, load_identity
    from pyrsia.registry.api import check_peer_id
    from pyrsia.translog.block import AUTHORITIES_MAX, DEFAULT_REGISTRIES, REGISTRIES_MAX, quorum
    from pyrsia.translog.chain import genesis_block, origin_of
    from pyrsia.translog.checkpoint import ORIGIN_CHARS_MAX, valid_origin

    json_output = settings.wants_json(json_output)
    peers = list(authority or [])
    if not peers:
        raise UsageError("name at least one authority: --authority PEER_ID (see `pyrsia id`)")
    for peer in peers:
        check_peer_id(peer)
    twice = sorted({peer for peer in peers if peers.count(peer) > 1})
    if twice:
        raise UsageError(f"--authority {twice[0]} is given more than once")
    if len(peers) > AUTHORITIES_MAX:
        raise UsageError(f"{len(peers)} authorities given; a network has at most {AUTHORITIES_MAX}")
    if origin is not None and not valid_origin(origin):
        raise UsageError(f"--origin must be 1 to {ORIGIN_CHARS_MAX} printable ASCII characters on one line")
    registries: list[str] = []
    for host in registry or []:
        try:
            registries.append(check_host(host))
        except NameInvalid as exc:
            raise UsageError(f"--registry: {exc.message}") from exc
    if len(set(registries)) > REGISTRIES_MAX:
        raise UsageError(f"{len(set(registries))} registries given; a network lists at most {REGISTRIES_MAX}")
    agreed = sorted(set(registries)) or list(DEFAULT_REGISTRIES)
    if (output.exists() or output.is_symlink()) and not force:
        raise UsageError(f"{output} exists; pass --force to replace it")

    if output.parent.exists() and not output.parent.is_dir():
        raise StorageError(f"cannot write {output}: {output.parent} is not a directory")
    home = home if home is not None else default_home()
    ensure_home(home)
    import time

    block = genesis_block(load_identity(home).signing_key, int(time.time()), peers, origin or "", agreed)
    write_atomic(output, block.encode())
    doc = {
        "file": str(output),
        "genesis": block.header.hash.hex(),
        "origin": origin_of(block.header),
        "creator": block.header.proposer,
        "authorities": peers,
        "quorum": quorum(len(peers)),
        "registries": agreed,
    }
    if json_output:
        console.as_json(doc)
        return
    console.success(f"wrote the genesis block to {output}")
    console.line(f"genesis      {doc['genesis']}")
    console.line(f"origin       {doc['origin']}")
    console.line(f"quorum       {doc['quorum']} of {len(peers)} authorities")
    for peer in peers:
        console.line(f"authority    {peer}")
    console.line(f"registries   {', '.join(agreed)}")
    console.line(f"start each node with: pyrsia daemon --genesis {output}")
