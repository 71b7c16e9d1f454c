// The dashboard's pages. Each page is `{title, every_ms, mount(root, params), refresh()}`:
// `mount` builds what stays (forms keep their input), `refresh` redraws the live parts
// and is called again every `every_ms` while the page is shown.

import { ApiError, getJSON } from "./api.js";
import { LABELS, colorOf, legend, ratesOf, trafficChart } from "./chart.js";
import { badge, bytes, card, duration, facts, h, mono, rate, replace, table, when } from "./dom.js";
import { ed25519Supported, verifyProof } from "./merkle.js";
import { witness } from "./witness.js";

const SEARCH_FIELDS = [
  ["package", "Package"],
  ["author", "Author"],
  ["digest", "Digest"],
  ["depends_on", "Dependency"],
];
const STATE_KIND = {
  committed: "ok",
  endorsed: "ok",
  running: "busy",
  pending: "busy",
  refused: "bad",
  failed: "bad",
  unreachable: "bad",
};

function stateBadge(state) {
  return badge(state, STATE_KIND[state] ?? "");
}

// Paths that repeat a digest show it shortened; the title keeps the whole path.
function shortDigests(path) {
  return path.replace(/sha256:([0-9a-f]{12})[0-9a-f]{40}([0-9a-f]{12})/, "sha256:$1…$2");
}

function recordLink(digest, text) {
  return h("a", { href: `#/record/${encodeURIComponent(digest)}`, class: "record-link" }, text ?? mono(digest, 12));
}

function searchLink(field, value) {
  return h("a", { href: `#/log?${new URLSearchParams({ [field]: value })}` }, value);
}

function trafficTotals(traffic) {
  const last = traffic.samples?.[traffic.samples.length - 1]?.bytes ?? {};
  const rates = ratesOf(traffic);
  const now = rates[rates.length - 1]?.rates ?? {};
  return table(
    ["", "Counter", "Total", "Now"],
    traffic.series.map((name, index) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = colorOf(name, index);
      return h(
        "tr",
        { "data-series": name },
        h("td", {}, swatch),
        h("td", {}, LABELS[name] ?? name),
        h("td", { class: "num" }, bytes(last[name] ?? 0)),
        h("td", { class: "num" }, rate(now[name] ?? 0)),
      );
    }),
    "No samples yet.",
  );
}

// -- overview -------------------------------------------------------------------------

export const overview = {
  title: "Overview",
  every_ms: 3000,
  mount(root) {
    this.root = root;
    replace(root, h("p", { class: "empty" }, "Loading…"));
  },
  async refresh() {
    const [status, tip, traffic] = await Promise.all([
      getJSON("/api/v1/status"),
      getJSON("/api/v1/log/blocks/latest"),
      getJSON("/api/v1/traffic"),
    ]);
    const p2p = status.p2p ?? {};
    const watched = await witness(p2p.authorities ?? []);
    const exchange = status.exchange ?? {};
    const sources = exchange.bytes_by_source ?? {};
    replace(
      this.root,
      h(
        "div",
        { class: "grid" },
        card(
          "Node",
          facts([
            ["Peer id", mono(status.peer_id)],
            ["Version", status.version],
            ["Up for", duration(status.uptime_seconds)],
            ["Role", p2p.authority ? badge("authority", "ok") : badge("regular node")],
            ["Docker upstream", mono(status.upstreams?.docker ?? "")],
            ["Maven upstream", mono(status.upstreams?.maven ?? "")],
          ]),
        ),
        card(
          "Network",
          facts([
            ["Peers", h("a", { href: "#/peers", id: "overview-peers" }, String(p2p.peers ?? 0))],
            ["Reachability", p2p.reachability ?? "–"],
            ["DHT peers", String(p2p.dht_peers ?? 0)],
            ["Relay reservations", String(p2p.relay?.reservations_held ?? 0)],
            ["Authorities", String((p2p.authorities ?? []).length)],
          ]),
        ),
        card(
          "Transparency log",
          facts([
            ["Height", h("span", { id: "overview-height" }, String(status.translog?.height ?? "–"))],
            ["Records", String(status.translog?.size ?? "–")],
            ["Best known height", String(p2p.best_known_height ?? "–")],
            ["Origin", mono(status.translog?.origin ?? "")],
            ["Latest block", mono(tip.hash, 10)],
            ["Committed", when(tip.time)],
            ["Signed by", `${tip.certificate.length} authorit${tip.certificate.length === 1 ? "y" : "ies"}`],
            [
              "Append-only",
              h(
                "span",
                { id: "witness", "data-state": watched.state },
                badge(watched.state === "ok" ? "✓ checked here" : watched.state === "bad" ? "✗ broken" : "not checked", watched.state === "ok" ? "ok" : watched.state === "bad" ? "bad" : "busy"),
                " ",
                watched.text,
              ),
            ],
          ]),
        ),
        card(
          "Storage and exchange",
          facts([
            ["Blobs stored", `${status.blobs_stored} (${bytes(status.blob_bytes)})`],
            ["From upstream", bytes(sources.upstream ?? 0)],
            ["From peers", bytes(sources.peer ?? 0)],
            ["From local store", bytes(sources.local ?? 0)],
            ["Downloads from peers now", h("a", { href: "#/transfers" }, String((exchange.transfers ?? []).length))],
            ["Serving peers now", String(exchange.serving_peers ?? 0)],
          ]),
        ),
      ),
      card("Traffic", trafficChart(traffic, traffic.series), legend(traffic.series)),
    );
  },
};

