// The dashboard shell: hash routes (`#/peers`, `#/log?package=…`, `#/record/<digest>`),
// the navigation, the node's identity in the header, and one polling loop that
// refreshes the page shown. A failed refresh keeps the last data on screen and says
// the node cannot be reached; it never throws into the console.

import { getJSON } from "./api.js";
import { h, replace } from "./dom.js";
import * as pages from "./pages.js";

const ROUTES = {
  "": pages.overview,
  peers: pages.peers,
  log: pages.log,
  record: pages.record,
  transfers: pages.transfers,
  builds: pages.builds,
  traffic: pages.traffic,
};
const NAV = [
  ["", "Overview"],
  ["peers", "Peers"],
  ["log", "Log"],
  ["transfers", "Transfers"],
  ["builds", "Builds"],
  ["traffic", "Traffic"],
];

const main = document.getElementById("page");
const nav = document.getElementById("nav");
const banner = document.getElementById("banner");
const identity = document.getElementById("identity");
let current = null;
let timer = null;
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const [name, ...rest] = path.split("/");
  return { name: name in ROUTES ? name : "", arg: decodeURIComponent(rest.join("/")), params: new URLSearchParams(query) };
}

function showError(error) {
  banner.hidden = false;
  replace(banner, error instanceof Error ? error.message : String(error));
}

function clearError() {
  banner.hidden = true;
}

async function guarded(run) {
  try {
    await run();
    clearError();
  } catch (error) {
    showError(error);
  }
}

function drawNav(active) {
  replace(
    nav,
    NAV.map(([name, label]) =>
      h("a", { href: `#/${name}`, class: name === active || (active === "record" && name === "log") ? "active" : "", id: `nav-${name || "overview"}` }, label),
    ),
  );
}

function route() {
  const { name, arg, params } = parseHash();
  const page = ROUTES[name];
  const mine = ++generation;
  clearTimeout(timer);
  drawNav(name);
  current = page;
  document.title = `${page.title} · pyrsia`;
  main.dataset.page = name || "overview";
  guarded(() => page.mount(main, params, arg) ?? Promise.resolve());
  const tick = async () => {
    if (mine !== generation) return;
    await guarded(() => page.refresh());
    if (mine === generation && page.every_ms > 0) timer = setTimeout(tick, page.every_ms);
  };
  tick();
}

async function loadIdentity() {
  try {
    const status = await getJSON("/api/v1/status");
    const role = status.p2p?.authority ? "authority" : "node";
    replace(identity, h("span", { class: "dot" }), `${role} `, h("code", { class: "mono", title: status.peer_id }, `${status.peer_id.slice(0, 12)}…${status.peer_id.slice(-6)}`));
  } catch (error) {
    showError(error);
  }
  const note = await pages.browserNotes();
  if (note) document.getElementById("browser-note").textContent = note;
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  showError(event.reason);
});
loadIdentity();
route();
