#!/bin/bash
# Packs `etch bench cuda` for a GPU machine that has Python, numpy and (optionally) PyTorch
# but neither etch's venv nor TVM's compiler: the cases built here (nvcc, no GPU needed),
# TVM's runtime-only subset (no libtvm_compiler.so), a tvm-ffi wheel for that machine's
# Python, and libcudart. On the GPU machine, from the repository root: bash DIR/run.sh
#
# usage: benchmarks/cuda_bundle.sh DIR [PYTHON_VERSION=3.12] [ARCH=sm_90] [CASE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: benchmarks/cuda_bundle.sh DIR [PYTHON_VERSION] [ARCH] [CASE ...]}
py=${2:-3.12}
arch=${3:-sm_90}
shift $(( $# < 3 ? $# : 3 ))
venv=.venv
site=$($venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$dir/lib"
$venv/bin/etch bench cuda --cuda-build "$dir/cases" --cuda-arch "$arch" \
    ${1:+--cuda-cases "$@"} --out-dir "$dir"
tar czf "$dir/tvm_rt.tgz" -C "$site" --exclude=tvm/3rdparty \
    --exclude=tvm/lib/libtvm_compiler.so --exclude=__pycache__ tvm
ffi=$($venv/bin/python -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))')
tag=cp${py/./}
$venv/bin/pip download -q --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$dir" "apache-tvm-ffi==$ffi"
cudart=$(ldd "$site/tvm/lib/libtvm_runtime_cuda.so" | awk '/libcudart/ {print $3}')
[ -n "$cudart" ] && cp -L "$cudart" "$dir/lib/"
cat > "$dir/run.sh" <<EOF
#!/bin/bash
# etch bench cuda --cuda-from: run from the repository root on the GPU machine.
set -eu
here=\$(cd "\$(dirname "\$0")" && pwd)
site=\${TMPDIR:-/tmp}/etch-tvm-runtime
mkdir -p "\$site"
python3 -m pip install -q --no-index --no-deps --no-compile --target "\$site" \
    "\$here"/apache_tvm_ffi-*-$tag-*.whl
tar xzf "\$here/tvm_rt.tgz" -C "\$site"
export PYTHONPATH=\$site:\$PWD TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=\$here/lib:\${LD_LIBRARY_PATH:-}
python3 -m benchmarks.bench_cuda --cuda-from "\$here/cases" --out-dir "\${OUT:-\$here}" "\$@"
EOF
chmod +x "$dir/run.sh"
du -sh "$dir"
