// The replica's keys: a BLS12-381 root key (the "NNS" key icp is given with
// -k) that signs certificates, and one ed25519 node key that signs query
// responses; read_state certifies the node key under the subnet.
import { bls12_381 } from '@noble/curves/bls12-381.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256, sha224, concat, domainSep, unhex, hex } from './hash.js';
import { digest, toCbor } from './tree.js';
import { encode } from './cbor.js';

// DER SubjectPublicKeyInfo prefix of an IC BLS12-381 G2 public key (96 bytes follow).
export const BLS_DER_PREFIX = unhex('308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100');
// DER prefix of an ed25519 public key (32 bytes follow).
export const ED25519_DER_PREFIX = unhex('302a300506032b6570032100');
const DST = 'BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_';

// A self-authenticating principal: sha224(DER key) ‖ 0x02.
export function selfAuthenticating(der) {
  return concat(sha224(der), [0x02]);
}

// Keys derived from a seed text, so a run can be reproduced; a fresh seed
// per run otherwise.
export function makeKeys(seed) {
  const s = sha256(new TextEncoder().encode(`fleetsnap-replica:${seed}`));
  // noble reduces a 48-byte seed into a valid scalar.
  const blsSecret = bls12_381.utils.randomSecretKey(concat(sha256(concat(s, [1])), sha256(concat(s, [2]))).subarray(0, 48));
  const blsPublic = bls12_381.shortSignatures.getPublicKey(blsSecret).toBytes();
  const rootDer = concat(BLS_DER_PREFIX, blsPublic);
  const nodeSecret = sha256(concat(s, [3]));
  const nodePublic = ed25519.getPublicKey(nodeSecret);
  const nodeDer = concat(ED25519_DER_PREFIX, nodePublic);
  return {
    blsSecret,
    rootDer,
    rootKeyHex: hex(rootDer),
    // With no delegation ic-agent takes the subnet id from the root key.
    subnetId: selfAuthenticating(rootDer),
    nodeSecret,
    nodeDer,
    nodeId: selfAuthenticating(nodeDer),
  };
}

// A certificate over `tree`: CBOR {tree, signature}, the signature a BLS G1
// short signature of domain_sep("ic-state-root") ‖ root hash.
export function certify(keys, tree) {
  const msg = concat(domainSep('ic-state-root'), digest(tree));
  const sigs = bls12_381.shortSignatures;
  const signature = sigs.sign(sigs.hash(msg, DST), keys.blsSecret).toBytes();
  return encode({ tree: toCbor(tree), signature });
}

// A node signature over a query response's signable bytes.
export function nodeSign(keys, signable) {
  return ed25519.sign(signable, keys.nodeSecret);
}
