"""`pyrsia id`: a node's peer id, without a running node.

The identity is the node's Ed25519 key in `<home>/identity.key`; it is created here
if missing, exactly as `pyrsia daemon` would create it, so an operator can learn a
node's peer id (to name it in a genesis file, or to authorize it) before starting it.
"""

from __future__ import annotations

from pathlib import Path

from pyrsia.cli import console, options, settings


def identity(home: Path | None = options.HOME, json_output: bool | None = options.JSON) -> None:
    """Print this node's peer id, creating its identity key if there is none yet."""
    from pyrsia import config
    from pyrsia.node.home import IDENTITY_FILE, ensure_home, load_identity

    home = home if home is not None else config.default_home()
    ensure_home(home)
    peer_id = load_identity(home).peer_id
    if settings.wants_json(json_output):
        console.as_json({"peer_id": peer_id, "key_file": str(home / IDENTITY_FILE)})
    else:
        console.line(peer_id)
