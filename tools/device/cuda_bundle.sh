#!/usr/bin/env bash
# Here (Debian 12): stages what tools/device/cuda_check.sh needs on the GPU machine, which has CUDA,
# cmake, ninja, a C++ compiler, PyTorch and timm but none of our Debian build dependencies:
#   STAGE/src.tar.gz   this checkout's committed tree (git archive HEAD); not with NO_SRC=1, when
#                      the device builds the working tree the call ships (cuda_check.sh: ../..)
#   STAGE/deps.tar.xz  the Debian packages' files the build needs (oneDNN, FFTW, fmt, nlohmann-json,
#                      CLI11, stb, GoogleTest, zlib headers, pkgconf), unpacked there into / without
#                      overwriting anything the machine already has
#   STAGE/base.tar.gz  with BASE=<commit>: that commit's tree, for cuda_check.sh's basebuild step (a baseline
#                      timed on the same card); without BASE, no base.tar.gz
#   STAGE/cuda_check.sh, STAGE/train_bisect.sh, STAGE/device_deps.sh (their shared unpacking of deps.tar.xz)
#   STAGE/bisect-<commit>.tar.gz  with BISECT=c1,c2,...: those commits' trees without tests/ (about 1 MB
#                      each), for train_bisect.sh; without BISECT, none
#   STAGE/fashion-mnist Debian's dataset-fashion-mnist files (30 MB, for the gputrain and curve steps), only
#                      with FMNIST=1 and when installed: with the working tree (about 27 MB) they
#                      would pass the device call's 64 MiB carry limit, so other calls leave them out
# Usage: [NO_SRC=1] [FMNIST=1] [BASE=commit] [BISECT=c1,c2] tools/device/cuda_bundle.sh STAGE   (e.g. build/cuda-device, carried to the device)
set -euo pipefail
stage=${1:?usage: cuda_bundle.sh STAGE_DIR}
cd "$(dirname "$0")/../.."
mkdir -p "$stage"
# The device call ships the working tree too; with it the 21 MB archive is redundant, and leaving it
# out (NO_SRC=1) keeps the carry under the 64 MiB limit when Fashion-MNIST is staged.
if [ "${NO_SRC:-0}" = 1 ]; then rm -f "$stage/src.tar.gz"; else git archive --format=tar.gz -o "$stage/src.tar.gz" HEAD; fi
if [ -n "${BASE:-}" ]; then
  tmpb=$(mktemp -d) && git archive --format=tar -o "$tmpb/base.tar" "$BASE" &&
    git rev-parse --short "$BASE" > "$tmpb/.base_commit" && tar -rf "$tmpb/base.tar" -C "$tmpb" .base_commit &&
    gzip -c "$tmpb/base.tar" > "$stage/base.tar.gz" && rm -rf "$tmpb"
else
  rm -f "$stage/base.tar.gz"
fi
rm -f "$stage"/bisect-*.tar.gz
for c in $(echo "${BISECT:-}" | tr , ' '); do
  git archive --format=tar.gz -o "$stage/bisect-$(git rev-parse --short "$c").tar.gz" "$c" -- . ':!tests'
done
cp tools/device/cuda_check.sh tools/device/train_bisect.sh tools/device/device_deps.sh tools/device/kernel_table.py tools/device/stack_table.py "$stage/"
if [ "${FMNIST:-0}" = 1 ] && [ -d /usr/share/datasets/fashion-mnist ] && [ ! -d "$stage/fashion-mnist" ]; then
  cp -r /usr/share/datasets/fashion-mnist "$stage/fashion-mnist"
elif [ "${FMNIST:-0}" != 1 ]; then
  rm -rf "$stage/fashion-mnist"
fi
if [ ! -f "$stage/deps.tar.xz" ]; then
  tmp=$(mktemp -d)
  for p in libdnnl-dev libdnnl2 libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev libstb-dev libstb0 libgtest-dev \
           libfftw3-dev libfftw3-single3 zlib1g-dev libpkgconf3 pkgconf-bin pkgconf ocl-icd-libopencl1 \
           opencl-c-headers ocl-icd-opencl-dev libcurl4-openssl-dev; do
    dpkg -L "$p"
  done | grep -v -E '^/usr/share/(doc|man|lintian|info)' | sort -u | while read -r f; do
    if [ -f "$f" ] || [ -L "$f" ]; then echo "${f#/}"; fi
  done | grep -v -E 'libfftw3(l|q|_|\.)' | grep -v -E '\.a$' > "$tmp/list"
  grep -E 'lib(gtest|gmock)[a-z_]*\.a$' <(dpkg -L libgtest-dev | sed 's|^/||') >> "$tmp/list"
  tar -C / -cf "$tmp/deps.tar" -T "$tmp/list"
  xz -T2 -6 -c "$tmp/deps.tar" > "$stage/deps.tar.xz"
  rm -rf "$tmp"
fi
du -sh "$stage"/*
