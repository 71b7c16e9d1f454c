// The transparency log's proofs, checked in the browser with WebCrypto.
//
// Follows pyrsia/translog/merkle.py and checkpoint.py exactly: RFC 6962 hashes
// (leaf = SHA-256(0x00 || tx id), node = SHA-256(0x01 || left || right)), the
// inclusion verifier of RFC 9162 §2.1.3.2, and the C2SP signed note whose signature
// lines carry base64(key hash[4] || Ed25519 signature), the key hash being the first
// four bytes of SHA-256(name || "\n" || 0x01 || public key). Signer names are peer
// ids, so each public key comes from the name itself (identity multihash).
// Nothing here trusts the node: the leaf hash is recomputed from the record's
// transaction id and the root from the proof, then compared with the signed note.

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const DASH = "\u2014";
const PEER_KEY_PREFIX = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
const NOTE_CHARS_MAX = 1024 * 1024;
const SIGNATURES_MAX = 100;

export class ProofError extends Error {}

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || /[^0-9a-f]/.test(hex)) {
    throw new ProofError("not lowercase hex");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export function leafHash(data) {
  return sha256(concat(Uint8Array.of(0), data));
}

export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// RFC 9162 §2.1.3.2: the root that `proof` leads to from leaf `index` of a tree of
// `size`; a malformed proof throws. Sizes are Numbers: a log far below 2^53 leaves.
export async function rootFromInclusion(leaf, index, size, proof) {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) {
    throw new ProofError(`inclusion proof for leaf ${index} of a tree of ${size}`);
  }
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new ProofError("inclusion proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("inclusion proof is too short");
  return r;
}

// RFC 9162 §2.1.4.2: the tree of `size` with `root` extends the one of `oldSize` with
// `oldRoot`; throws ProofError when it does not.
export async function verifyConsistency(oldSize, size, oldRoot, root, proof) {
  if (!(Number.isSafeInteger(oldSize) && Number.isSafeInteger(size) && oldSize >= 0 && oldSize <= size)) {
    throw new ProofError(`consistency from size ${oldSize} to ${size}`);
  }
  if (oldSize === size) {
    if (proof.length || !equal(oldRoot, root)) throw new ProofError("the same size with another root");
    return;
  }
  if (oldSize === 0) {
    if (proof.length) throw new ProofError("consistency from the empty tree takes no hashes");
    return;
  }
  if (!proof.length) throw new ProofError("consistency proof is empty");
  const m = BigInt(oldSize);
  const path = (m & (m - 1n)) === 0n ? [oldRoot, ...proof] : [...proof];
  let fn = m - 1n;
  let sn = BigInt(size - 1);
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new ProofError("consistency proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n || !equal(fr, oldRoot) || !equal(sr, root)) {
    throw new ProofError("the newer tree does not extend the older one");
  }
}

export function base58Decode(text) {
  let n = 0n;
  for (const c of text) {
    const i = B58.indexOf(c);
    if (i < 0) throw new ProofError("not base58btc");
    n = n * 58n + BigInt(i);
  }
  const body = [];
  while (n > 0n) {
    body.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  const zeros = text.length - text.replace(/^1+/, "").length;
  return Uint8Array.from([...new Array(zeros).fill(0), ...body]);
}

// The Ed25519 key an identity-multihash peer id (12D3KooW…) embeds.
export function publicKeyOf(peerId) {
  const raw = base58Decode(peerId);
  if (raw.length !== PEER_KEY_PREFIX.length + 32 || PEER_KEY_PREFIX.some((b, i) => raw[i] !== b)) {
    throw new ProofError(`${peerId.slice(0, 60)} is not an Ed25519 peer id`);
  }
  return raw.slice(PEER_KEY_PREFIX.length);
}

export function b64decode(text) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new ProofError("not base64");
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

export function bytesToBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

// A signed note's body (with its final newline) and its signature lines, syntax only.
export function splitNote(text) {
  if (text.length > NOTE_CHARS_MAX || /[\u0000-\u0009\u000b-\u001f]/.test(text)) {
    throw new ProofError("signed note is too long or has control characters");
  }
  const cut = text.lastIndexOf("\n\n");
  if (cut < 0 || !text.endsWith("\n")) throw new ProofError("signed note has no blank line before its signatures");
  const body = text.slice(0, cut + 1);
  const lines = text.slice(cut + 2, -1).split("\n");
  if (lines.length > SIGNATURES_MAX) throw new ProofError("signed note has too many signatures");
  const signatures = lines.map((line) => {
    const parts = line.split(" ");
    if (parts.length !== 3 || parts[0] !== DASH || !parts[1] || parts[1].includes("+")) {
      throw new ProofError(`malformed signature line ${line.slice(0, 80)}`);
    }
    const raw = b64decode(parts[2]);
    if (raw.length < 5) throw new ProofError(`signature of ${parts[1]} is too short`);
    return { name: parts[1], keyHash: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { body, signatures };
}

// C2SP tlog-checkpoint body: origin, decimal size, base64 root, then extension lines.
export function parseCheckpoint(body) {
  const lines = body.split("\n");
  if (lines.length < 4 || lines[lines.length - 1] !== "" || !lines[0] || !/^(0|[1-9][0-9]{0,19})$/.test(lines[1])) {
    throw new ProofError("malformed checkpoint body");
  }
  const root = b64decode(lines[2]);
  if (root.length !== 32) throw new ProofError(`checkpoint root is ${root.length} bytes, not 32`);
  return { origin: lines[0], size: Number(lines[1]), root };
}

export async function keyHash(name, publicKey) {
  const digest = await sha256(concat(new TextEncoder().encode(name + "\n"), Uint8Array.of(1), publicKey));
  return digest.slice(0, 4);
}

let ed25519Support = null;

// Whether this browser's WebCrypto verifies Ed25519 (Chromium from 137 on does).
export async function ed25519Supported() {
  if (ed25519Support === null) {
    try {
      await crypto.subtle.importKey("raw", new Uint8Array(32), { name: "Ed25519" }, false, ["verify"]);
      ed25519Support = true;
    } catch {
      ed25519Support = false;
    }
  }
  return ed25519Support;
}

async function ed25519Verify(publicKey, signature, message) {
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

// Which `trusted` peer ids signed the note. As the node's own verifier does: lines from
// names not trusted or with another key hash are ignored; a trusted key whose
// signature fails rejects the note. `signed` is null when Ed25519 is unavailable.
export async function verifyNoteSignatures(text, trusted) {
  const { body, signatures } = splitNote(text);
  if (!(await ed25519Supported())) return { body, signed: null, lines: signatures.length };
  const message = new TextEncoder().encode(body);
  const signed = [];
  for (const sig of signatures) {
    if (!trusted.includes(sig.name) || signed.includes(sig.name)) continue;
    const publicKey = publicKeyOf(sig.name);
    if (!equal(sig.keyHash, await keyHash(sig.name, publicKey))) continue;
    if (!(await ed25519Verify(publicKey, sig.signature, message))) {
      throw new ProofError(`the signature of ${sig.name} on the checkpoint does not verify`);
    }
    signed.push(sig.name);
  }
  return { body, signed, lines: signatures.length };
}

export function quorum(count) {
  return Math.floor((count * 2) / 3) + 1;
}

// Checks one `/api/v1/log/proof/<digest>` answer against its checkpoint, signed by
// `authorities`. Returns every step's outcome; `ok` only when all of them held.
export async function verifyProof(proof, authorities) {
  const steps = [];
  const step = (name, ok, detail) => steps.push({ name, ok, detail });
  const result = { ok: false, steps, root: null, signed: null, signatureCheck: "unknown" };
  try {
    const leaf = await leafHash(hexToBytes(proof.record.tx_id));
    const leafOk = equal(leaf, hexToBytes(proof.leaf_hash));
    step("leaf hash", leafOk, `SHA-256(0x00 ‖ tx ${proof.record.tx_id.slice(0, 16)}…) = ${bytesToHex(leaf).slice(0, 16)}…`);
    const hashes = proof.hashes.map(hexToBytes);
    const root = await rootFromInclusion(leaf, proof.leaf_index, proof.tree_size, hashes);
    result.root = bytesToHex(root);
    const { body, signed, lines } = await verifyNoteSignatures(proof.checkpoint, authorities);
    const point = parseCheckpoint(body);
    const rootOk = equal(root, point.root);
    step(
      "root",
      rootOk,
      `${hashes.length} hashes from leaf ${proof.leaf_index} lead to ${bytesToBase64(root)}; the checkpoint says ${bytesToBase64(point.root)}`,
    );
    const sizeOk = point.size === proof.tree_size;
    step("tree size", sizeOk, `proof for a tree of ${proof.tree_size}; checkpoint of ${point.size} (${point.origin})`);
    let signedOk;
    if (signed === null) {
      result.signatureCheck = "unsupported";
      signedOk = false;
      step("signatures", false, `this browser's WebCrypto has no Ed25519: ${lines} signature(s) not checked`);
    } else {
      result.signatureCheck = "checked";
      result.signed = signed;
      signedOk = signed.length > 0;
      const need = quorum(authorities.length);
      step(
        "signatures",
        signedOk,
        `${signed.length} of ${authorities.length} authorities signed the checkpoint (quorum ${need})`,
      );
    }
    result.ok = leafOk && rootOk && sizeOk && signedOk;
  } catch (error) {
    step("proof", false, error instanceof Error ? error.message : String(error));
  }
  return result;
}
