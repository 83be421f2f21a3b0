#!/usr/bin/env bash
# Fetches real test photos into DIR (default: $BIOMATCH_TEST_PHOTOS, else
# $HOME/.cache/biomatch/testdata/photos): the test images of the face_recognition==1.3.0 source
# package on PyPI (three photos of one person, one of another, partial faces, a 32-bit PNG).
# The package's SHA-256 is checked. Photos are never committed.
set -euo pipefail
dir="${1:-${BIOMATCH_TEST_PHOTOS:-$HOME/.cache/biomatch/testdata/photos}}"
sdist_sha="5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
[ -f "$dir/obama.jpg" ] && [ -f "$dir/biden.jpg" ] && exit 0
command -v pip3 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-test-photos: downloading face_recognition==1.3.0 (source) from PyPI"
pip3 download -q --no-deps --no-binary :all: -d "$tmp" face_recognition==1.3.0
sdist="$tmp/face_recognition-1.3.0.tar.gz"
[ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$sdist_sha" ] || { echo "fetch-test-photos: checksum mismatch" >&2; exit 1; }
mkdir -p "$dir"
tar -xzf "$sdist" -C "$tmp" face_recognition-1.3.0/tests/test_images
cp "$tmp"/face_recognition-1.3.0/tests/test_images/* "$dir/"
echo "fetch-test-photos: photos in $dir"
