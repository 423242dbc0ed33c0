#!/usr/bin/env bash
# Packs a `metaformer` binary built for a generic x86-64-v3 CPU, with the Debian libraries it links,
# into .devbin/ (git-ignored) so that it runs on the GPU machine, which has no Debian packages.
# Build first:  cmake -S . -B build-device -DMETAFORMER_NATIVE=OFF -DMETAFORMER_TESTS=OFF \
#                 -DCMAKE_CXX_FLAGS=-march=x86-64-v3 && cmake --build build-device --target metaformer
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .devbin && mkdir -p .devbin/lib
cp build-device/metaformer .devbin/
for lib in libdnnl.so.2 libfmt.so.9 libstb.so.0 libgomp.so.1 libOpenCL.so.1 libz.so.1 libfftw3f.so.3; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" .devbin/lib/
done
xz -T2 -6 .devbin/lib/libdnnl.so.2
du -sh .devbin
