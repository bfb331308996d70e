// Candid types of the management canister methods the replica serves (the
// interface spec's ic.did, as icp 1.5.0 encodes and decodes them) and of the
// Canic registry query. Results are supersets where icp ignores extra fields.
import { IDL } from '@dfinity/candid';

const CanisterIdArg = IDL.Record({ canister_id: IDL.Principal });

const Visibility = IDL.Variant({
  controllers: IDL.Null,
  public: IDL.Null,
  allowed_viewers: IDL.Vec(IDL.Principal),
});

const EnvironmentVariable = IDL.Record({ name: IDL.Text, value: IDL.Text });

const DefiniteSettings = IDL.Record({
  controllers: IDL.Vec(IDL.Principal),
  compute_allocation: IDL.Nat,
  memory_allocation: IDL.Nat,
  freezing_threshold: IDL.Nat,
  reserved_cycles_limit: IDL.Nat,
  log_visibility: Visibility,
  wasm_memory_limit: IDL.Nat,
  wasm_memory_threshold: IDL.Nat,
  log_memory_limit: IDL.Nat,
  snapshot_visibility: Visibility,
  status_visibility: Visibility,
  environment_variables: IDL.Vec(EnvironmentVariable),
  minimum_incoming_canister_call_cycles: IDL.Nat,
});

const CanisterStatusResult = IDL.Record({
  status: IDL.Variant({ running: IDL.Null, stopping: IDL.Null, stopped: IDL.Null }),
  settings: DefiniteSettings,
  module_hash: IDL.Opt(IDL.Vec(IDL.Nat8)),
  memory_size: IDL.Nat,
  memory_metrics: IDL.Record({
    wasm_memory_size: IDL.Nat,
    stable_memory_size: IDL.Nat,
    global_memory_size: IDL.Nat,
    wasm_binary_size: IDL.Nat,
    custom_sections_size: IDL.Nat,
    canister_history_size: IDL.Nat,
    wasm_chunk_store_size: IDL.Nat,
    snapshots_size: IDL.Nat,
    log_memory_store_size: IDL.Nat,
  }),
  cycles: IDL.Nat,
  reserved_cycles: IDL.Nat,
  idle_cycles_burned_per_day: IDL.Nat,
  query_stats: IDL.Record({
    num_calls_total: IDL.Nat,
    num_instructions_total: IDL.Nat,
    request_payload_bytes_total: IDL.Nat,
    response_payload_bytes_total: IDL.Nat,
  }),
  ready_for_migration: IDL.Bool,
  version: IDL.Nat64,
});

const Blob = IDL.Vec(IDL.Nat8);

const Snapshot = IDL.Record({ id: Blob, taken_at_timestamp: IDL.Nat64, total_size: IDL.Nat64 });

const Global = IDL.Variant({ i32: IDL.Int32, i64: IDL.Int64, f32: IDL.Float32, f64: IDL.Float64, v128: IDL.Nat });
const GlobalTimer = IDL.Opt(IDL.Variant({ inactive: IDL.Null, active: IDL.Nat64 }));
const HookStatus = IDL.Opt(IDL.Variant({ condition_not_satisfied: IDL.Null, ready: IDL.Null, executed: IDL.Null }));

const SettingsArg = IDL.Record({
  controllers: IDL.Opt(IDL.Vec(IDL.Principal)),
  compute_allocation: IDL.Opt(IDL.Nat),
  memory_allocation: IDL.Opt(IDL.Nat),
  freezing_threshold: IDL.Opt(IDL.Nat),
  reserved_cycles_limit: IDL.Opt(IDL.Nat),
  log_visibility: IDL.Opt(Visibility),
  wasm_memory_limit: IDL.Opt(IDL.Nat),
  wasm_memory_threshold: IDL.Opt(IDL.Nat),
  log_memory_limit: IDL.Opt(IDL.Nat),
  snapshot_visibility: IDL.Opt(Visibility),
  status_visibility: IDL.Opt(Visibility),
  environment_variables: IDL.Opt(IDL.Vec(EnvironmentVariable)),
  minimum_incoming_canister_call_cycles: IDL.Opt(IDL.Nat),
});

