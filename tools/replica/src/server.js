// The HTTP side: the IC HTTP interface endpoints icp 1.5.0 uses (status,
// call v2/v3/v4, query, read_state for canisters and subnets), on loopback
// only, plus an admin interface for specs under /admin/.
import http from 'node:http';
import fs from 'node:fs';
import { decode, encode, encodeTagged } from './cbor.js';
import { requestId, hashMap, hex, concat, utf8, leb128 } from './hash.js';
import { build } from './tree.js';
import { certify, nodeSign, selfAuthenticating } from './keys.js';
import { IDL, REGISTRY_RESULT } from './candid_types.js';
import { Principal } from '@dfinity/principal';
import { Reject, rejects } from './reject.js';
import { textOf, bytesOf, canisterIdBytes } from './fleet.js';
import { Management } from './management.js';
import { Faults } from './faults.js';

const nowNs = () => BigInt(Date.now()) * 1000000n;

export class Replica {
  // opts: {keys, fleet, logPath, stopDelayMs, syncWaitMs}
  constructor(opts) {
    this.keys = opts.keys;
    this.fleet = opts.fleet;
    this.management = new Management(this.fleet);
    this.faults = new Faults();
    this.logPath = opts.logPath;
    this.stopDelayMs = opts.stopDelayMs ?? 0;
    this.syncWaitMs = opts.syncWaitMs ?? 1000;
    this.requests = new Map(); // request id hex -> {status, reply|reject}
    this.held = new Set(); // canisters whose stop never completes
    this.hanging = new Set(); // sockets held open by "hang" faults
    this.counter = 0;
  }

  log(entry) {
    if (!this.logPath) return;
    fs.appendFileSync(this.logPath, JSON.stringify({ time: new Date().toISOString(), seq: ++this.counter, ...entry }) + '\n');
  }

  // ---- certificates and the state tree ----

  subnetEntries() {
    const k = this.keys;
    // Every canister id the replica can create lies in this one range.
    const ranges = encode([[canisterIdBytes(0), canisterIdBytes(0xffffffffn)]]);
    return [
      ['subnet', [[k.subnetId, [
        ['public_key', k.rootDer],
        ['canister_ranges', ranges],
        ['type', 'application'],
        ['node', [[k.nodeId, [['public_key', k.nodeDer]]]]],
      ]]]],
      ['canister_ranges', [[k.subnetId, [[canisterIdBytes(0), ranges]]]]],
    ];
  }

  statusEntries(rid) {
    const r = this.requests.get(hex(rid));
    if (!r) return null;
    if (r.status === 'replied') return [rid, [['status', 'replied'], ['reply', r.reply]]];
    if (r.status === 'rejected') {
      return [rid, [
        ['status', 'rejected'], ['reject_code', leb128(r.reject.rejectCode)],
        ['reject_message', r.reject.message], ['error_code', r.reject.errorCode],
      ]];
    }
    return [rid, [['status', r.status]]];
  }

  certificate(entries) {
    return certify(this.keys, build([['time', leb128(nowNs())], ...entries]));
  }

  canisterEntries(cid) {
    const c = this.fleet.get(cid);
    if (!c) return [];
    const sub = [['controllers', encode(c.controllers.map(bytesOf))]];
    if (c.module.length) sub.push(['module_hash', c.moduleHash()]);
    return [['canister', [[c.idBytes, sub]]]];
  }

  // ---- dispatch ----

  // An update or query to a canister other than the management canister.
  canisterMethod(cid, method, query) {
    const c = this.fleet.get(cid);
    if (!c) throw rejects.canisterNotFound(cid);
    if (c.status !== 'running') throw rejects.stopped(cid);
    if (method === 'canic_subnet_registry' && cid === this.fleet.rootId) {
      const entries = [...this.fleet.canisters.values()].map((m) => {
        const rec = {
          pid: Principal.fromText(m.id), role: m.role,
          parent_pid: m.parent ? [Principal.fromText(m.parent)] : [],
          module_hash: m.module.length ? [m.moduleHash()] : [], created_at: m.createdAt,
        };
        return { pid: rec.pid, role: rec.role, record: rec };
      });
      return new Uint8Array(IDL.encode([REGISTRY_RESULT], [{ Ok: entries }]));
    }
    if (method === 'health') return new Uint8Array(IDL.encode([IDL.Text], ['ok']));
    throw rejects.noMethod(method, query);
  }

