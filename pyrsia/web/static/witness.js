// A witness in the browser: the log may only grow.
//
// The first checkpoint this tab sees (once an authority's signature on it verifies)
// is kept in sessionStorage; every later one must be the same tree or extend it, shown
// by a consistency proof from `/api/v1/log/consistency/<old size>` that is checked
// here (RFC 9162 §2.1.4.2) against the two signed roots. A shrunk log, another root at
// the same size, or a proof that fails is reported and the kept checkpoint is not
// replaced, so the warning stays until the tab is closed.

import { getJSON, getText } from "./api.js";
import { b64decode, bytesToBase64, hexToBytes, parseCheckpoint, verifyConsistency, verifyNoteSignatures } from "./merkle.js";

const KEY = "pyrsia.witness";

function load() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
    if (kept && typeof kept.size === "number" && typeof kept.root === "string" && typeof kept.origin === "string") return kept;
  } catch {
    // nothing usable kept: start again
  }
  return null;
}

async function signedPoint(note, authorities) {
  const { body, signed } = await verifyNoteSignatures(note, authorities);
  if (signed === null) return { unsupported: true };
  if (!signed.length) throw new Error("the checkpoint carries no current authority's signature");
  return { point: parseCheckpoint(body) };
}

// {state: "ok"|"bad"|"unsupported", text}
export async function witness(authorities) {
  try {
    const first = await signedPoint(await getText("/api/v1/log/checkpoint"), authorities);
    if (first.unsupported) return { state: "unsupported", text: "not checked: this browser has no Ed25519" };
    let point = first.point;
    const kept = load();
    if (!kept || kept.origin !== point.origin) {
      sessionStorage.setItem(KEY, JSON.stringify({ origin: point.origin, size: point.size, root: bytesToBase64(point.root), since: point.size }));
      return { state: "ok", text: `watching from ${point.size} entries` };
    }
    const keptRoot = b64decode(kept.root);
    if (point.size < kept.size) return { state: "bad", text: `the log shrank from ${kept.size} to ${point.size} entries` };
    if (point.size > kept.size) {
      const answer = await getJSON(`/api/v1/log/consistency/${kept.size}`);
      const newer = await signedPoint(answer.checkpoint, authorities);
      point = newer.point;
      await verifyConsistency(kept.size, point.size, keptRoot, point.root, answer.hashes.map(hexToBytes));
    } else if (bytesToBase64(point.root) !== kept.root) {
      return { state: "bad", text: `another tree of ${point.size} entries than the one seen before` };
    }
    sessionStorage.setItem(KEY, JSON.stringify({ ...kept, size: point.size, root: bytesToBase64(point.root) }));
    return point.size === kept.since
      ? { state: "ok", text: `watching from ${point.size} entries` }
      : { state: "ok", text: `grew from ${kept.since} to ${point.size} entries, each step proven consistent` };
  } catch (error) {
    return { state: "bad", text: error instanceof Error ? error.message : String(error) };
  }
}
