"""Reading registry credentials from disk: docker's `config.json` and per-upstream token files.

The shell around `formats.docker_config` (which parses): it finds the file — the
`docker_config` setting, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`,
as the Docker CLI does — and maps `OSError` to one `CredentialsInvalid` line. A file
that does not exist means no logins (as for the Docker CLI); when the setting named it,
one warning says so, and a pull that then needs a login names the file. Nothing here
logs or quotes a secret.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pyrsia.errors import CredentialsInvalid
from pyrsia.formats.docker_config import CONFIG_BYTES_MAX, Credential, DockerCredentials, bearer_token, parse

log = logging.getLogger("pyrsia.upstream")
TOKEN_FILE_BYTES_MAX = 64 * 1024


def docker_config_path(setting: str, environ: Mapping[str, str] = os.environ) -> Path:
    if setting:
        return Path(setting).expanduser()
    if directory := environ.get("DOCKER_CONFIG"):
        return Path(directory).expanduser() / "config.json"
    return Path.home() / ".docker" / "config.json"


def load_docker_config(setting: str, environ: Mapping[str, str] = os.environ) -> DockerCredentials:
    path = docker_config_path(setting, environ)
    try:
        with path.open("rb") as file:
            data = file.read(CONFIG_BYTES_MAX + 1)
    except FileNotFoundError:
        if setting:
            log.warning("docker_config: %s does not exist; no registry logins are read", path)
        return DockerCredentials(origin=str(path))
    except OSError as exc:
        raise CredentialsInvalid(f"cannot read {path}: {exc.strerror}") from None
    return parse(data, str(path))


def load_token_file(path_text: str, registry: str) -> Credential:
    path = Path(path_text).expanduser()
    try:
        with path.open("rb") as file:
            data = file.read(TOKEN_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise CredentialsInvalid(
            f"upstreams.{registry}.token_file: cannot read {path}: {exc.strerror}"
        ) from None
    if len(data) > TOKEN_FILE_BYTES_MAX:
        raise CredentialsInvalid(f"upstreams.{registry}.token_file: {path} is larger than a token")
    return bearer_token(data, str(path))