// -- peers ------------------------------------------------------------------------------

export const peers = {
  title: "Peers",
  every_ms: 3000,
  mount(root) {
    this.root = root;
    replace(root, h("p", { class: "empty" }, "Loading…"));
  },
  async refresh() {
    const { peers: list } = await getJSON("/api/v1/peers");
    const rows = list.map((p) =>
      h(
        "tr",
        { class: "peer-row" },
        h("td", {}, mono(p.peer_id, 10)),
        h("td", {}, p.relayed ? badge("relayed", "busy") : badge("direct", "ok"), " ", badge(p.direction)),
        h("td", {}, mono(p.address)),
        h("td", { class: "num" }, p.rtt_ms === null ? "–" : `${p.rtt_ms.toFixed(1)} ms`),
        h("td", { class: "num" }, bytes(p.bytes_in)),
        h("td", { class: "num" }, bytes(p.bytes_out)),
        h("td", { class: "num" }, p.height ?? "–"),
        h("td", { class: "agent" }, p.agent || "–"),
      ),
    );
    replace(
      this.root,
      card(
        `Connected peers (${list.length})`,
        table(["Peer id", "Connection", "Address", "RTT", "Received", "Sent", "Height", "Agent"], rows, "No peers connected."),
      ),
    );
  },
};

// -- the transparency log ------------------------------------------------------------------

