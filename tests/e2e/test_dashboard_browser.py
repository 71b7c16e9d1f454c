"""The web dashboard in headless Chromium (Debian's `chromium` and `chromium-driver`) against a devnet.

One network for the module: two authorities that pull through a real docker-registry
and a regular node whose downloads from peers are held to a slow rate, so a pull is
seen in progress. Two images and a Maven artifact are published by builds on the first
authority, so the log holds records with authors and dependencies and each build has
both authorities' verdicts. Every page must render live data without a console error; a search by each
field finds its record; a record's inclusion proof verifies in the browser (and a
tampered one does not); the regular node's transfers page shows a pull advancing, and
so does a node of its own whose upstream drips a layer.
The JavaScript verifier is also checked against the Python Merkle tree and signed
notes over many sizes. Screenshots go to `test-artifacts/dashboard/` (git-ignored),
whose path the test prints.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from selenium import webdriver
from selenium.common.exceptions import (
    JavascriptException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint
from pyrsia.translog.merkle import Tree
from tests.support import images, maven_repo
from tests.support.bft import Member, eventually, start_network
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess
from tests.support.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
SLOW_RATE = 1_500_000  # bytes/s the regular node takes from its peers
LAYER_BYTES = 9_000_000
MAVEN_TARGET = "com.example:lib-a:1.0"  # its POM depends on com.example:lib-b
DEADLINE_S = 120.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1360,900",
)


@dataclass
class Devnet:
    authorities: list[Member]
    regular: Member
    small: images.Image
    big: images.Image


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("dashboard")
    small, big = images.three_layer(), images.large("library/big", "1.0", LAYER_BYTES)
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(root / "upstream"))
        images.push(registry.url, small)
        images.push(registry.url, big)
        maven_repo.build(root / "maven", root / "maven-work")
        maven = stack.enter_context(maven_repo.MavenServer(root / "maven"))

        def flags(role: str, index: int) -> tuple[str, ...]:
            slow = ("--max-download-rate", str(SLOW_RATE)) if role == "regular" else ()
            return ("--docker-upstream", registry.url, "--maven-upstream", maven.url, *slow)

        authorities, (regular,), _ = start_network(stack, root, authorities=2, regular=1, flags=flags)
        for kind, target in (("docker", small.reference), ("docker", big.reference), ("maven", MAVEN_TARGET)):
            build = authorities[0].finished_build(authorities[0].build(kind, target), DEADLINE_S)
            assert build["state"] == "committed", build
        eventually(lambda: regular.height() == authorities[0].height(), "the regular node synced", DEADLINE_S)
        yield Devnet(authorities=authorities, regular=regular, small=small, big=big)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver and browser: selenium-manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    print(f"\ndashboard screenshots: {ARTIFACTS}")
    return ARTIFACTS


def screenshot(driver: webdriver.Chrome, folder: Path, name: str) -> None:
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1360, max(900, min(height + 40, 4000)))
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(1360, 900)


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(driver: webdriver.Chrome, condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            value = condition()
        except (StaleElementReferenceException, NoSuchElementException, JavascriptException):
            value = None  # the page redrew under us; ask again
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {DEADLINE_S:g} s: {what}"
        time.sleep(0.2)


def texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#nav a"), f"{url} loaded")


def test_every_page_renders_live_data(devnet: Devnet, browser: webdriver.Chrome, shots: Path) -> None:
    a = devnet.authorities[0]
    status = a.get("/api/v1/status")
    open_page(browser, a.url + "/")
    wait_for(browser, lambda: status["peer_id"] in browser.page_source, "the overview shows the peer id")
    height = str(a.height())
    wait_for(browser, lambda: browser.find_element(By.ID, "overview-height").text == height, "log height")
    assert " ".join(browser.find_element(By.ID, "identity").text.split()).startswith("authority 12D3KooW")
    assert not browser.find_element(By.ID, "banner").is_displayed()
    screenshot(browser, shots, "overview")

    browser.get(a.url + "/#/peers")
    peer_ids = {p["peer_id"] for p in a.get("/api/v1/peers")["peers"]}  # type: ignore[union-attr]
    assert len(peer_ids) == 2
    rows = wait_for(
        browser, lambda: len(texts(browser, "tr.peer-row")) == 2 and texts(browser, "tr.peer-row"), "peers"
    )
    assert all("direct" in row and "pyrsia/" in row for row in rows), rows
    # RTTs come from the connections' keep-alive pings; the page shows them once measured.
    wait_for(browser, lambda: all(" ms" in row for row in texts(browser, "tr.peer-row")), "RTTs shown")
    shown = {e.get_attribute("title") for e in browser.find_elements(By.CSS_SELECTOR, "tr.peer-row code")}
    assert peer_ids <= shown
    screenshot(browser, shots, "peers")

    browser.get(a.url + "/#/builds")
    builds = {b["target"]: b for b in a.get("/api/v1/builds")["builds"]}  # type: ignore[union-attr]
    assert set(builds) == {devnet.small.reference, devnet.big.reference, MAVEN_TARGET}
    cards = wait_for(
        browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "section.build")) == 3, "builds"
    )
    assert cards
    verdicts = texts(browser, "tr.verdict-row")
    authorities = {m.peer_id for m in devnet.authorities}
    assert sum("endorsed" in v for v in verdicts) >= 2, verdicts  # both authorities, per build
    reported = {v["authority"] for b in builds.values() for v in b["verdicts"]}  # type: ignore[union-attr]
    assert reported == authorities
    assert "committed" in browser.find_element(By.CSS_SELECTOR, "section.build h2").text
    screenshot(browser, shots, "builds")

    browser.get(a.url + "/#/traffic")
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "path.series"), "the chart has lines")
    totals = {
        e.get_attribute("data-series"): e.text
        for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-series]")
    }
    assert "received.upstream" in totals and "MiB" in totals["received.upstream"], totals
    screenshot(browser, shots, "traffic")
    assert console_errors(browser) == []


def search(driver: webdriver.Chrome, field: str, value: str) -> list[str]:
    """Searches through the form; the digests of the rows found."""
    driver.find_element(By.CSS_SELECTOR, f"#search-field option[value='{field}']").click()
    box = driver.find_element(By.ID, "search-text")
    box.clear()
    box.send_keys(value)
    driver.find_element(By.ID, "search-go").click()
    wait_for(driver, lambda: f"{field}=" in driver.current_url, "the search is in the address")
    wait_for(
        driver,
        lambda: (
            driver.find_element(By.ID, "search-results").get_attribute("data-for")
            == driver.execute_script("return location.hash")
        ),
        "the results of this search",
    )
    return [
        e.get_attribute("title")
        for e in driver.find_elements(By.CSS_SELECTOR, "tr.record-row a.record-link code")
    ]


def test_the_browser_checks_that_the_log_only_grows(devnet: Devnet, browser: webdriver.Chrome) -> None:
    """The overview keeps the first signed checkpoint it saw and proves each later one extends it."""
    a = devnet.authorities[0]
    open_page(browser, a.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()

    def witness() -> tuple[str, str]:
        element = browser.find_element(By.ID, "witness")
        return element.get_attribute("data-state") or "", element.text

    start = a.get("/api/v1/log")["size"]
    wait_for(
        browser, lambda: witness() == ("ok", f"✓ checked here watching from {start} entries"), "watching"
    )
    build = a.finished_build(a.build("maven", "com.example:lib-b:1.0"), DEADLINE_S)
    assert build["state"] == "committed", build
    grown = a.get("/api/v1/log")["size"]
    assert isinstance(grown, int) and isinstance(start, int) and grown > start
    wait_for(
        browser, lambda: f"grew from {start} to {grown} entries" in witness()[1], "the growth was proven"
    )
    assert witness()[0] == "ok"

    # What the tab kept is its own: a node that answered with a shorter or another log is caught.
    kept = json.loads(browser.execute_script("return sessionStorage.getItem('pyrsia.witness')"))
    for lie, expected in (
        ({**kept, "size": grown + 5}, f"the log shrank from {grown + 5} to {grown} entries"),
        ({**kept, "root": base64.b64encode(bytes(32)).decode()}, f"another tree of {grown} entries"),
        ({**kept, "size": grown - 1}, "does not extend"),
    ):
        browser.execute_script("sessionStorage.setItem('pyrsia.witness', arguments[0])", json.dumps(lie))
        browser.refresh()
        wait_for(browser, lambda expected=expected: expected in witness()[1], expected)
        assert witness()[0] == "bad"
    browser.execute_script("sessionStorage.clear()")
    assert console_errors(browser) == []


def test_search_finds_records_by_each_field(devnet: Devnet, browser: webdriver.Chrome, shots: Path) -> None:
    a = devnet.authorities[0]
    records = a.get("/api/v1/log/search", package=devnet.small.name)["results"]
    assert isinstance(records, list) and records
    with_author = next(r for r in records if r["author"])
    maven = a.get("/api/v1/log/search", package=MAVEN_TARGET)["results"]
    assert isinstance(maven, list)
    with_deps = next(r for r in maven if r["dependencies"])
    open_page(browser, a.url + "/#/log")
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "tr.record-row"), "the newest records")

    found = search(browser, "package", devnet.small.name)
    assert set(found) == {r["digest"] for r in records}
    screenshot(browser, shots, "log-search-package")
    assert with_author["digest"] in search(browser, "author", with_author["author"])
    assert search(browser, "digest", with_author["digest"]) == [with_author["digest"]]
    assert with_deps["digest"] in search(browser, "depends_on", with_deps["dependencies"][0])
    assert search(browser, "package", "library/nothing-like-this") == []
    assert browser.find_element(By.CSS_SELECTOR, "#search-results .empty").text == "No record matches."
    assert console_errors(browser) == []


def test_a_record_proof_verifies_in_the_browser(
    devnet: Devnet, browser: webdriver.Chrome, shots: Path
) -> None:
    a = devnet.authorities[0]
    open_page(browser, a.url + f"/#/log?package={devnet.big.name}")
    link = wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "a.proof-link"), "proof links")[0]
    link.click()
    verdict = wait_for(
        browser,
        lambda: browser.find_element(By.ID, "proof-verdict").get_attribute("data-result"),
        "the proof was checked",
    )
    steps = texts(browser, "#proof-steps li")
    assert verdict == "verified", steps
    assert len(steps) == 4 and all(s.startswith("✓") for s in steps), steps
    assert "2 of 2 authorities signed" in steps[3]
    screenshot(browser, shots, "record-proof")

    # The same proof with one thing changed must not verify.
    digest = browser.current_url.rpartition("/")[2]
    proof = a.get(f"/api/v1/log/proof/{digest}")
    authorities = sorted(m.peer_id for m in devnet.authorities)
    variants = {name: tampered(proof, name) for name in ("honest", "leaf", "path", "index", "root")}
    outcomes = browser.execute_async_script(
        """
        const [variants, authorities, stranger, done] = arguments;
        import("/static/merkle.js").then(async (m) => {
          const out = {};
          for (const [name, p] of Object.entries(variants)) {
            out[name] = (await m.verifyProof(p, authorities)).ok;
          }
          out.stranger = (await m.verifyProof(variants.honest, [stranger])).ok;
          done(out);
        }, (e) => done({ error: String(e) }));
        """,
        variants,
        authorities,
        peer_id_of(bytes(SigningKey.generate().verify_key)),
    )
    expected = dict.fromkeys(variants, False) | {"honest": True, "stranger": False}
    if proof["tree_size"] == 1:
        expected["index"] = True  # leaf 0 of 1 is the only leaf
    assert outcomes == expected
    assert console_errors(browser) == []

    # A digest the log lacks: the page says so; the browser logs only that 404 itself.
    browser.get(a.url + "/#/record/sha256:" + "0" * 64)
    missing = wait_for(browser, lambda: browser.find_elements(By.ID, "no-record"), "the record is missing")
    assert "no artifact with digest" in missing[0].text
    assert [e["message"] for e in console_errors(browser) if "/api/v1/log/proof/" not in e["message"]] == []


def flip_hex(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


def tampered(proof: dict[str, Any], what: str) -> dict[str, Any]:
    """`proof` with its leaf, one path hash, its index or its checkpoint's root changed."""
    changed = json.loads(json.dumps(proof))
    match what:
        case "leaf":
            changed["record"]["tx_id"] = flip_hex(proof["record"]["tx_id"])
        case "path":
            changed["hashes"] = [flip_hex(h) for h in proof["hashes"]] or ["00" * 32]
        case "index":
            changed["leaf_index"] = (proof["leaf_index"] + 1) % proof["tree_size"]
        case "root":
            origin, size, root, rest = proof["checkpoint"].split("\n", 3)
            other = base64.b64encode(bytes(b ^ 1 for b in base64.b64decode(root))).decode()
            changed["checkpoint"] = "\n".join([origin, size, other, rest])
    return changed


