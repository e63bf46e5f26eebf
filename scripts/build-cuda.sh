#!/usr/bin/env bash
# Builds naba with the `cuda` feature on a machine that has no CUDA toolkit, from NVIDIA's wheels
# on PyPI. Usage: scripts/build-cuda.sh [--release] [extra cargo args]
#
# - The toolkit comes from PyPI into a venv (NABA_CUDA_VENV, default ~/.cache/naba-cuda). The
#   versions are pinned to CUDA 13.4 because cudarc 0.19 (candle's binding) knows 13.0-13.4 and
#   refuses 13.5. `nvidia-cuda-nvcc-cu12` ships only ptxas, not nvcc; the CUDA 13 wheels split the
#   toolkit into nvcc, nvvm (cicc), crt and cccl (`nv/target`), which all have to be there.
# - The kernels are compiled for CUDA_COMPUTE_CAP (default 90, the H200 the device tool lends);
#   candle's build asks nvidia-smi otherwise, which a machine without a GPU does not have.
# - cudarc links the driver library (`-lcuda`), which comes with the GPU driver, not the toolkit.
#   Where the system has none, the final link is made against a stub that defines the driver
#   functions the build references (as the toolkit's own lib/stubs/libcuda.so does): the binary
#   then loads the real libcuda.so.1 of whatever machine runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${NABA_CUDA_VENV:-$HOME/.cache/naba-cuda}
target_dir=${CARGO_TARGET_DIR:-target/cuda}
profile=debug
for arg in "$@"; do [[ $arg == --release ]] && profile=release; done

if [[ ! -x $venv/bin/pip ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q \
  "nvidia-cuda-nvcc==13.4.92" "nvidia-nvvm==13.4.92" "nvidia-cuda-crt==13.4.92" \
  "nvidia-cuda-runtime==13.4.92" "nvidia-cuda-nvrtc==13.4.92" "nvidia-cuda-cccl==13.3.5.0.6" \
  "nvidia-cublas==13.10.0.20" "nvidia-curand==10.4.5.25"
cuda=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')

# The wheels carry versioned libraries only (libcublas.so.13); the linker wants libcublas.so.
link=$venv/link
mkdir -p "$link"
for lib in "$cuda"/lib/*.so.*; do
  name=$(basename "$lib")
  ln -sf "$lib" "$link/${name%%.so*}.so"
done

export PATH=$cuda/bin:$PATH CUDA_ROOT=$cuda CUDA_PATH=$cuda
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$link${LIBRARY_PATH:+:$LIBRARY_PATH}

build() { cargo build --locked -p naba --features cuda --target-dir "$target_dir" "$@"; }

# A machine with the GPU driver links against its libcuda.so.1 (the driver packages do not
# always install the unversioned name the linker asks for). awk reads all of ldconfig's output so
# that pipefail does not see a broken pipe.
driver=$(ldconfig -p | awk '/libcuda\.so\.1 / && !found { print $NF; found = 1 }')
if [[ -n $driver ]]; then
  ln -sf "$driver" "$link/libcuda.so"
  rm -f "$link/.stub" "$link/libcuda-stub.c"
  build "$@"
  exit
fi

# No driver here: compile everything, then make the stub from the driver functions cudarc's
# compiled library references, and link again.
if [[ ! -e $link/.stub ]]; then
  build "$@" 2>&1 | tee "$target_dir.log" || true
  grep -q 'unable to find library -lcuda' "$target_dir.log" \
    || { echo "build-cuda: the build failed before the driver link; see $target_dir.log" >&2; exit 1; }
  shopt -s nullglob
  rlibs=("$target_dir/$profile"/deps/libcudarc-*.rlib)
  (( ${#rlibs[@]} )) || { echo "build-cuda: no cudarc library under $target_dir/$profile" >&2; exit 1; }
  nm -u --format=just-symbols "${rlibs[@]}" 2>/dev/null | grep -E '^cu[A-Z]' | sort -u \
    | sed 's/.*/void &(void) {}/' > "$link/libcuda-stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c"
  touch "$link/.stub"
  echo "build-cuda: no driver on this machine; linking against a stub of $(wc -l < "$link/libcuda-stub.c") driver functions" >&2
fi
build "$@"