export const log = {
  title: "Transparency log",
  every_ms: 0,
  mount(root, params) {
    this.root = root;
    const field = SEARCH_FIELDS.find(([name]) => params.get(name)) ?? SEARCH_FIELDS[0];
    const select = h("select", { id: "search-field", "aria-label": "Search by" }, SEARCH_FIELDS.map(([name, label]) => h("option", { value: name, selected: name === field[0] }, label)));
    const input = h("input", {
      id: "search-text",
      type: "search",
      placeholder: "library/alpine, com.example:hello, sha256:…",
      value: params.get(field[0]) ?? "",
      autocomplete: "off",
      spellcheck: "false",
    });
    const kind = h("select", { id: "search-type", "aria-label": "Package type" }, [["", "any type"], ["docker", "docker"], ["maven", "maven"]].map(([value, label]) => h("option", { value, selected: params.get("type") === value }, label)));
    const form = h(
      "form",
      {
        class: "search",
        onsubmit: (event) => {
          event.preventDefault();
          const query = new URLSearchParams();
          if (input.value.trim()) query.set(select.value, input.value.trim());
          if (kind.value) query.set("type", kind.value);
          location.hash = `#/log?${query}`;
        },
      },
      select,
      input,
      kind,
      h("button", { type: "submit", id: "search-go" }, "Search"),
    );
    this.results = h("div", { id: "search-results" }, h("p", { class: "empty" }, "Searching…"));
    this.head = h("div", { class: "log-head" });
    replace(root, card("Search the log", form, this.head, this.results));
    return this.search(params, location.hash);
  },
  async search(params, hash) {
    const query = new URLSearchParams();
    for (const [name] of SEARCH_FIELDS) if (params.get(name)) query.set(name, params.get(name));
    if (params.get("type")) query.set("type", params.get("type"));
    query.set("limit", "200");
    const [head, found] = await Promise.all([getJSON("/api/v1/log"), getJSON(`/api/v1/log/search?${query}`)]);
    replace(
      this.head,
      `Height ${head.height} · ${head.size} record${head.size === 1 ? "" : "s"} · origin `,
      mono(head.origin),
      ` · ${head.authorities.length} authorit${head.authorities.length === 1 ? "y" : "ies"}`,
    );
    const filtered = [...query.keys()].some((k) => k !== "limit");
    const rows = found.results.map((r) =>
      h(
        "tr",
        { class: "record-row" },
        h("td", {}, searchLink("package", r.package_id)),
        h("td", {}, mono(r.path, 0, shortDigests)),
        h("td", {}, recordLink(r.digest)),
        h("td", { class: "num" }, bytes(r.size)),
        h("td", {}, r.author ? searchLink("author", r.author) : "–"),
        h("td", { class: "num" }, r.height),
        h("td", {}, when(r.time)),
        h("td", {}, h("a", { href: `#/record/${encodeURIComponent(r.digest)}`, class: "button small proof-link" }, "Proof")),
      ),
    );
    replace(
      this.results,
      h("p", { class: "muted", id: "search-count" }, filtered ? `${found.count} matching record${found.count === 1 ? "" : "s"}` : `The ${found.count} newest records`),
      table(["Package", "Path", "Digest", "Size", "Author", "Height", "Committed", ""], rows, "No record matches."),
    );
    this.results.dataset.for = hash; // which search these results answer

  },
  async refresh() {},
};

// -- one record and its inclusion proof -------------------------------------------------------

export const record = {
  title: "Record",
  every_ms: 0,
  mount(root, params, arg) {
    this.root = root;
    this.digest = arg;
    replace(root, h("p", { class: "empty" }, "Loading…"));
    return this.load();
  },
  async load() {
    let proof, head;
    try {
      [proof, head] = await Promise.all([
        getJSON(`/api/v1/log/proof/${encodeURIComponent(this.digest)}`),
        getJSON("/api/v1/log"),
      ]);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      replace(
        this.root,
        h("p", {}, h("a", { href: "#/log" }, "← Back to the log")),
        card("No such record", h("p", { class: "empty", id: "no-record" }, error.message)),
      );
      return;
    }
    const r = proof.record;
    const verdict = h("div", { id: "proof-verdict", class: "verdict busy" }, "Verifying in this browser…");
    const steps = h("ol", { class: "steps", id: "proof-steps" });
    replace(
      this.root,
      h("p", {}, h("a", { href: "#/log" }, "← Back to the log")),
      card(
        r.package_id,
        facts([
          ["Package", searchLink("package", r.package_id)],
          ["Type", r.package_type],
          ["Path", mono(r.path)],
          ["Digest", mono(r.digest)],
          ["Size", `${bytes(r.size)} (${r.size} bytes)`],
          ["Media type", r.media_type || "–"],
          ["Source", mono(r.source)],
          ["Author", r.author ? searchLink("author", r.author) : "–"],
          ["Dependencies", r.dependencies.length ? h("ul", { class: "plain" }, r.dependencies.map((d) => h("li", {}, searchLink("depends_on", d)))) : "none"],
          ["Transaction", mono(r.tx_id)],
          ["Submitter", mono(r.submitter)],
          ["Block height", String(r.height)],
          ["Leaf", `${r.leaf} of ${proof.tree_size}`],
          ["Committed", when(r.time)],
          ["Chunk root", mono(r.chunk_root, 12)],
        ]),
      ),
      card(
        "Inclusion proof",
        verdict,
        steps,
        h("details", {}, h("summary", {}, "Checkpoint (C2SP signed note)"), h("pre", { class: "note" }, proof.checkpoint)),
        h("details", {}, h("summary", {}, `Audit path (${proof.hashes.length} hashes)`), h("pre", { class: "note" }, proof.hashes.join("\n") || "(none: the tree has one leaf)")),
      ),
    );
    const result = await verifyProof(proof, head.authorities);
    replace(
      steps,
      result.steps.map((s) => h("li", { class: s.ok ? "ok" : "bad" }, h("strong", {}, `${s.ok ? "✓" : "✗"} ${s.name}: `), s.detail)),
    );
    verdict.className = `verdict ${result.ok ? "ok" : "bad"}`;
    verdict.dataset.result = result.ok ? "verified" : result.signatureCheck === "unsupported" ? "unsupported" : "failed";
    if (result.ok) {
      replace(verdict, `✓ Verified in this browser: leaf ${proof.leaf_index} is in the tree of ${proof.tree_size} that ${result.signed.length} authorit${result.signed.length === 1 ? "y" : "ies"} signed.`);
    } else if (result.signatureCheck === "unsupported") {
      replace(verdict, "The Merkle path was checked, but this browser cannot verify Ed25519 signatures, so the checkpoint is not verified.");
    } else {
      replace(verdict, "✗ The proof does not verify: see the failed step below.");
    }
  },
  async refresh() {},
};