  // Runs a call; returns {reply} or {reject}; `pending` is set for a stop
  // that is still stopping.
  execute(content, effective, injected) {
    if (injected) return { reject: injected };
    const method = content.method_name;
    const sender = textOf(content.sender);
    const target = textOf(content.canister_id);
    try {
      if (target === 'aaaaa-aa') {
        const reply = this.management.handle(method, content.arg, sender);
        if (method === 'stop_canister') {
          const c = this.fleet.get(effective);
          if (c.status === 'stopping') return { reply, pending: c };
        }
        return { reply };
      }
      return { reply: this.canisterMethod(target, method, false) };
    } catch (e) {
      if (e instanceof Reject) return { reject: e };
      throw e;
    }
  }

  // Completes a stop once the canister may stop (never while held).
  waitStopped(c, reply, rid) {
    return new Promise((resolve) => {
      const finish = () => {
        if (this.held.has(c.id) || c.status !== 'stopping') {
          if (c.status === 'running') {
            // Started while stopping: the IC rejects the stop then.
            const reject = new Reject('IC0509', `Canister ${c.id} was started while it was stopping.`);
            this.requests.set(hex(rid), { status: 'rejected', reject });
            resolve();
            return;
          }
          if (c.status === 'stopped') {
            this.requests.set(hex(rid), { status: 'replied', reply });
            resolve();
            return;
          }
          setTimeout(finish, 50);
          return;
        }
        c.status = 'stopped';
        this.requests.set(hex(rid), { status: 'replied', reply });
        resolve();
      };
      setTimeout(finish, this.stopDelayMs);
    });
  }

  async handleCall(ecid, envelope, res, injected) {
    const content = envelope.content;
    const rid = requestId(content);
    const ridHex = hex(rid);
    const known = this.requests.get(ridHex);
    if (!known) {
      const out = this.execute(content, ecid, injected);
      if (out.reject) this.requests.set(ridHex, { status: 'rejected', reject: out.reject });
      else if (out.pending) {
        this.requests.set(ridHex, { status: 'processing' });
        const done = this.waitStopped(out.pending, out.reply, rid);
        const timeout = new Promise((r) => setTimeout(r, this.syncWaitMs));
        await Promise.race([done, timeout]);
      } else this.requests.set(ridHex, { status: 'replied', reply: out.reply });
    }
    const r = this.requests.get(ridHex);
    if (r.status === 'processing') {
      // Not finished within the synchronous window: icp polls read_state.
      this.send(res, 202, encodeTagged({ status: 'accepted' }));
      return r.status;
    }
    const cert = this.certificate([['request_status', [this.statusEntries(rid)]]]);
    this.send(res, 200, encodeTagged({ status: 'replied', certificate: cert }));
    return r.status === 'rejected' ? `rejected:${r.reject.errorCode}` : 'replied';
  }

  handleQuery(envelope, res, injected) {
    const content = envelope.content;
    const rid = requestId(content);
    const cid = textOf(content.canister_id);
    let body;
    let outcome;
    const timestamp = nowNs();
    try {
      if (injected) throw injected;
      const arg = this.canisterMethod(cid, content.method_name, true);
      const signable = { status: 'replied', reply: { arg }, request_id: rid, timestamp };
      body = { status: 'replied', reply: { arg }, signatures: [this.signature(signable, timestamp)] };
      outcome = 'replied';
    } catch (e) {
      if (!(e instanceof Reject)) throw e;
      const fields = { reject_code: e.rejectCode, reject_message: e.message, error_code: e.errorCode };
      const signable = { status: 'rejected', ...fields, request_id: rid, timestamp };
      body = { status: 'rejected', ...fields, signatures: [this.signature(signable, timestamp)] };
      outcome = `rejected:${e.errorCode}`;
    }
    this.send(res, 200, encodeTagged(body));
    return outcome;
  }

  signature(signable, timestamp) {
    const msg = concat(concat([0x0b], utf8('ic-response')), hashMap(signable));
    return { timestamp, signature: nodeSign(this.keys, msg), identity: this.keys.nodeId };
  }

