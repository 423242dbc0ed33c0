#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds tests/consumer against it both ways a user
# would: find_package(metaformer) from CMake, and pkg-config with a plain compiler. Runs both.
# Usage: run.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
test -f "$work/prefix/include/metaformer.h"
test -x "$work/prefix/bin/metaformer"
libdir=$(dirname "$(find "$work/prefix" -name 'libmetaformer.so' | head -1)")

cmake -S "$here" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/cmake-build" > "$work/build.log"
"$work/cmake-build/consumer"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c99 -o "$work/consumer-pc" "$here/main.c" $(pkg-config --cflags --libs metaformer) -lm -Wl,-rpath,"$libdir"
"$work/consumer-pc"