// -- transfers in progress ---------------------------------------------------------------------

export const transfers = {
  title: "Transfers",
  every_ms: 1000,
  mount(root) {
    this.root = root;
    this.seen = new Map();
    replace(root, h("p", { class: "empty" }, "Loading…"));
  },
  async refresh() {
    const { transfers: list } = await getJSON("/api/v1/transfers");
    const now = performance.now() / 1000;
    const seen = new Map();
    const rows = list.map((t) => {
      const fromPeers = t.source === "peers";
      const done = fromPeers ? t.verified_bytes : t.written_bytes;
      const id = `${t.source} ${t.digest ?? t.upstream}`;
      const before = this.seen.get(id);
      const speed = before && now > before.at ? Math.max(0, (done - before.bytes) / (now - before.at)) : null;
      const smoothed = speed === null ? before?.speed ?? null : before?.speed ? 0.6 * before.speed + 0.4 * speed : speed;
      seen.set(id, { at: now, bytes: done, speed: smoothed });
      const known = typeof t.size === "number" && t.size > 0;
      const pct = fromPeers ? (t.chunks ? (100 * t.verified_chunks) / t.chunks : 100) : known ? Math.min(100, (100 * done) / t.size) : null;
      const bar = h("div", { class: pct === null ? "bar-fill unknown" : "bar-fill" });
      bar.style.width = pct === null ? "100%" : `${pct.toFixed(1)}%`;
      const left = known ? t.size - done : null;
      const facts = fromPeers
        ? `${bytes(done)} of ${bytes(t.size)} · ${t.verified_chunks} of ${t.chunks} chunks verified`
        : `${bytes(done)}${known ? ` of ${bytes(t.size)}` : ""} received, checked against the digest at the end`;
      const origin = fromPeers ? `from ${t.providers.length} peer${t.providers.length === 1 ? "" : "s"}` : `from upstream ${t.upstream}`;
      return h(
        "div",
        { class: "transfer", "data-digest": t.digest ?? "", "data-source": t.source },
        h("div", { class: "transfer-head" }, mono(t.digest ?? "(a file asked for by path)", 16), h("span", { class: "pct" }, pct === null ? "" : `${pct.toFixed(1)} %`)),
        h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct === null ? null : pct.toFixed(1) }, bar),
        h(
          "div",
          { class: "transfer-facts muted" },
          `${facts} · `,
          smoothed ? `${rate(smoothed)}${left !== null ? ` · ${duration(left / smoothed)} left` : ""} · ` : "",
          origin,
        ),
      );
    });
    this.seen = seen;
    replace(
      this.root,
      card(
        `Downloads in progress (${list.length})`,
        rows.length ? h("div", { class: "transfers" }, rows) : h("p", { class: "empty", id: "no-transfers" }, "No download in progress. A pull that fetches blobs from peers or an upstream shows here as it goes."),
      ),
    );
  },
};