def test_the_javascript_verifier_agrees_with_the_python_tree(
    devnet: Devnet, browser: webdriver.Chrome
) -> None:
    open_page(browser, devnet.authorities[0].url + "/")
    rng = random.Random(21)
    leaves = [rng.randbytes(32) for _ in range(37)]
    tree = Tree(leaves)
    cases = [
        {
            "leaf": leaves[i].hex(),
            "index": i,
            "size": n,
            "proof": [h.hex() for h in tree.inclusion_proof(i, n)],
            "root": tree.root(n).hex(),
        }
        for n in range(1, len(leaves) + 1)
        for i in range(n)
    ]
    keys = [SigningKey(bytes([k + 1]) * 32) for k in range(3)]
    names = [peer_id_of(bytes(k.verify_key)) for k in keys]
    point = checkpoint.Checkpoint(origin="pyrsia.test/log", size=37, root=tree.root())
    note = checkpoint.note(
        point, [(n, checkpoint.sign_body(k, point)) for n, k in zip(names, keys, strict=True)]
    )
    bad_line = note.splitlines()[-1]
    raw = bytearray(base64.b64decode(bad_line.split(" ")[2]))
    raw[10] ^= 1
    forged = note.replace(
        bad_line, " ".join([*bad_line.split(" ")[:2], base64.b64encode(bytes(raw)).decode()])
    )
    result = browser.execute_async_script(
        """
        const [cases, note, forged, names, done] = arguments;
        import("/static/merkle.js").then(async (m) => {
          let agree = 0;
          const wrong = [];
          for (const c of cases) {
            const leaf = await m.leafHash(m.hexToBytes(c.leaf));
            const root = await m.rootFromInclusion(leaf, c.index, c.size, c.proof.map(m.hexToBytes));
            if (m.bytesToHex(root) === c.root) agree++; else wrong.push([c.index, c.size]);
          }
          const signed = (await m.verifyNoteSignatures(note, names)).signed;
          const partial = (await m.verifyNoteSignatures(note, [names[1]])).signed;
          let forgedError = "";
          try { await m.verifyNoteSignatures(forged, names); } catch (e) { forgedError = e.message; }
          const body = m.parseCheckpoint((await m.verifyNoteSignatures(note, names)).body);
          done({ agree, wrong, signed, partial, forgedError, size: body.size, root: m.bytesToHex(body.root),
                 ed25519: await m.ed25519Supported() });
        }, (e) => done({ error: String(e) }));
        """,
        cases,
        note,
        forged,
        names,
    )
    assert result["ed25519"] is True, "this Chromium's WebCrypto has no Ed25519"
    assert result["wrong"] == [] and result["agree"] == len(cases)
    assert result["signed"] == names and result["partial"] == [names[1]]
    assert names[2] in result["forgedError"]
    assert result["size"] == 37 and result["root"] == tree.root().hex()
    assert console_errors(browser) == []

    # Consistency proofs between every pair of sizes, and each one spoiled in one hash.
    consistency = [
        {"old": m, "size": n, "old_root": tree.root(m).hex(), "root": tree.root(n).hex(),
         "proof": [h.hex() for h in tree.consistency_proof(m, n)]}
        for n in range(1, 21)
        for m in range(1, n + 1)
    ]  # fmt: skip
    checked = browser.execute_async_script(
        """
        const [cases, done] = arguments;
        import("/static/merkle.js").then(async (m) => {
          const flip = (hex) => (hex[0] === "0" ? "1" : "0") + hex.slice(1);
          const run = async (c, proof, oldRoot) => {
            try {
              await m.verifyConsistency(c.old, c.size, m.hexToBytes(oldRoot), m.hexToBytes(c.root),
                                        proof.map(m.hexToBytes));
              return true;
            } catch (e) { return false; }
          };
          const honest = [], spoiled = [];
          for (const c of cases) {
            honest.push(await run(c, c.proof, c.old_root));
            spoiled.push(c.proof.length ? await run(c, [flip(c.proof[0]), ...c.proof.slice(1)], c.old_root)
                                        : await run(c, c.proof, flip(c.old_root)));
          }
          done({ honest, spoiled });
        }, (e) => done({ error: String(e) }));
        """,
        consistency,
    )
    assert checked["honest"] == [True] * len(consistency)
    assert checked["spoiled"] == [False] * len(consistency)
    assert console_errors(browser) == []


