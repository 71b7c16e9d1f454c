"""What a Maven directory holds: the transparency log's entries merged with the upstream's.

A listing is for discovery only (Gradle's dynamic versions when no
`maven-metadata.xml` exists); every file it names is still served only through
`MavenArtifacts`, vouched for by the log. Its entries are:
- the children the log holds under the directory: a version the node has pulled stays
  listed even if the upstream later drops it or cannot be reached, and each logged
  file brings the checksum sidecars the node computes for it;
- the children the upstream's own HTML listing names, so a version the node has never
  fetched is discoverable too. The upstream page is read bounded
  (`LISTING_BYTES_MAX`), and only valid path segments are kept from it.
The log is walked one child at a time (a skip scan over its sorted paths), so a
directory under which millions of files are logged costs one index lookup per child.
A directory neither holds is unknown (404); when the upstream fails, the log's entries
are served alone, and if there are none the upstream's error is the answer.
"""

from __future__ import annotations

import logging

from pyrsia.artifacts.maven import served_path
from pyrsia.artifacts.vouch import MAVEN, ArtifactLog
from pyrsia.errors import MavenFileUnknown, UpstreamError
from pyrsia.formats.maven_layout import MavenDirectory
from pyrsia.formats.maven_listing import ENTRIES_MAX, entry_of, read_listing, with_checksums
from pyrsia.upstream.maven import MavenClient, MavenRepositories

log = logging.getLogger("pyrsia.artifacts")
# Appended to a directory child `x/`, a key that sorts after every path under it.
_PAST_CHILDREN = "\U0010ffff"


class MavenListings:
    def __init__(self, translog: ArtifactLog, upstream: MavenClient | MavenRepositories) -> None:
        self._translog = translog
        self._upstream = MavenRepositories([upstream]) if isinstance(upstream, MavenClient) else upstream

    def entries(self, directory: MavenDirectory) -> list[str]:
        """Child names (`1.0/`, `lib-1.0.jar`) of `directory`, sorted."""
        logged = self.logged(directory)
        try:
            page = self._upstream.listing(directory.path)
        except UpstreamError as exc:
            if not logged:
                raise
            log.warning("listing %s from the transparency log only: %s", directory.path, exc.message)
            page = None
        upstream = read_listing(*page) if page is not None else set()
        if not logged and not upstream:
            raise MavenFileUnknown(f"no directory {directory.path} in the log or at the upstream")
        return sorted(logged | upstream)[:ENTRIES_MAX]

    def logged(self, directory: MavenDirectory) -> set[str]:
        """The children the log holds under `directory`, sidecars included."""
        prefix = served_path(directory.path)
        children: set[str] = set()
        after = ""
        while len(children) < ENTRIES_MAX:
            found = self._translog.paths(MAVEN, prefix, after, 1)
            if not found:
                break
            entry = entry_of(found[0][len(prefix) :])
            if entry is not None:
                children.add(entry)
            after = prefix + entry + _PAST_CHILDREN if entry and entry.endswith("/") else found[0]
        return with_checksums(children)
