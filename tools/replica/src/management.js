// The management canister (aaaaa-aa) methods fleetsnap drives through icp:
// status, stop/start, settings, and the snapshot API. Controllers are
// enforced against the envelope's sender; rejects carry the replica's texts.
import { IDL, MANAGEMENT } from './candid_types.js';
import { rejects } from './reject.js';
import { sha256, concat, hex } from './hash.js';
import { Principal } from '@dfinity/principal';
import { textOf } from './fleet.js';

const MAX_SLICE = 2000000;
const MAX_CHUNK = 1024 * 1024;

class Snapshot {
  constructor(canister, counter, source) {
    const counterBytes = new Uint8Array(8);
    let v = counter;
    for (let i = 7; i >= 0; i--) { counterBytes[i] = Number(v & 0xffn); v >>= 8n; }
    this.id = concat(counterBytes, canister.idBytes);
    this.counter = counter;
    this.source = source; // 'taken_from_canister' | 'metadata_upload'
    this.takenAt = BigInt(Date.now()) * 1000000n;
    this.received = null; // for uploads: which bytes/chunks have arrived
  }

  complete() {
    if (!this.received) return true;
    const full = (mask) => mask.every((x) => x === 1);
    return full(this.received.wasm_module) && full(this.received.wasm_memory)
      && full(this.received.stable_memory) && this.expectedChunks.every((h) => this.chunks.has(h));
  }

  totalSize() {
    let n = this.module.length + this.heap.length + this.stable.length;
    for (const c of this.chunks.values()) n += c.length;
    return BigInt(n);
  }
}

const BLOB = { wasm_module: 'module', wasm_memory: 'heap', stable_memory: 'stable' };

export class Management {
  constructor(fleet) { this.fleet = fleet; }

  canister(cidBytes) {
    const cid = textOf(cidBytes);
    const c = this.fleet.get(cid);
    if (!c) throw rejects.canisterNotFound(cid);
    return c;
  }

  controllerOnly(c, sender) {
    if (!c.controllers.includes(sender)) throw rejects.notController(c.id, c.controllers, sender);
  }

  snapshot(c, idBytes) {
    const idHex = hex(idBytes);
    const s = c.snapshots.find((x) => hex(x.id) === idHex);
    if (s) return s;
    if (idBytes.length > 8 && hex(idBytes.subarray(8)) !== hex(c.idBytes)) {
      throw rejects.snapshotOwnership(`${textOf(idBytes.subarray(8))}-${BigInt('0x' + hex(idBytes.subarray(0, 8)))}`, c.id);
    }
    const counter = idBytes.length >= 8 ? BigInt('0x' + (hex(idBytes.subarray(0, 8)) || '0')) : 0n;
    throw rejects.snapshotNotFound(c.id, counter);
  }

  // Returns the Candid reply bytes, or throws a Reject.
  handle(method, arg, sender) {
    const sig = MANAGEMENT[method];
    if (!sig) throw rejects.noMethod(method, false);
    let decoded;
    try {
      [decoded] = IDL.decode([sig[0]], arg);
    } catch (e) {
      throw rejects.badPayload(`${method}: ${e.message}`);
    }
    const result = this[method](decoded, sender);
    return new Uint8Array(IDL.encode(sig[1], result === undefined ? [] : [result]));
  }

  canister_status(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    const mh = c.moduleHash();
    let chunkBytes = 0;
    for (const x of c.chunks.values()) chunkBytes += x.length;
    let snapBytes = 0n;
    for (const s of c.snapshots) snapBytes += s.totalSize();
    return {
      status: { [c.status]: null },
      settings: { controllers: c.controllers.map((p) => Principal.fromText(p)), ...c.settings },
      module_hash: mh ? [mh] : [],
      memory_size: BigInt(c.memorySize()),
      memory_metrics: {
        wasm_memory_size: BigInt(c.heap.length), stable_memory_size: BigInt(c.stable.length),
        global_memory_size: 0n, wasm_binary_size: BigInt(c.module.length), custom_sections_size: 0n,
        canister_history_size: 0n, wasm_chunk_store_size: BigInt(chunkBytes), snapshots_size: snapBytes,
        log_memory_store_size: 0n,
      },
      cycles: c.cycles,
      reserved_cycles: 0n,
      idle_cycles_burned_per_day: 0n,
      query_stats: { num_calls_total: 0n, num_instructions_total: 0n, request_payload_bytes_total: 0n, response_payload_bytes_total: 0n },
      ready_for_migration: false,
      version: c.version,
    };
  }

  stop_canister(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    // The HTTP layer decides when a stopping canister becomes stopped.
    if (c.status === 'running') c.status = 'stopping';
  }

  start_canister(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    c.status = 'running';
  }

  update_settings(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    for (const [k, v] of Object.entries(a.settings)) {
      if (!Array.isArray(v) || v.length === 0) continue;
      if (k === 'controllers') c.controllers = v[0].map((p) => p.toText());
      else c.settings[k] = v[0];
    }
    c.version += 1n;
  }

  take_canister_snapshot(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    const replace = a.replace_snapshot.length ? this.snapshot(c, a.replace_snapshot[0]) : null;
    if (!replace && c.snapshots.length >= this.fleet.snapshotLimit) throw rejects.snapshotLimit(c.id, this.fleet.snapshotLimit);
    if (c.module.length === 0) throw rejects.emptyCanister(c.id);
    const s = new Snapshot(c, c.nextSnapshot++, 'taken_from_canister');
    s.module = c.module.slice(); s.heap = c.heap.slice(); s.stable = c.stable.slice();
    s.chunks = new Map([...c.chunks].map(([h, b]) => [h, b.slice()]));
    s.globals = c.globals.map((g) => ({ ...g }));
    s.certifiedData = c.certifiedData.slice();
    s.version = c.version;
    s.timer = [{ inactive: null }];
    s.hook = [{ condition_not_satisfied: null }];
    if (replace) c.snapshots = c.snapshots.filter((x) => x !== replace);
    c.snapshots.push(s);
    return { id: s.id, taken_at_timestamp: s.takenAt, total_size: s.totalSize() };
  }