  handleReadState(ecid, envelope, res) {
    const paths = envelope.content.paths || [];
    const entries = [];
    const statuses = [];
    let wantsSubnet = false;
    for (const path of paths) {
      const first = Buffer.from(path[0] || []).toString();
      if (first === 'request_status' && path[1]) {
        const e = this.statusEntries(path[1]);
        if (e) statuses.push(e);
      } else if (first === 'subnet' || first === 'canister_ranges') wantsSubnet = true;
    }
    if (statuses.length) entries.push(['request_status', statuses]);
    if (wantsSubnet) entries.push(...this.subnetEntries());
    if (ecid) entries.push(...this.canisterEntries(ecid));
    this.send(res, 200, encodeTagged({ certificate: this.certificate(entries) }));
    return 'replied';
  }

  send(res, status, body, type = 'application/cbor') {
    res.writeHead(status, { 'content-type': type, 'content-length': body.length });
    res.end(Buffer.from(body));
  }

  // ---- admin (specs only) ----

  admin(method, parts, body, res) {
    const json = (status, v) => this.send(res, status, Buffer.from(JSON.stringify(v)), 'application/json');
    const [what, id, action] = parts;
    if (method === 'GET' && what === 'fleet') return json(200, this.fleet.describe());
    if (method === 'GET' && what === 'faults') return json(200, this.faults.describe());
    if (method === 'POST' && what === 'faults') {
      try {
        const rules = JSON.parse(body.toString() || '[]');
        // An empty object clears too (what a Lua empty table encodes to).
        if (!Array.isArray(rules) && !(rules && typeof rules === 'object' && Object.keys(rules).length === 0)) {
          throw new Error('faults: expected an array of rules');
        }
        this.faults.set(Array.isArray(rules) ? rules : []);
      } catch (e) { return json(400, { error: e.message }); }
      return json(200, this.faults.describe());
    }
    const c = id && this.fleet.get(id);
    if (what === 'canister' && !c) return json(404, { error: `no canister ${id}` });
    if (what === 'canister' && method === 'GET' && !action) return json(200, c.describe());
    if (what === 'canister' && method === 'GET' && ['wasm_module', 'wasm_memory', 'stable_memory'].includes(action)) {
      const blob = { wasm_module: c.module, wasm_memory: c.heap, stable_memory: c.stable }[action];
      return this.send(res, 200, blob, 'application/octet-stream');
    }
    if (what === 'canister' && method === 'POST' && action === 'mutate') {
      // {memory: "wasm_memory"|"stable_memory", offset, hex}: overwrite bytes in place.
      let req;
      try { req = JSON.parse(body.toString()); } catch (e) { return json(400, { error: e.message }); }
      const key = { wasm_memory: 'heap', stable_memory: 'stable' }[req.memory];
      const bytes = Buffer.from(req.hex || '', 'hex');
      if (!key || !bytes.length || req.offset + bytes.length > c[key].length) return json(400, { error: 'bad mutation' });
      c[key].set(bytes, req.offset);
      return json(200, c.describe());
    }
    if (what === 'canister' && method === 'POST' && action === 'hold-stop') {
      // The canister's stops stay "stopping" until released.
      const hold = JSON.parse(body.toString() || '{}').hold !== false;
      if (hold) this.held.add(c.id); else this.held.delete(c.id);
      return json(200, c.describe());
    }
    return json(404, { error: 'unknown admin request' });
  }

  // ---- the HTTP server ----