def test_a_pull_in_progress_shows_progress(devnet: Devnet, browser: webdriver.Chrome, shots: Path) -> None:
    b = devnet.regular
    layer = devnet.big.layers_of(devnet.big.top)[0]
    open_page(browser, b.url + "/#/transfers")
    wait_for(browser, lambda: browser.find_elements(By.ID, "no-transfers"), "an empty transfers page")
    pulled: dict[str, bytes] = {}

    def pull() -> None:
        response = httpx.get(f"{b.url}/v2/{devnet.big.name}/blobs/{layer}", timeout=DEADLINE_S)
        pulled["status"] = str(response.status_code).encode()
        pulled["body"] = response.content

    thread = threading.Thread(target=pull, daemon=True)
    thread.start()
    seen: list[float] = []

    def progressed() -> bool:
        bars = browser.find_elements(By.CSS_SELECTOR, f".transfer[data-digest='{layer}'] .bar")
        if bars:
            value = float(bars[0].get_attribute("aria-valuenow") or "0")
            if 0 < value < 100 and (not seen or value > seen[-1]):
                seen.append(value)
                if len(seen) == 1:
                    screenshot(browser, shots, "transfers-in-progress")
        return len(seen) >= 2

    wait_for(browser, progressed, "the pull's progress advanced on the page")
    facts = browser.find_element(By.CSS_SELECTOR, f".transfer[data-digest='{layer}'] .transfer-facts").text
    assert "chunks verified" in facts and ("from 2 peers" in facts or "from 1 peer" in facts), facts
    thread.join(DEADLINE_S)
    assert pulled.get("status") == b"200" and pulled["body"] == devnet.big.blobs[layer]
    wait_for(browser, lambda: browser.find_elements(By.ID, "no-transfers"), "the finished pull left the page")
    assert console_errors(browser) == []


