"""What a cloned source tree may hold before pyrsia builds it.

The clone is written by the repository's authors, who may be hostile. Inside the
sandbox a tree cannot reach the host, but the node itself reads from it (poms,
`.buildinfo`, outputs) and Maven reads configuration from it that could override what
the sandbox supplies. So, before the build (`sandbox.check_source_tree` walks the tree;
this module decides):

- **symlinks** must point inside the tree: an absolute target (`pom.xml -> /etc/shadow`)
  or a relative one that climbs out (`../../..`) is refused (`link_escapes`, lexical;
  the shell also resolves each link on disk). Links inside the tree are kept: some
  projects use them, and the node reads outputs without following any link anyway;
- **`.mvn/maven.config`** (arguments Maven prepends to the command line) may not set
  what the sandbox owns — settings files, the local repository — by the same rule as
  the spec's command (`spec.check_owned_options`);
- **`.mvn/jvm.config`** (options for Maven's own JVM) may not load agents
  (`-javaagent`, `-agentlib`, `-agentpath`), replace the boot class path, read argument
  files (`@file`) or override `user.home`, `maven.repo.local` or the line separator;
  ordinary options (`--add-opens`, `-Xss`, `-D…`) stay;
- **`.mvn/extensions.xml`** is kept: core extensions are plugins in all but name, run
  inside the same sandbox and come through the node's mirror like every plugin;
- **`mvnw`** wrappers are never run: the spec's command must be `mvn` itself
  (`spec.check_command_argv`), so `.mvn/wrapper/` is inert;
- **submodules** are not fetched (the clone does not recurse), so `.gitmodules`
  cannot make the node fetch from elsewhere; a build that needs them fails.

Every refusal is `BuildFailed(reason="source")` with one line naming the file. The
walk is bounded by `TREE_ENTRIES_MAX` entries and the config files by
`MVN_CONFIG_BYTES_MAX` bytes. Pure.
"""

from __future__ import annotations

import posixpath
import shlex

from pyrsia.errors import BuildFailed, BuildSpecInvalid
from pyrsia.sourcebuild.spec import check_owned_options

TREE_ENTRIES_MAX = 500_000
MVN_CONFIG_BYTES_MAX = 64 * 1024
MAVEN_CONFIG = ".mvn/maven.config"
JVM_CONFIG = ".mvn/jvm.config"
_JVM_REFUSED_PREFIXES = ("-javaagent", "-agentlib", "-agentpath", "-Xbootclasspath", "@")
_JVM_REFUSED_PROPERTIES = ("user.home", "maven.repo.local", "line.separator", "java.io.tmpdir")


def _refuse(why: str) -> BuildFailed:
    return BuildFailed(why, reason="source")


def link_escapes(link: str, target: str) -> bool:
    """True when symlink `link` (relative to the tree's root) resolves, lexically,
    outside the tree or to an absolute path."""
    if not target or target.startswith("/") or "\x00" in target:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    return joined == ".." or joined.startswith("../") or joined.startswith("/")


def check_link(link: str, target: str) -> None:
    if link_escapes(link, target):
        raise _refuse(f"the source has a symlink {link[:200]} -> {target[:200]} that points outside it")


def _words(data: bytes, name: str) -> list[str]:
    if len(data) > MVN_CONFIG_BYTES_MAX:
        raise _refuse(f"{name} is larger than {MVN_CONFIG_BYTES_MAX} bytes")
    text = data.decode("utf-8", errors="replace")
    try:
        return shlex.split(text, comments=False)
    except ValueError:
        return text.split()


def check_maven_config(data: bytes) -> tuple[str, ...]:
    """`.mvn/maven.config`'s arguments, or a refusal when they set what the sandbox owns."""
    words = _words(data, MAVEN_CONFIG)
    try:
        check_owned_options(words, what=MAVEN_CONFIG)
    except BuildSpecInvalid as exc:
        raise _refuse(exc.message) from exc
    return tuple(words)


def check_jvm_config(data: bytes) -> tuple[str, ...]:
    """`.mvn/jvm.config`'s options, or a refusal naming the first one pyrsia does not run."""
    words = _words(data, JVM_CONFIG)
    for word in words:
        if word.startswith(_JVM_REFUSED_PREFIXES):
            raise _refuse(
                f"{JVM_CONFIG} has {word[:80]!r}: agents, boot class paths and argument files are refused"
            )
        if word.startswith("-D") and word[2:].split("=", 1)[0] in _JVM_REFUSED_PROPERTIES:
            raise _refuse(f"{JVM_CONFIG} sets {word[:80]!r}, which the sandbox owns")
    return tuple(words)