// method -> [argument type, result types]
export const MANAGEMENT = {
  canister_status: [CanisterIdArg, [CanisterStatusResult]],
  stop_canister: [CanisterIdArg, []],
  start_canister: [CanisterIdArg, []],
  update_settings: [IDL.Record({ canister_id: IDL.Principal, settings: SettingsArg, sender_canister_version: IDL.Opt(IDL.Nat64) }), []],
  take_canister_snapshot: [IDL.Record({
    canister_id: IDL.Principal,
    replace_snapshot: IDL.Opt(Blob),
    uninstall_code: IDL.Opt(IDL.Bool),
    sender_canister_version: IDL.Opt(IDL.Nat64),
  }), [Snapshot]],
  list_canister_snapshots: [CanisterIdArg, [IDL.Vec(Snapshot)]],
  delete_canister_snapshot: [IDL.Record({ canister_id: IDL.Principal, snapshot_id: Blob }), []],
  load_canister_snapshot: [IDL.Record({
    canister_id: IDL.Principal, snapshot_id: Blob, sender_canister_version: IDL.Opt(IDL.Nat64),
  }), []],
  read_canister_snapshot_metadata: [IDL.Record({ canister_id: IDL.Principal, snapshot_id: Blob }), [IDL.Record({
    source: IDL.Variant({ taken_from_canister: IDL.Reserved, metadata_upload: IDL.Reserved }),
    taken_at_timestamp: IDL.Nat64,
    wasm_module_size: IDL.Nat64,
    globals: IDL.Vec(Global),
    wasm_memory_size: IDL.Nat64,
    stable_memory_size: IDL.Nat64,
    wasm_chunk_store: IDL.Vec(IDL.Record({ hash: Blob })),
    canister_version: IDL.Nat64,
    certified_data: Blob,
    global_timer: GlobalTimer,
    on_low_wasm_memory_hook_status: HookStatus,
  })]],
  read_canister_snapshot_data: [IDL.Record({
    canister_id: IDL.Principal,
    snapshot_id: Blob,
    kind: IDL.Variant({
      wasm_module: IDL.Record({ offset: IDL.Nat64, size: IDL.Nat64 }),
      wasm_memory: IDL.Record({ offset: IDL.Nat64, size: IDL.Nat64 }),
      stable_memory: IDL.Record({ offset: IDL.Nat64, size: IDL.Nat64 }),
      wasm_chunk: IDL.Record({ hash: Blob }),
    }),
  }), [IDL.Record({ chunk: Blob })]],
  upload_canister_snapshot_metadata: [IDL.Record({
    canister_id: IDL.Principal,
    replace_snapshot: IDL.Opt(Blob),
    wasm_module_size: IDL.Nat64,
    globals: IDL.Vec(Global),
    wasm_memory_size: IDL.Nat64,
    stable_memory_size: IDL.Nat64,
    certified_data: Blob,
    global_timer: GlobalTimer,
    on_low_wasm_memory_hook_status: HookStatus,
  }), [IDL.Record({ snapshot_id: Blob })]],
  upload_canister_snapshot_data: [IDL.Record({
    canister_id: IDL.Principal,
    snapshot_id: Blob,
    kind: IDL.Variant({
      wasm_module: IDL.Record({ offset: IDL.Nat64 }),
      wasm_memory: IDL.Record({ offset: IDL.Nat64 }),
      stable_memory: IDL.Record({ offset: IDL.Nat64 }),
      wasm_chunk: IDL.Null,
    }),
    chunk: Blob,
  }), []],
};

// Canic (0.1.0 .. 0.100.79) root: canic_subnet_registry : () -> (Result) query
const CanisterInfo = IDL.Record({
  pid: IDL.Principal,
  role: IDL.Text,
  parent_pid: IDL.Opt(IDL.Principal),
  module_hash: IDL.Opt(Blob),
  created_at: IDL.Nat64,
});
const RegistryEntry = IDL.Record({ pid: IDL.Principal, role: IDL.Text, record: CanisterInfo });
const CanicError = IDL.Record({
  code: IDL.Variant({
    Conflict: IDL.Null, Forbidden: IDL.Null, Internal: IDL.Null, InvalidInput: IDL.Null,
    NotFound: IDL.Null, Unauthorized: IDL.Null, Unavailable: IDL.Null,
  }),
  message: IDL.Text,
});
export const REGISTRY_RESULT = IDL.Variant({ Ok: IDL.Vec(RegistryEntry), Err: CanicError });

export { IDL };
