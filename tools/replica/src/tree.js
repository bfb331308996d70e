// The certified state tree (interface spec "Certification"): nodes, their
// digest, CBOR form, and a builder from a nested description whose labels
// are sorted as the spec requires.
import { sha256, concat, domainSep, utf8 } from './hash.js';

export const empty = () => ({ t: 0 });
export const fork = (l, r) => ({ t: 1, l, r });
export const labeled = (label, sub) => ({ t: 2, label: typeof label === 'string' ? utf8(label) : label, sub });
export const leaf = (v) => ({ t: 3, v: typeof v === 'string' ? utf8(v) : v });

export function digest(n) {
  switch (n.t) {
    case 0: return sha256(domainSep('ic-hashtree-empty'));
    case 1: return sha256(concat(domainSep('ic-hashtree-fork'), digest(n.l), digest(n.r)));
    case 2: return sha256(concat(domainSep('ic-hashtree-labeled'), n.label, digest(n.sub)));
    case 3: return sha256(concat(domainSep('ic-hashtree-leaf'), n.v));
    default: throw new Error('tree: bad node');
  }
}

export function toCbor(n) {
  switch (n.t) {
    case 0: return [0];
    case 1: return [1, toCbor(n.l), toCbor(n.r)];
    case 2: return [2, n.label, toCbor(n.sub)];
    case 3: return [3, n.v];
    default: throw new Error('tree: bad node');
  }
}

// entries: array of [label (string|Uint8Array), value]; a value is a leaf
// (Uint8Array or string) when `leafOf` says so, else a nested entries array.
// Labels are sorted bytewise and the forks are balanced.
export function build(entries) {
  const nodes = entries
    .map(([label, value]) => {
      const l = typeof label === 'string' ? utf8(label) : label;
      const sub = Array.isArray(value) ? build(value) : leaf(value);
      return labeled(l, sub);
    })
    .sort((a, b) => Buffer.compare(Buffer.from(a.label), Buffer.from(b.label)));
  const join = (lo, hi) => {
    if (hi - lo === 0) return empty();
    if (hi - lo === 1) return nodes[lo];
    const mid = lo + Math.ceil((hi - lo) / 2);
    return fork(join(lo, mid), join(mid, hi));
  };
  return join(0, nodes.length);
}
