// The canisters the replica hosts: a Canic-shaped fleet (a root and its
// members) built from a description, each with a module, a heap, a stable
// memory, a chunk store and its snapshots, all held in memory.
import { Principal } from '@dfinity/principal';
import { sha256, concat, hex, utf8 } from './hash.js';

// Canister ids as on the IC: 8-byte big-endian counter ‖ 0x01 0x01.
export function canisterIdBytes(n) {
  const b = new Uint8Array(10);
  let v = BigInt(n);
  for (let i = 7; i >= 0; i--) { b[i] = Number(v & 0xffn); v >>= 8n; }
  b[8] = 1; b[9] = 1;
  return b;
}

export const textOf = (bytes) => Principal.fromUint8Array(bytes).toText();
export const bytesOf = (text) => Principal.fromText(text).toUint8Array();

// Deterministic bytes from a seed text (sha256 in counter mode).
export function seededBytes(seed, n) {
  const out = new Uint8Array(n);
  for (let off = 0, i = 0; off < n; i++) {
    const block = sha256(utf8(`${seed}/${i}`));
    out.set(block.subarray(0, Math.min(32, n - off)), off);
    off += 32;
  }
  return out;
}

// A minimal Wasm module: the header and a custom section naming the role, so
// every role has its own module hash.
function moduleFor(role) {
  const name = utf8('fleetsnap-role');
  const body = utf8(role);
  const payload = concat([name.length], name, body);
  return concat([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x00, payload.length], payload);
}

export class Canister {
  constructor({ id, role, parent, controllers, module, heap, stable, chunks }) {
    this.id = id; // text
    this.idBytes = bytesOf(id);
    this.role = role;
    this.parent = parent; // text or null
    this.controllers = controllers; // texts
    this.status = 'running';
    this.module = module;
    this.heap = heap;
    this.stable = stable;
    this.chunks = new Map(); // hex(sha256) -> bytes
    for (const c of chunks || []) this.chunks.set(hex(sha256(c)), c);
    this.globals = [{ i32: 42 }];
    this.certifiedData = new Uint8Array(0);
    this.version = 1n;
    this.snapshots = []; // ascending by counter
    this.nextSnapshot = 0n;
    this.settings = {
      compute_allocation: 0n, memory_allocation: 0n, freezing_threshold: 2592000n,
      reserved_cycles_limit: 5000000000000n, wasm_memory_limit: 3221225472n, wasm_memory_threshold: 0n,
      log_memory_limit: 4096n, log_visibility: { controllers: null }, snapshot_visibility: { controllers: null },
      status_visibility: { controllers: null }, environment_variables: [{ name: 'FLEET_ROLE', value: role }],
      minimum_incoming_canister_call_cycles: 0n,
    };
    this.cycles = 2999876543210n;
    this.createdAt = BigInt(Date.now()) * 1000000n;
  }

  moduleHash() { return this.module.length ? sha256(this.module) : null; }

  memorySize() {
    let n = this.module.length + this.heap.length + this.stable.length;
    for (const c of this.chunks.values()) n += c.length;
    return n;
  }

  // What a spec compares with a backup: each memory's size and sha256.
  describe() {
    const blob = (b) => ({ size: b.length, sha256: hex(sha256(b)) });
    return {
      canister_id: this.id,
      role: this.role,
      parent: this.parent,
      status: this.status,
      controllers: this.controllers,
      version: Number(this.version),
      module_hash: this.module.length ? hex(sha256(this.module)) : null,
      wasm_module: blob(this.module),
      wasm_memory: blob(this.heap),
      stable_memory: blob(this.stable),
      wasm_chunk_store: [...this.chunks.keys()].sort(),
      snapshots: this.snapshots.map((s) => ({
        snapshot_id: hex(s.id), source: s.source, complete: s.complete(),
        taken_at_timestamp: s.takenAt.toString(), total_size: s.totalSize().toString(),
      })),
    };
  }
}

// fleet description: {controllers: [principal text], seed, snapshot_limit,
// canisters: [{role, parent: role|null, heap_bytes, stable_bytes, chunks}]}.
// The first canister without a parent is the root; members are also
// controlled by the root, as in Canic.
export class Fleet {
  constructor(desc) {
    this.snapshotLimit = desc.snapshot_limit || 10;
    this.canisters = new Map();
    this.rootId = null;
    const seed = desc.seed || 'fleet';
    const byRole = new Map();
    (desc.canisters || []).forEach((d, i) => {
      const id = textOf(canisterIdBytes(i + 1));
      byRole.set(d.role, id);
      const parent = d.parent ? byRole.get(d.parent) : null;
      if (d.parent && !parent) throw new Error(`fleet: parent ${d.parent} of ${d.role} must come before it`);
      if (!parent && this.rootId === null) this.rootId = id;
      const controllers = [...(desc.controllers || [])];
      if (parent && this.rootId && !controllers.includes(this.rootId)) controllers.push(this.rootId);
      const chunks = [];
      for (let c = 0; c < (d.chunks || 0); c++) chunks.push(seededBytes(`${seed}/${d.role}/chunk/${c}`, 1024));
      this.canisters.set(id, new Canister({
        id, role: d.role, parent, controllers,
        module: moduleFor(d.role),
        heap: seededBytes(`${seed}/${d.role}/heap`, d.heap_bytes ?? 65536),
        stable: seededBytes(`${seed}/${d.role}/stable`, d.stable_bytes ?? 0),
        chunks,
      }));
    });
  }

  get(id) { return this.canisters.get(id); }

  describe() {
    return { root: this.rootId, canisters: [...this.canisters.values()].map((c) => c.describe()) };
  }
}
