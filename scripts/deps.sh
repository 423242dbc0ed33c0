#!/usr/bin/env bash
# Installs the Debian 12 packages metaformer.cpp builds and tests with (nothing else is downloaded,
# ever). Does nothing when they are all present already. Arguments name further packages.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config          # toolchain
  libdnnl-dev ocl-icd-opencl-dev            # oneDNN: CPU GEMMs and convolutions (its CMake config asks for OpenCL)
  libfftw3-dev                              # FFTs (frequency-domain mixers)
  libstb-dev                                # PNG/BMP/... decoding
  libjpeg62-turbo-dev                       # JPEG decoding (libjpeg-turbo, as Pillow)
  zlib1g-dev                                # gzip (the IDX files of Fashion-MNIST)
  libcurl4-openssl-dev                      # HTTPS downloads of pretrained weights from the Hugging Face hub
  nlohmann-json3-dev libcli11-dev libfmt-dev  # JSON, command line, formatting
  libgtest-dev libbenchmark-dev             # tests and microbenchmarks
  clang libclang-rt-14-dev libomp-dev       # libFuzzer targets (clang + sanitizer runtimes)
  dataset-fashion-mnist                     # the embedded default dataset
  pybind11-dev python3-dev                  # the Python module (import metaformer; docs/python.md)
  python3-numpy python3-pytest              # its arrays and its tests
  libopenmpi-dev openmpi-bin                # data-parallel training across processes (mpirun; docs/distributed.md)
  "$@"                                      # extra packages a caller needs (bench/run.sh: the peers)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
