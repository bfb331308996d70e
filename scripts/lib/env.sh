# Shared by the scripts: where the build is and the Lua paths that make
# `require "fleetsnap"` and `require "fleetsnap.engine"` work from the tree.
FLEETSNAP_SOURCE=${FLEETSNAP_SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FLEETSNAP_BUILD=${FLEETSNAP_BUILD:-$FLEETSNAP_SOURCE/build}
export FLEETSNAP_SOURCE FLEETSNAP_BUILD
export LUA_PATH="$FLEETSNAP_SOURCE/lua/?.lua;$FLEETSNAP_SOURCE/lua/?/init.lua;;"
export LUA_CPATH="$FLEETSNAP_BUILD/lib/?.so;;"

fleetsnap_require_build() {
  if [ ! -f "$FLEETSNAP_BUILD/lib/fleetsnap/engine.so" ]; then
    echo "building the engine in $FLEETSNAP_BUILD" >&2
    cmake -S "$FLEETSNAP_SOURCE" -B "$FLEETSNAP_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$FLEETSNAP_BUILD" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
  fi
}
