"""`pyrsia build docker|maven|source|status|list`: publish an artifact through the
authorities, or have them rebuild a release from source.

`build docker IMAGE` and `build maven G:A:V` start a build on a node (admin token):
on an authority it starts the verification round itself, on a regular node the request
goes to the authorities. Either way the answer is a build id at once; `build status ID`
shows its transactions, each authority's verdict with its reason and the final state,
and with `--wait` polls (against a deadline) until the build is no longer running. A
build that ends refused or failed exits 1, so scripts can `pyrsia build … --wait &&`.
Calls go to `/api/v1/builds` (see `pyrsia.registry.api`).

`build source SPEC` (a Reproducible Central `.buildspec` or pyrsia's TOML form) or
`build source --git URL --tag TAG --gav G:A:V --jdk N --command "…"` is different: every
authority rebuilds the release from its tag in a sandbox and the log takes its files
only if a quorum built them byte for byte. The spec is read and checked here (one
clear line when it is refused) and sent as its canonical fields; `build status` then
shows each authority's build: queued, fetching source, resolving dependencies,
building (with its log tail), matched, differed (naming files and jar entries), failed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from pyrsia.cli import console, layout, options, settings

build_app = typer.Typer(
    help="Publish an image or Maven artifact through the authorities, and follow its build.",
    no_args_is_help=True,
)
RUNNING, COMMITTED = "running", "committed"
WAIT_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.25

WAIT = typer.Option(False, "--wait", help="Follow the build until it is committed, refused or failed.")
TIMEOUT = typer.Option(
    WAIT_TIMEOUT_S, "--timeout", min=0.1, max=86400, help="Seconds --wait follows the build before giving up."
)


def _client(node: str | None, home: Path | None = None, admin_token: str | None = None) -> Any:
    from pyrsia.cli.client import NodeClient

    return NodeClient(settings.node_url(node), admin_token=admin_token, home=home)


def _start(
    kind: str,
    target: str,
    *,
    wait: bool,
    timeout_s: float,
    node: str | None,
    home: Path | None,
    admin_token: str | None,
    json_output: bool | None,
) -> None:
    from pyrsia.formats.build_target import check_target
    from pyrsia.registry.api import BUILDS

    check_target(kind, target)
    client = _client(node, home, admin_token)
    doc = client.post_json(BUILDS, {"kind": kind, "target": target}, admin=True)
    if wait:
        _follow(client, doc, timeout_s, json_output)
        return
    if settings.wants_json(json_output):
        console.as_json(doc)
        return
    console.line(str(doc["id"]))
    via = "on this node" if doc.get("via") == "this node" else "by the authorities"
    console.info(
        f"build of {kind} {target} started {via}; follow it with: pyrsia build status {doc['id']} --wait"
    )


@build_app.command(
    "docker",
    epilog="Examples: pyrsia build docker alpine:3.18;  "
    "pyrsia build docker library/alpine@sha256:<digest> --wait --json",
)
def docker(
    image: str = typer.Argument(..., metavar="IMAGE[:TAG|@DIGEST]", help="Image as docker names it."),
    wait: bool = WAIT,
    timeout_s: float = TIMEOUT,
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Publish a Docker image: the authorities each fetch and check it, then commit it (admin token).

    Prints the build id; --wait follows it like `pyrsia build status ID --wait`.
    """
    _start(
        "docker", image, wait=wait, timeout_s=timeout_s, node=node, home=home,
        admin_token=admin_token, json_output=json_output,
    )  # fmt: skip