// -- builds and authorities ----------------------------------------------------------------------

export const builds = {
  title: "Builds",
  every_ms: 3000,
  mount(root) {
    this.root = root;
    replace(root, h("p", { class: "empty" }, "Loading…"));
  },
  async refresh() {
    const [{ builds: list }, auth] = await Promise.all([getJSON("/api/v1/builds"), getJSON("/api/v1/authorities")]);
    const verdictTable = (b) =>
      table(
        ["Authority", "Verdict", "Reason"],
        b.verdicts.map((v) =>
          h("tr", { class: "verdict-row" }, h("td", {}, mono(v.authority, 10)), h("td", {}, stateBadge(v.verdict)), h("td", {}, v.reason || "–")),
        ),
        "No verdict yet.",
      );
    const txTable = (b) =>
      table(
        ["Path", "Digest", "State"],
        b.transactions.map((t) =>
          h("tr", {}, h("td", {}, mono(t.path, 0, shortDigests)), h("td", {}, recordLink(t.digest)), h("td", {}, stateBadge(t.state))),
        ),
        "None yet.",
      );
    const meta = (b) =>
      h(
        "ul",
        { class: "meta" },
        [
          ["kind", b.kind],
          ["build", mono(b.id)],
          ["through", b.via],
          ["started", when(b.started_at)],
          ["finished", b.finished_at ? when(b.finished_at) : "–"],
          ["height", String(b.height ?? "–")],
        ].map(([name, value]) => h("li", {}, `${name} `, h("strong", {}, value))),
      );
    const buildCards = list
      .slice()
      .sort((a, b) => b.started_at - a.started_at)
      .map((b) =>
        h(
          "section",
          { class: "card build", "data-build": b.id },
          h("h2", {}, mono(b.target), " ", stateBadge(b.state)),
          meta(b),
          b.error ? h("p", { class: "error-text" }, b.error) : null,
          h(
            "div",
            { class: "columns" },
            h("div", {}, h("h3", {}, "Verdicts"), verdictTable(b)),
            h("div", {}, h("h3", {}, `Transactions (${b.transactions.length})`), txTable(b)),
          ),
        ),
      );
    replace(
      this.root,
      card(
        "Authorities",
        facts([
          ["In force", h("ul", { class: "plain" }, auth.authorities.map((a) => h("li", {}, mono(a), a === auth.me ? " (this node)" : "")))],
          ["Quorum", `${auth.quorum} of ${auth.authorities.length}`],
          ["Pending changes", auth.pending.length ? h("ul", { class: "plain" }, auth.pending.map((p) => h("li", {}, `${p.action} `, mono(p.peer_id, 10)))) : "none"],
        ]),
      ),
      buildCards.length ? buildCards : card("Builds", h("p", { class: "empty" }, "No build requested on this node since it started.")),
    );
  },
};

// -- traffic ---------------------------------------------------------------------------------

export const traffic = {
  title: "Traffic",
  every_ms: 2000,
  mount(root) {
    this.root = root;
    replace(root, h("p", { class: "empty" }, "Loading…"));
  },
  async refresh() {
    const doc = await getJSON("/api/v1/traffic");
    const span = doc.samples.length > 1 ? doc.samples[doc.samples.length - 1].at - doc.samples[0].at : 0;
    replace(
      this.root,
      card(
        "Bytes per second",
        h("p", { class: "muted" }, `The counters of /metrics, sampled every ${doc.interval_s} s; the last ${duration(span)} (at most ${doc.samples_max} samples).`),
        trafficChart(doc, doc.series),
        legend(doc.series),
      ),
      card("Totals since the node started", trafficTotals(doc)),
    );
  },
};

export async function browserNotes() {
  return (await ed25519Supported()) ? null : "This browser's WebCrypto has no Ed25519: checkpoint signatures cannot be verified here.";
}