  async route(req, res, body) {
    const url = new URL(req.url, 'http://127.0.0.1');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] === 'admin') return this.admin(req.method, parts.slice(1), body, res);
    if (req.method === 'GET' && url.pathname === '/api/v2/status') {
      const entry = { endpoint: 'status' };
      if (this.fault(entry, req, res)) return;
      this.send(res, 200, encodeTagged({
        ic_api_version: '0.18.0', impl_version: 'fleetsnap-replica', replica_health_status: 'healthy',
        root_key: this.keys.rootDer,
      }));
      this.log({ ...entry, outcome: 'replied' });
      return;
    }
    // /api/v{2,3,4}/{canister|subnet}/<id>/{call|query|read_state}
    const [api, version, scope, id, kind] = parts;
    if (req.method !== 'POST' || api !== 'api' || !/^v[234]$/.test(version || '') || parts.length !== 5
      || !['canister', 'subnet'].includes(scope) || !['call', 'query', 'read_state'].includes(kind)) {
      this.send(res, 404, Buffer.from(`no such endpoint: ${req.method} ${url.pathname}\n`), 'text/plain');
      return;
    }
    let envelope;
    try {
      envelope = decode(new Uint8Array(body));
      if (!envelope || !envelope.content) throw new Error('no content');
    } catch (e) {
      this.send(res, 400, Buffer.from(`malformed envelope: ${e.message}\n`), 'text/plain');
      return;
    }
    const content = envelope.content;
    this.checkSender(envelope);
    const target = content.canister_id ? textOf(content.canister_id) : null;
    const entry = {
      endpoint: kind, version, method: content.method_name,
      canister: target === 'aaaaa-aa' || !target ? (scope === 'canister' ? id : undefined) : target,
      sender: content.sender ? textOf(content.sender) : undefined,
    };
    if (kind === 'read_state') {
      entry.paths = (content.paths || []).map((p) => p.map((l) => {
        const s = Buffer.from(l).toString();
        return /^[\x20-\x7e]+$/.test(s) ? s : Buffer.from(l).toString('hex');
      }).join('/'));
    }
    if (this.fault(entry, req, res)) return;
    let outcome;
    if (kind === 'call') {
      // v2 has no synchronous answer: accept and let icp poll.
      if (version === 'v2') {
        const out = this.execute(content, id, entry.injected);
        const rid = requestId(content);
        if (out.reject) this.requests.set(hex(rid), { status: 'rejected', reject: out.reject });
        else if (out.pending) { this.requests.set(hex(rid), { status: 'processing' }); this.waitStopped(out.pending, out.reply, rid); }
        else this.requests.set(hex(rid), { status: 'replied', reply: out.reply });
        this.send(res, 202, new Uint8Array(0));
        outcome = 'accepted';
      } else outcome = await this.handleCall(id, envelope, res, entry.injected);
    } else if (kind === 'query') outcome = this.handleQuery(envelope, res, entry.injected);
    else outcome = this.handleReadState(scope === 'canister' ? id : null, envelope, res);
    const { injected, ...logged } = entry;
    this.log({ ...logged, outcome, ...(injected ? { fault: 'reject' } : {}) });
  }

  // The replica trusts the envelope's sender as the caller (it does not
  // verify sender_sig) but refuses a sender that does not match its key.
  checkSender(envelope) {
    const { sender } = envelope.content;
    if (!envelope.sender_pubkey || !sender) return;
    const expected = selfAuthenticating(envelope.sender_pubkey);
    if (Buffer.compare(Buffer.from(expected), Buffer.from(sender)) !== 0) {
      throw new Error('sender does not match sender_pubkey');
    }
  }

  // Applies an injected fault; true when the request is answered (or never
  // will be). A reject fault is left to the normal path via entry.injected.
  fault(entry, req, res) {
    const f = this.faults.match(entry);
    if (!f) return false;
    if (f.kind !== 'reject') this.log({ ...entry, outcome: `fault:${f.kind}` });
    if (f.kind === 'http503') {
      this.send(res, 503, Buffer.from('fleetsnap-replica: injected 503\n'), 'text/plain');
    } else if (f.kind === 'hang') {
      this.hanging.add(req.socket);
    } else if (f.kind === 'drop') {
      req.socket.destroy();
    } else if (f.kind === 'reject') {
      // Answered by the normal path, certified (calls) or signed (queries).
      entry.injected = rejects.injected(f.code, entry.method, entry.canister);
      return false;
    }
    return true;
  }

  listen(port) {
    const server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        this.route(req, res, Buffer.concat(chunks)).catch((e) => {
          this.log({ endpoint: 'error', outcome: `error:${e.message}` });
          if (!res.headersSent) this.send(res, 400, Buffer.from(`${e.message}\n`), 'text/plain');
        });
      });
    });
    // Loopback only: nothing else can reach the replica.
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve(server));
    });
  }
}