  list_canister_snapshots(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    return c.snapshots.map((s) => ({ id: s.id, taken_at_timestamp: s.takenAt, total_size: s.totalSize() }));
  }

  delete_canister_snapshot(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    const s = this.snapshot(c, a.snapshot_id);
    c.snapshots = c.snapshots.filter((x) => x !== s);
  }

  load_canister_snapshot(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    const s = this.snapshot(c, a.snapshot_id);
    if (!s.complete()) throw rejects.notLoadable(`${c.id}-${s.counter}`, c.id);
    c.module = s.module.slice(); c.heap = s.heap.slice(); c.stable = s.stable.slice();
    c.chunks = new Map([...s.chunks].map(([h, b]) => [h, b.slice()]));
    c.globals = s.globals.map((g) => ({ ...g }));
    c.certifiedData = s.certifiedData.slice();
    // Loading advances the canister's version, as on the IC.
    c.version += 1n;
  }

  read_canister_snapshot_metadata(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.snapshotReader(c, sender);
    const s = this.snapshot(c, a.snapshot_id);
    return {
      source: { [s.source]: null },
      taken_at_timestamp: s.takenAt,
      wasm_module_size: BigInt(s.module.length),
      globals: s.globals,
      wasm_memory_size: BigInt(s.heap.length),
      stable_memory_size: BigInt(s.stable.length),
      wasm_chunk_store: [...s.chunks.keys()].sort().map((h) => ({ hash: Uint8Array.from(Buffer.from(h, 'hex')) })),
      canister_version: s.version,
      certified_data: s.certifiedData,
      global_timer: s.timer,
      on_low_wasm_memory_hook_status: s.hook,
    };
  }

  snapshotReader(c, sender) {
    const v = c.settings.snapshot_visibility;
    if ('public' in v) return;
    if ('allowed_viewers' in v && v.allowed_viewers.some((p) => p.toText() === sender)) return;
    this.controllerOnly(c, sender);
  }

  read_canister_snapshot_data(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.snapshotReader(c, sender);
    const s = this.snapshot(c, a.snapshot_id);
    const [kind] = Object.keys(a.kind);
    const k = a.kind[kind];
    if (kind === 'wasm_chunk') {
      const b = s.chunks.get(hex(k.hash));
      if (!b) throw rejects.badPayload(`the chunk store of snapshot ${c.id}-${s.counter} has no chunk ${hex(k.hash)}`);
      return { chunk: b };
    }
    const blob = s[BLOB[kind]];
    const off = Number(k.offset);
    const size = Number(k.size);
    if (size > MAX_SLICE) throw rejects.badSlice(`slice size ${size} exceeds ${MAX_SLICE}`);
    if (off + size > blob.length) throw rejects.badSlice(`slice [${off}, ${off + size}) is out of bounds of ${kind} (${blob.length} bytes)`);
    return { chunk: blob.subarray(off, off + size) };
  }

  upload_canister_snapshot_metadata(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    const replace = a.replace_snapshot.length ? this.snapshot(c, a.replace_snapshot[0]) : null;
    if (!replace && c.snapshots.length >= this.fleet.snapshotLimit) throw rejects.snapshotLimit(c.id, this.fleet.snapshotLimit);
    const s = new Snapshot(c, c.nextSnapshot++, 'metadata_upload');
    s.module = new Uint8Array(Number(a.wasm_module_size));
    s.heap = new Uint8Array(Number(a.wasm_memory_size));
    s.stable = new Uint8Array(Number(a.stable_memory_size));
    s.chunks = new Map();
    s.expectedChunks = [];
    s.globals = a.globals;
    s.certifiedData = Uint8Array.from(a.certified_data);
    s.version = c.version;
    s.timer = a.global_timer;
    s.hook = a.on_low_wasm_memory_hook_status;
    s.received = {
      wasm_module: new Uint8Array(s.module.length), wasm_memory: new Uint8Array(s.heap.length),
      stable_memory: new Uint8Array(s.stable.length),
    };
    if (replace) c.snapshots = c.snapshots.filter((x) => x !== replace);
    c.snapshots.push(s);
    return { snapshot_id: s.id };
  }

  upload_canister_snapshot_data(a, sender) {
    const c = this.canister(a.canister_id.toUint8Array());
    this.controllerOnly(c, sender);
    const s = this.snapshot(c, a.snapshot_id);
    if (!s.received) throw rejects.notUploadSnapshot();
    const [kind] = Object.keys(a.kind);
    const chunk = Uint8Array.from(a.chunk);
    if (kind === 'wasm_chunk') {
      if (chunk.length > MAX_CHUNK) throw rejects.badPayload(`wasm chunk of ${chunk.length} bytes exceeds ${MAX_CHUNK}`);
      s.chunks.set(hex(sha256(chunk)), chunk);
      return;
    }
    const blob = s[BLOB[kind]];
    const off = Number(a.kind[kind].offset);
    if (chunk.length > MAX_SLICE) throw rejects.badSlice(`slice size ${chunk.length} exceeds ${MAX_SLICE}`);
    if (off + chunk.length > blob.length) throw rejects.badSlice(`slice [${off}, ${off + chunk.length}) is out of bounds of ${kind} (${blob.length} bytes)`);
    blob.set(chunk, off);
    s.received[kind].fill(1, off, off + chunk.length);
  }
}
