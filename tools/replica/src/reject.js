// Replica rejects: the IC error code, the reject code it implies (the first
// digit) and the message texts of dfinity/ic's CanisterManagerError -> UserError
// (reference icp-cli-interface.md §6.3).
const DOCS = 'http://internetcomputer.org/docs/current/references/execution-errors';

export class Reject extends Error {
  constructor(errorCode, message) {
    super(message);
    this.errorCode = errorCode;
    this.rejectCode = Number(errorCode.slice(3, 4)); // IC0305 -> 3
  }
}

export const rejects = {
  canisterNotFound: (cid) => new Reject('IC0301',
    `Canister ${cid} not found.\nCheck the ICP dashboard to ensure the canister exists. See documentation: ${DOCS}#canister-not-found`),
  notController: (cid, controllers, sender) => new Reject('IC0512',
    `Only the controllers of the canister ${cid} can control it.\nCanister's controllers: ${controllers.join(' ')}\nSender's ID: ${sender}\n`
    + `Execute this call from a controller of the target canister or add the current caller as a controller. See documentation: ${DOCS}#invalid-controller`),
  snapshotNotFound: (cid, counter) => new Reject('IC0305',
    `Could not find the snapshot ID ${cid}-${counter} for canister ${cid}.\nUse the \`list_canister_snapshot\` API to see which snapshots are present. See documentation: ${DOCS}#canister-snapshot-not-found`),
  snapshotOwnership: (sid, cid) => new Reject('IC0406',
    `The snapshot ${sid} does not belong to canister ${cid}.\nUse the \`list_canister_snapshot\` API to see which snapshots are present. See documentation: ${DOCS}#canister-snapshot-invalid-ownership`),
  snapshotLimit: (cid, limit) => new Reject('IC0406',
    `Canister ${cid} has reached the maximum number of snapshots allowed: ${limit}.\nConsider deleting an unnecessary snapshot of the specified canister before creating a new one. See documentation: canister-snapshot-limit-exceeded`),
  emptyCanister: (cid) => new Reject('IC0406', `Failed to create snapshot for empty canister ${cid}:`),
  notLoadable: (sid, cid) => new Reject('IC0406',
    `Snapshot ${sid} is not currently loadable on the specified canister ${cid}. Try again later. The call should succeed if you wait sufficiently long (usually ten minutes).`),
  notUploadSnapshot: () => new Reject('IC0409', 'Only canister snapshots created by metadata upload can be mutated.'),
  badSlice: (what) => new Reject('IC0408',
    `Invalid management payload: ${what}\nUse the snapshot metadata API to learn the size of the wasm module / main memory / stable memory. Use a slice size at most 2000000.`),
  badPayload: (what) => new Reject('IC0408', `Invalid management payload: ${what}`),
  noMethod: (method, query) => new Reject('IC0536', `Canister has no ${query ? 'query' : 'update'} method '${method}'`),
  stopped: (cid) => new Reject('IC0508', `Canister ${cid} is stopped and therefore does not have a CallContextManager`),
  // An injected fault: the code the spec asked for, a message naming it.
  injected: (code, method, cid) => new Reject(code, `Injected fault ${code} for ${method} on canister ${cid}`),
};