def test_the_pages_need_no_token_and_use_only_open_endpoints(devnet: Devnet) -> None:
    """What the scripts fetch is answered without credentials; the admin endpoints are refused."""
    a = devnet.authorities[0]
    sources = "".join(
        httpx.get(f"{a.url}/static/{n}", timeout=10).text for n in ("app.js", "pages.js", "api.js")
    )
    for path in ("/api/v1/config", "Authorization", "admin"):
        assert path not in sources
    for path in (
        "/api/v1/status",
        "/api/v1/peers",
        "/api/v1/transfers",
        "/api/v1/traffic",
        "/api/v1/builds",
        "/api/v1/authorities",
        "/api/v1/log",
    ):
        assert path in sources
        assert httpx.get(a.url + path, timeout=10).status_code == 200
    assert httpx.get(a.url + "/api/v1/config", timeout=10).status_code == 401
    transfers = httpx.get(a.url + "/api/v1/transfers", timeout=10).json()["transfers"]
    exchange = a.get("/api/v1/status")["exchange"]
    assert isinstance(exchange, dict)
    assert transfers == [] and exchange["transfers"] == []
    assert json.loads(httpx.get(a.url + "/api/v1/traffic", timeout=10).text)["samples"]


def test_a_pull_from_an_upstream_shows_progress(
    browser: webdriver.Chrome, shots: Path, tmp_path: Path
) -> None:
    """A node of its own, behind an upstream that drips a layer: the page shows the bytes grow."""
    image = images.large("library/slow", "1.0", 6000)
    layer = image.layers_of(image.top)[0]
    with ScriptedUpstream() as upstream:
        upstream.serve_image(image)
        upstream.route(f"/v2/{image.name}/blobs/{layer}", Reply(body=image.blobs[layer], drip_s=0.002))
        flags = ("--docker-upstream", upstream.url, "--upstream-rate-min", "0")
        with NodeProcess(tmp_path / "node", *flags) as node:
            accept = {"Accept": images.DOCKER_MANIFEST}
            manifest = httpx.get(
                f"{node.url}/v2/{image.name}/manifests/{image.tag}", headers=accept, timeout=60
            )
            assert manifest.status_code == 200
            open_page(browser, node.url + "/#/transfers")
            pulled: list[httpx.Response] = []
            url = f"{node.url}/v2/{image.name}/blobs/{layer}"
            puller = threading.Thread(target=lambda: pulled.append(httpx.get(url, timeout=DEADLINE_S)))
            puller.start()
            seen: list[float] = []
            selector = f".transfer[data-digest='{layer}'][data-source='upstream']"

            def progressed() -> bool:
                bars = browser.find_elements(By.CSS_SELECTOR, f"{selector} .bar")
                if bars:
                    value = float(bars[0].get_attribute("aria-valuenow") or "0")
                    if 0 < value < 100 and (not seen or value > seen[-1]):
                        seen.append(value)
                        if len(seen) == 2:
                            screenshot(browser, shots, "transfers-upstream")
                return len(seen) >= 2

            wait_for(browser, progressed, "the upstream pull's progress advanced on the page")
            facts = browser.find_element(By.CSS_SELECTOR, f"{selector} .transfer-facts").text
            assert f"from upstream {upstream.url.removeprefix('http://')}" in facts, facts
            puller.join(DEADLINE_S)
            assert pulled and pulled[0].content == image.blobs[layer]
            wait_for(browser, lambda: browser.find_elements(By.ID, "no-transfers"), "the pull left the page")
            errors = console_errors(browser)
            browser.get("about:blank")  # the page stops polling before its node stops
    assert errors == []
