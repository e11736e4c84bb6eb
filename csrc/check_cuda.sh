#!/usr/bin/env bash
# Compile-check every CUDA source of the engine with nvcc (sm_80 and sm_90), against the installed torch's headers
# and with the nvcc flags torch's extension build adds (half/bfloat16 operators off, relaxed constexpr).
# Usage: csrc/check_cuda.sh [python]   (default python: `python`; NVCC overrides /usr/local/cuda/bin/nvcc)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${1:-python}"
NVCC="${NVCC:-/usr/local/cuda/bin/nvcc}"
# The standard setup.py builds with (torch 2.13's default, C++20; its headers warn under C++17, which also
# compiles: PAIRLOSS_CUDA_STD=c++17).
STD="${PAIRLOSS_CUDA_STD:-c++20}"
includes=()
while IFS= read -r dir; do includes+=("-I$dir"); done < <(
  "$PYTHON" -c 'import sysconfig, torch.utils.cpp_extension as c; print(*c.include_paths(), sysconfig.get_paths()["include"], sep="\n")'
)
torch_flags=()
while IFS= read -r flag; do torch_flags+=("$flag"); done < <(
  "$PYTHON" -c 'import torch.utils.cpp_extension as c; print(*c.COMMON_NVCC_FLAGS, sep="\n")'
)
# A CPU build of torch ships the CUDA headers without the one CMake generates: stand in for it when missing.
shim="$(mktemp -d)"
trap 'rm -rf "$shim"' EXIT
macros=c10/cuda/impl/cuda_cmake_macros.h
if [ ! -f "${includes[0]#-I}/$macros" ]; then
  mkdir -p "$shim/$(dirname $macros)"
  echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$shim/$macros"
  includes+=("-I$shim")
fi
status=0
for source in cuda/*.cu; do
  echo "nvcc $source"
  if ! "$NVCC" -std="$STD" -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -DPAIRLOSS_WITH_CUDA -DTORCH_EXTENSION_NAME=_C "${torch_flags[@]}" -Xcompiler -fPIC "${includes[@]}" \
      -c "$source" -o /dev/null; then
    status=1
  fi
done
exit $status
