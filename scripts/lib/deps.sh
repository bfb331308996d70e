# Shared by scripts/test and scripts/quickstart: install the Debian packages
# fleetsnap needs, only those missing (apt-get update first, once).
# Node.js and npm come from the machine, never from apt.

FLEETSNAP_DEBIAN_PACKAGES=(
  build-essential cmake pkg-config
  lua5.4 liblua5.4-dev libssl-dev
  lua-busted lua-argparse lua-check
)

fleetsnap_install_deps() {
  local missing=() pkg
  for pkg in "${FLEETSNAP_DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}
