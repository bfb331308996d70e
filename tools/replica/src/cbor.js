// A small CBOR (RFC 8949) codec: just what the IC HTTP interface uses.
// Envelopes from icp are decoded; responses and certificates are encoded.
// Byte strings are Uint8Array, integers beyond 2^53 are BigInt, maps with
// text keys become plain objects (the IC uses no other map keys).

const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true });

export const SELF_DESCRIBE_TAG = 55799;

export class Tagged {
  constructor(tag, value) { this.tag = tag; this.value = value; }
}

function head(out, major, n) {
  const m = major << 5;
  if (typeof n === 'bigint') {
    if (n < 0n) throw new Error('cbor: negative length');
    if (n < 24n) { out.push(m | Number(n)); return; }
    if (n <= 0xffffffffn) { head(out, major, Number(n)); return; }
    out.push(m | 27);
    for (let i = 7; i >= 0; i--) out.push(Number((n >> BigInt(i * 8)) & 0xffn));
    return;
  }
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`cbor: bad integer ${n}`);
  if (n < 24) out.push(m | n);
  else if (n < 0x100) out.push(m | 24, n);
  else if (n < 0x10000) out.push(m | 25, n >> 8, n & 0xff);
  else if (n < 0x100000000) out.push(m | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  else head(out, major, BigInt(n));
}

function enc(out, v) {
  if (v instanceof Tagged) { head(out, 6, v.tag); enc(out, v.value); return; }
  if (v === null || v === undefined) { out.push(0xf6); return; }
  if (v === true) { out.push(0xf5); return; }
  if (v === false) { out.push(0xf4); return; }
  if (typeof v === 'number' || typeof v === 'bigint') {
    if (v < 0) { head(out, 1, typeof v === 'bigint' ? -1n - v : -1 - v); return; }
    head(out, 0, v);
    return;
  }
  if (typeof v === 'string') { const b = te.encode(v); head(out, 3, b.length); for (const x of b) out.push(x); return; }
  if (v instanceof Uint8Array) { head(out, 2, v.length); for (const x of v) out.push(x); return; }
  if (Array.isArray(v)) { head(out, 4, v.length); for (const x of v) enc(out, x); return; }
  if (typeof v === 'object') {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    head(out, 5, keys.length);
    for (const k of keys) { enc(out, k); enc(out, v[k]); }
    return;
  }
  throw new Error(`cbor: cannot encode ${typeof v}`);
}

export function encode(v) {
  const out = [];
  enc(out, v);
  return Uint8Array.from(out);
}

// Encodes with the self-describe tag, as the replica does for certificates
// and HTTP bodies.
export function encodeTagged(v) {
  return encode(new Tagged(SELF_DESCRIBE_TAG, v));
}

export function decode(bytes) {
  let p = 0;
  const need = (n) => { if (p + n > bytes.length) throw new Error('cbor: truncated'); };
  const arg = (info) => {
    if (info < 24) return info;
    if (info === 24) { need(1); return bytes[p++]; }
    if (info === 25) { need(2); const v = (bytes[p] << 8) | bytes[p + 1]; p += 2; return v; }
    if (info === 26) { need(4); const v = ((bytes[p] << 24) >>> 0) + (bytes[p + 1] << 16) + (bytes[p + 2] << 8) + bytes[p + 3]; p += 4; return v; }
    if (info === 27) {
      need(8);
      let v = 0n;
      for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(bytes[p + i]);
      p += 8;
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    throw new Error(`cbor: unsupported additional info ${info}`);
  };
  const item = () => {
    need(1);
    const ib = bytes[p++];
    const major = ib >> 5;
    const info = ib & 31;
    if (major === 7) {
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22 || info === 23) return null;
      throw new Error(`cbor: unsupported simple value ${info}`);
    }
    if (info === 31) throw new Error('cbor: indefinite lengths are not supported');
    const n = arg(info);
    switch (major) {
      case 0: return n;
      case 1: return typeof n === 'bigint' ? -1n - n : -1 - n;
      case 2: { need(Number(n)); const b = bytes.slice(p, p + Number(n)); p += Number(n); return b; }
      case 3: { need(Number(n)); const s = td.decode(bytes.subarray(p, p + Number(n))); p += Number(n); return s; }
      case 4: { const a = []; for (let i = 0; i < n; i++) a.push(item()); return a; }
      case 5: {
        const o = {};
        for (let i = 0; i < n; i++) {
          const k = item();
          if (typeof k !== 'string') throw new Error('cbor: only text map keys are supported');
          o[k] = item();
        }
        return o;
      }
      case 6: return item(); // tags (55799 self-describe) carry no meaning here
      default: throw new Error(`cbor: bad major type ${major}`);
    }
  };
  const v = item();
  if (p !== bytes.length) throw new Error('cbor: trailing bytes');
  return v;
}
