# Shared by scripts/test and scripts/quickstart: install the Debian packages
# fleetsnap needs, only those missing (apt-get update first, once).
# Node.js and npm come from the machine, never from apt. clang is for the
# fuzz build alone (libFuzzer ships with it); the other builds use cc.
# restic is the off-machine store (`backup push`); rclone serves the REST
# repository the store specs push to.

FLEETSNAP_DEBIAN_PACKAGES=(
  build-essential cmake pkg-config
  lua5.4 liblua5.4-dev libssl-dev
  lua-busted lua-argparse lua-check
  groff-base
  clang
  restic rclone
)

# The packages of the list that are not installed, on one line.
fleetsnap_missing_deps() {
  local missing=() pkg
  for pkg in "${FLEETSNAP_DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  echo "${missing[*]}"
}

fleetsnap_install_deps() {
  local missing
  read -r -a missing <<<"$(fleetsnap_missing_deps)"
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# The real icp 1.5.0 (the oracle of the conformance specs), from the npm
# registry into a cache directory of the checkout, once. Its binary is
# .cache/icp/package/bin/icp.
FLEETSNAP_ICP_VERSION=1.5.0

fleetsnap_install_icp() {
  local root=$1 dir="$1/.cache/icp"
  [ -x "$dir/package/bin/icp" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: the conformance specs need the real icp from the npm registry" >&2
    return 1
  fi
  echo "== fetching @icp-sdk/icp-cli-linux-x64@$FLEETSNAP_ICP_VERSION"
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "@icp-sdk/icp-cli-linux-x64@$FLEETSNAP_ICP_VERSION" >/dev/null &&
    tar xzf "icp-sdk-icp-cli-linux-x64-$FLEETSNAP_ICP_VERSION.tgz" && rm -f ./*.tgz)
  [ -x "$dir/package/bin/icp" ]
}

# The loopback test replica's npm dependencies (tools/replica, the e2e
# specs' stand-in for the network), installed with `npm ci` from the
# committed lock into .cache/replica. The sources stay in tools/replica:
# .cache/replica/src links to them and node runs with --preserve-symlinks,
# so they resolve their packages from .cache/replica/node_modules. A second
# run with the same lock does nothing (and needs no network).
fleetsnap_install_replica() {
  local root=$1 dir="$1/.cache/replica" src="$1/tools/replica"
  if [ -d "$dir/node_modules" ] && cmp -s "$src/package-lock.json" "$dir/package-lock.json"; then
    ln -sfn "$src/src" "$dir/src"
    ln -sfn "$src/test" "$dir/test"
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: the e2e specs need the replica's packages from the npm registry" >&2
    return 1
  fi
  echo "== installing the test replica's packages (npm ci)"
  mkdir -p "$dir"
  rm -rf "$dir/node_modules"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --silent --no-audit --no-fund >/dev/null)
  ln -sfn "$src/src" "$dir/src"
  ln -sfn "$src/test" "$dir/test"
}
