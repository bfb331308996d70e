// Hashing as the IC HTTP interface defines it: the representation-independent
// hash of a request's content (its request id), LEB128, and domain separators.
import { sha256, sha224 } from '@noble/hashes/sha2.js';

const te = new TextEncoder();

export function concat(...parts) {
  let n = 0;
  for (const x of parts) n += x.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const x of parts) { out.set(x, o); o += x.length; }
  return out;
}

export function utf8(s) { return te.encode(s); }

// A domain separator: one length byte, then the text.
export function domainSep(s) { return concat([s.length], te.encode(s)); }

export function leb128(n) {
  let v = BigInt(n);
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return Uint8Array.from(out);
}

export function hex(b) { return Buffer.from(b).toString('hex'); }
export function unhex(s) { return new Uint8Array(Buffer.from(s, 'hex')); }

export { sha256, sha224 };

// The representation-independent hash (interface spec "Request ids").
export function hashValue(v) {
  if (v instanceof Uint8Array) return sha256(v);
  if (typeof v === 'string') return sha256(te.encode(v));
  if (typeof v === 'number' || typeof v === 'bigint') return sha256(leb128(v));
  if (Array.isArray(v)) return sha256(concat(...v.map(hashValue)));
  if (v && typeof v === 'object') return hashMap(v);
  throw new Error(`hash: cannot hash ${v}`);
}

export function hashMap(obj) {
  const pairs = Object.keys(obj)
    .filter((k) => obj[k] !== undefined && obj[k] !== null)
    .map((k) => concat(sha256(te.encode(k)), hashValue(obj[k])));
  pairs.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return sha256(concat(...pairs));
}

export const requestId = hashMap;
