// The replica's own checks (node --test): the hashing and certificate
// pieces against the interface spec's example and independent verification,
// and the HTTP paths the e2e specs do not reach through icp 1.5.0 (v2 calls
// answered by polling, signed query rejects).
import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { bls12_381 } from '@noble/curves/bls12-381.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { decode, encode } from '../src/cbor.js';
import { requestId, hex, concat, domainSep, utf8, hashMap } from '../src/hash.js';
import { digest } from '../src/tree.js';
import { makeKeys } from '../src/keys.js';
import { Fleet } from '../src/fleet.js';
import { Replica } from '../src/server.js';
import { IDL, MANAGEMENT } from '../src/candid_types.js';
import { Principal } from '@dfinity/principal';

const ANONYMOUS = Uint8Array.of(4);

test('request id of the interface specification example', () => {
  const id = requestId({
    request_type: 'call',
    canister_id: Uint8Array.from([0, 0, 0, 0, 0, 0, 0x04, 0xd2]),
    method_name: 'hello',
    arg: Uint8Array.from([0x44, 0x49, 0x44, 0x4c, 0x00, 0xfd, 0x2a]), // "DIDL\x00\xFD*"
  });
  assert.equal(hex(id), '8781291c347db32a9d8c10eb62b710fce5a93be676474c42babc74c51858f94b');
});

test('cbor round trip keeps u64 values and byte strings', () => {
  const v = { a: 18446744073709551615n, b: Uint8Array.of(1, 2, 3), c: ['x', 1, -2, true, null], d: 1796066854533000000n };
  const back = decode(encode(v));
  assert.equal(back.a, 18446744073709551615n);
  assert.deepEqual([...back.b], [1, 2, 3]);
  assert.deepEqual(back.c, ['x', 1, -2, true, null]);
  assert.equal(back.d, 1796066854533000000n);
});

// The tree of a CBOR certificate, back into the node form digest() takes.
function fromCbor(n) {
  switch (n[0]) {
    case 0: return { t: 0 };
    case 1: return { t: 1, l: fromCbor(n[1]), r: fromCbor(n[2]) };
    case 2: return { t: 2, label: n[1], sub: fromCbor(n[2]) };
    case 3: return { t: 3, v: n[1] };
    default: throw new Error('pruned nodes are not expected here');
  }
}

function lookup(n, path) {
  if (path.length === 0) return n.t === 3 ? n.v : n;
  if (n.t === 1) return lookup(n.l, path) ?? lookup(n.r, path);
  if (n.t === 2) return Buffer.from(n.label).equals(Buffer.from(path[0])) ? lookup(n.sub, path.slice(1)) : undefined;
  return undefined;
}

function verifyCertificate(keys, bytes) {
  const cert = decode(bytes);
  const tree = fromCbor(cert.tree);
  const msg = concat(domainSep('ic-state-root'), digest(tree));
  const sigs = bls12_381.shortSignatures;
  const publicKey = keys.rootDer.subarray(keys.rootDer.length - 96);
  const hashed = sigs.hash(msg, 'BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_');
  assert.ok(sigs.verify(cert.signature, hashed, publicKey), 'the certificate does not verify with the root key');
  return tree;
}

async function withReplica(fn) {
  const keys = makeKeys('unit');
  const fleet = new Fleet({
    controllers: ['2vxsx-fae'], seed: 'unit',
    canisters: [{ role: 'root', heap_bytes: 1024 }, { role: 'app', parent: 'root', heap_bytes: 2048, stable_bytes: 16 }],
  });
  const replica = new Replica({ keys, fleet, stopDelayMs: 0 });
  const server = await replica.listen(0);
  try {
    await fn({ keys, fleet, replica, port: server.address().port });
  } finally {
    server.close();
  }
}

function post(port, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/cbor' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: new Uint8Array(Buffer.concat(chunks)) }));
    });
    req.on('error', reject);
    req.end(Buffer.from(body));
  });
}

test('a v2 call is accepted and its certified reply is read back with read_state', async () => {
  await withReplica(async ({ keys, fleet, port }) => {
    const app = [...fleet.canisters.values()][1];
    const content = {
      request_type: 'call', sender: ANONYMOUS, canister_id: new Uint8Array(0), method_name: 'canister_status',
      arg: new Uint8Array(IDL.encode([MANAGEMENT.canister_status[0]], [{ canister_id: Principal.fromText(app.id) }])),
      ingress_expiry: BigInt(Date.now() + 60000) * 1000000n, nonce: Uint8Array.of(1),
    };
    const rid = requestId(content);
    const accepted = await post(port, `/api/v2/canister/${app.id}/call`, encode({ content }));
    assert.equal(accepted.status, 202);
    const rs = await post(port, `/api/v2/canister/${app.id}/read_state`, encode({ content: {
      request_type: 'read_state', sender: ANONYMOUS, paths: [[utf8('request_status'), rid]],
      ingress_expiry: BigInt(Date.now() + 60000) * 1000000n,
    } }));
    assert.equal(rs.status, 200);
    const tree = verifyCertificate(keys, decode(rs.body).certificate);
    assert.equal(Buffer.from(lookup(tree, [utf8('request_status'), rid, utf8('status')])).toString(), 'replied');
    const reply = lookup(tree, [utf8('request_status'), rid, utf8('reply')]);
    const [status] = IDL.decode(MANAGEMENT.canister_status[1], reply);
    assert.deepEqual(Object.keys(status.status), ['running']);
    assert.equal(status.memory_metrics.wasm_memory_size, 2048n);
  });
});

test('a query reject is signed by the node key read_state certifies', async () => {
  await withReplica(async ({ keys, fleet, port }) => {
    const app = [...fleet.canisters.values()][1];
    const content = {
      request_type: 'query', sender: ANONYMOUS, canister_id: Principal.fromText(app.id).toUint8Array(),
      method_name: 'nosuch', arg: new Uint8Array(IDL.encode([], [])), ingress_expiry: BigInt(Date.now() + 60000) * 1000000n,
    };
    const res = await post(port, `/api/v3/canister/${app.id}/query`, encode({ content }));
    const body = decode(res.body);
    assert.equal(body.status, 'rejected');
    assert.equal(body.error_code, 'IC0536');
    assert.equal(body.reject_code, 5);
    const [sig] = body.signatures;
    const signable = concat(Uint8Array.of(0x0b), utf8('ic-response'), hashMap({
      status: 'rejected', reject_code: body.reject_code, reject_message: body.reject_message,
      error_code: body.error_code, request_id: requestId(content), timestamp: sig.timestamp,
    }));
    // The node key, as the certified subnet read_state gives it.
    const rs = await post(port, `/api/v3/canister/${app.id}/read_state`, encode({ content: {
      request_type: 'read_state', sender: ANONYMOUS, paths: [[utf8('subnet')]],
      ingress_expiry: BigInt(Date.now() + 60000) * 1000000n,
    } }));
    const tree = verifyCertificate(keys, decode(rs.body).certificate);
    const der = lookup(tree, [utf8('subnet'), keys.subnetId, utf8('node'), sig.identity, utf8('public_key')]);
    assert.equal(der.length, 44);
    assert.ok(ed25519.verify(sig.signature, signable, der.subarray(12)));
  });
});