@build_app.command("maven", epilog="Example: pyrsia build maven com.example:hello:1.0 --wait")
def maven(
    coordinates: str = typer.Argument(..., metavar="GROUP:ARTIFACT:VERSION", help="Maven coordinates."),
    wait: bool = WAIT,
    timeout_s: float = TIMEOUT,
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Publish a Maven artifact (jar and pom): checked by each authority, then committed (admin token).

    Prints the build id; --wait follows it like `pyrsia build status ID --wait`.
    """
    _start(
        "maven", coordinates, wait=wait, timeout_s=timeout_s, node=node, home=home,
        admin_token=admin_token, json_output=json_output,
    )  # fmt: skip


@build_app.command(
    "source",
    epilog="Examples: pyrsia build source hello-1.0.buildspec --wait;  "
    "pyrsia build source --git https://github.com/example/hello.git --tag v1.0 "
    '--gav com.example:hello:1.0 --jdk 17 --command "mvn package -DskipTests"',
)
def source(
    spec_file: Path | None = typer.Argument(
        None, metavar="[SPEC]", help="A .buildspec file, or a .toml file of the same fields."
    ),
    git: str | None = typer.Option(None, "--git", help="Git repository URL (without a SPEC file)."),
    tag: str | None = typer.Option(None, "--tag", help="Release tag or full commit hash."),
    gav: str | None = typer.Option(None, "--gav", help="GROUP:ARTIFACT:VERSION the build produces."),
    jdk: int | None = typer.Option(None, "--jdk", min=1, max=999, help="JDK major version."),
    command: str | None = typer.Option(
        None, "--command", help='Build command, e.g. "mvn package -DskipTests".'
    ),
    wait: bool = WAIT,
    timeout_s: float = typer.Option(
        1800.0, "--timeout", min=0.1, max=86400, help="Seconds --wait follows the build before giving up."
    ),
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Rebuild a Maven release from its git tag on every authority (admin token).

    Committed only if a quorum of authorities built byte-identical files.

    Prints the build id; --wait follows it like `pyrsia build status ID --wait`.
    """
    from pyrsia.registry.api import BUILDS
    from pyrsia.sourcebuild.spec import canonical_fields

    spec = _read_spec(spec_file, git=git, tag=tag, gav=gav, jdk=jdk, command=command)
    client = _client(node, home, admin_token)
    doc = client.post_json(BUILDS, {"kind": "source", "spec": canonical_fields(spec)}, admin=True)
    if wait:
        _follow(client, doc, timeout_s, json_output)
        return
    if settings.wants_json(json_output):
        console.as_json(doc)
        return
    console.line(str(doc["id"]))
    console.info(
        f"build from source of {spec.gav} ({spec.git_repo} {spec.git_tag}) started; "
        f"follow it with: pyrsia build status {doc['id']} --wait"
    )


def _read_spec(
    spec_file: Path | None,
    *,
    git: str | None,
    tag: str | None,
    gav: str | None,
    jdk: int | None,
    command: str | None,
) -> Any:
    from pyrsia.errors import BuildSpecInvalid, UsageError
    from pyrsia.sourcebuild.spec import SPEC_SIZE_BYTES_MAX, load_spec, spec_from_flags

    flags = {"--git": git, "--tag": tag, "--gav": gav, "--jdk": jdk, "--command": command}
    if spec_file is not None:
        given = [name for name, value in flags.items() if value is not None]
        if given:
            raise UsageError(f"give a SPEC file or the flags, not both ({', '.join(given)})")
        try:
            with spec_file.open("rb") as stream:
                data = stream.read(SPEC_SIZE_BYTES_MAX + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {spec_file}: {exc.strerror}") from exc
        if len(data) > SPEC_SIZE_BYTES_MAX:
            raise BuildSpecInvalid(
                f"{spec_file} is larger than {SPEC_SIZE_BYTES_MAX} bytes: not a build spec"
            )
        return load_spec(data, filename=spec_file.name)
    missing = [name for name, value in flags.items() if value is None]
    if missing:
        raise UsageError(
            f"give a SPEC file, or all of --git --tag --gav --jdk --command (missing {' '.join(missing)})"
        )
    assert git is not None and tag is not None and gav is not None and jdk is not None and command is not None
    return spec_from_flags(git=git, tag=tag, gav=gav, jdk=jdk, command=command)


@build_app.command(
    "status",
    epilog="Examples: pyrsia build status 3f9c2a7d1e4b8c60;  pyrsia build status 3f9c2a7d1e4b8c60 --wait",
)
def status(
    build_id: str = typer.Argument(
        ..., metavar="ID", help="Build id, as `pyrsia build docker|maven` printed it."
    ),
    wait: bool = WAIT,
    timeout_s: float = TIMEOUT,
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
    wide: bool = options.WIDE,
) -> None:
    """Show a build: its transactions, each authority's verdict and reason, its state.

    Exits 1 when the build was refused or failed (or is still running when --wait gives up).
    """
    from pyrsia.registry.api import BUILDS, check_build_id

    client = _client(node)
    doc = client.get_json(f"{BUILDS}/{check_build_id(build_id)}")
    if wait:
        _follow(client, doc, timeout_s, json_output, wide=wide)
    else:
        _finish(doc, json_output, waited=False, wide=wide)


@build_app.command("list", epilog="Example: pyrsia build list --json")
def list_(
    node: str | None = options.NODE, json_output: bool | None = options.JSON, wide: bool = options.WIDE
) -> None:
    """List the builds this node knows, newest first."""
    from pyrsia.registry.api import BUILDS

    node = settings.node_url(node)
    found = sorted(_client(node).get_json(BUILDS)["builds"], key=lambda b: -float(b["started_at"]))
    if settings.wants_json(json_output):
        console.as_json(found)
        return
    console.table(
        f"{len(found)} builds on {node}",
        (
            layout.fixed("id"),
            layout.fixed("kind"),
            "target",
            layout.fixed("state"),
            layout.fixed("height"),
            layout.fixed("started", drop=1),
            layout.Column(header="via", drop=2),
        ),
        (
            (
                b["id"],
                b["kind"],
                b["target"],
                b["state"],
                _or_dash(b["height"]),
                _when(b["started_at"]),
                b["via"],
            )
            for b in found
        ),
        wide=wide,
    )


def _follow(
    client: Any, doc: dict[str, Any], timeout_s: float, json_output: bool | None, *, wide: bool = False
) -> None:
    """Polls the build until it leaves `running` or `timeout_s` passes, then shows it."""
    from pyrsia.registry.api import BUILDS

    deadline = time.monotonic() + timeout_s
    build_id = str(doc["id"])
    with console.status_spinner(f"build {build_id}: {doc['kind']} {doc['target']} running"):
        while doc["state"] == RUNNING and time.monotonic() < deadline:
            time.sleep(min(POLL_INTERVAL_S, max(deadline - time.monotonic(), 0.0)))
            doc = client.get_json(f"{BUILDS}/{build_id}")
    _finish(doc, json_output, waited=True, timeout_s=timeout_s, wide=wide)


def _finish(
    doc: dict[str, Any],
    json_output: bool | None,
    *,
    waited: bool,
    timeout_s: float = 0.0,
    wide: bool = False,
) -> None:
    """Shows the build; raises (exit 1) when it ended refused or failed, or outlived --wait."""
    from pyrsia.errors import PyrsiaError

    if settings.wants_json(json_output):
        console.as_json(doc)
    else:
        render(doc, wide=wide)
    state, build_id = doc["state"], doc["id"]
    if state == RUNNING and waited:
        raise PyrsiaError(
            f"build {build_id} is still running after {timeout_s:g} s; "
            f"follow it with: pyrsia build status {build_id} --wait"
        )
    if state not in (RUNNING, COMMITTED):
        reason = doc.get("error") or _refusals(doc) or "no reason given"
        raise PyrsiaError(f"build {build_id} {state}: {reason}")
    if state == COMMITTED and not settings.wants_json(json_output):
        console.success(f"build {build_id} committed at height {doc['height']}")


def render(doc: dict[str, Any], *, wide: bool = False) -> None:
    """A build for people: a summary, its transactions, each authority's verdict."""
    console.key_values(
        f"build {doc['id']}",
        [
            ("target", f"{doc['kind']} {doc['target']}"),
            ("state", doc["state"]),
            ("height", _or_dash(doc["height"])),
            ("via", doc["via"]),
            ("started", _when(doc["started_at"])),
            ("finished", "-" if doc["finished_at"] is None else _when(doc["finished_at"])),
            ("error", _or_dash(doc["error"])),
        ],
    )
    transactions = doc["transactions"]
    if transactions:
        console.table(
            f"{len(transactions)} transactions",
            ("path", layout.id_column("digest"), layout.id_column("tx id", drop=1), layout.fixed("state")),
            ((t["path"], t["digest"], t["tx_id"], t["state"]) for t in transactions),
            wide=wide,
        )
    else:
        console.line("no transactions yet")
    verdicts = doc["verdicts"]
    if verdicts:
        console.table(
            f"verdicts of {len(verdicts)} authorities",
            (layout.id_column("authority"), layout.fixed("verdict"), "reason"),
            ((v["authority"], v["verdict"], v["reason"] or "-") for v in verdicts),
            wide=wide,
        )
    else:
        console.line("no verdicts yet")
    authorities = doc.get("authorities") or []
    if authorities:  # a build from source: each authority's own build
        console.table(
            f"builds of {len(authorities)} authorities",
            (layout.id_column("authority"), layout.fixed("build"), "detail"),
            ((a["authority"], a["state"].replace("_", " "), a["detail"] or "-") for a in authorities),
            wide=wide,
        )
        for a in authorities:
            if a["state"] == "building" and a.get("log_tail"):
                console.line(f"log of {a['authority'][:16]}…:\n" + str(a["log_tail"]).rstrip()[-800:])
    answers = doc.get("answers") or []
    if answers:  # a build through a regular node: what each authority it asked answered
        console.table(
            f"answers of {len(answers)} authorities asked",
            (layout.id_column("authority"), layout.fixed("answer"), "detail"),
            ((a["authority"], a["answer"], a["detail"] or "-") for a in answers),
            wide=wide,
        )
    elif doc["via"] != "this node" and doc["state"] == RUNNING:
        console.line("no authority has answered yet")
    console.line(f"state {doc['state']}")


def _refusals(doc: dict[str, Any]) -> str:
    refused = [
        f"{v['authority'][:16]}… refused: {v['reason']}" for v in doc["verdicts"] if v["verdict"] == "refused"
    ]
    refused += [
        f"{a['authority'][:16]}… {a['state']}: {a['detail']}"
        for a in doc.get("authorities") or []
        if a["state"] in ("differed", "failed")
    ]
    return "; ".join(refused)


def _or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S")
