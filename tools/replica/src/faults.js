// Fault injection configured by a spec (POST /admin/faults): each rule
// matches requests by endpoint, method and canister, skips the first `after`
// matches, then applies its fault `times` times (0 = for ever).
//   kind "reject"  - a certified reject with rule.code (IC0xxx)
//   kind "http503" - HTTP 503 Service Unavailable, text/plain
//   kind "hang"    - accept the request and never answer
//   kind "drop"    - close the connection without an answer
const KINDS = new Set(['reject', 'http503', 'hang', 'drop']);

export class Faults {
  constructor() { this.rules = []; }

  set(rules) {
    for (const r of rules) {
      if (!KINDS.has(r.kind)) throw new Error(`fault: unknown kind ${r.kind}`);
      if (r.kind === 'reject' && !/^IC0\d{3}$/.test(r.code || '')) throw new Error('fault: reject needs code IC0xxx');
    }
    this.rules = rules.map((r) => ({ after: 0, times: 1, ...r, seen: 0, applied: 0 }));
  }

  // The fault to apply to a request {endpoint, method, canister}, or null.
  // A rule naming a method never matches requests without one (read_state).
  match(req) {
    for (const r of this.rules) {
      if (r.endpoint && r.endpoint !== '*' && r.endpoint !== req.endpoint) continue;
      if (r.method && r.method !== req.method) continue;
      if (r.canister && r.canister !== req.canister) continue;
      r.seen += 1;
      if (r.seen <= r.after) continue;
      if (r.times !== 0 && r.applied >= r.times) continue;
      r.applied += 1;
      return r;
    }
    return null;
  }

  describe() { return this.rules.map(({ seen, applied, ...r }) => ({ ...r, seen, applied })); }
}
