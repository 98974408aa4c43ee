#!/bin/bash
# SPDX-License-Identifier: MIT
#
# demo.sh: ckptconv's main job on a fresh Debian 12 machine.  Installs the
# build dependencies, builds, writes a synthetic Ling-mini-2.0-sized
# checkpoint (2 layers, 256 experts, about 1.7 GB) into a temporary
# directory, converts it to NeMo Automodel's native layout and back with
# progress shown, verifies the round trip is bit-identical, and removes the
# temporary files.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${CKPTCONV_BUILD_DIR:-$REPO/build}
cd "$REPO"

bash scripts/install-deps.sh build
bash scripts/build.sh "$BUILD_DIR"
CKPTCONV=$BUILD_DIR/ckptconv

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ckptconv-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n==> %s\n' "$*"; }

step "ckptconv fixture --preset mini --layers 2 $WORK/hf"
"$CKPTCONV" fixture --preset mini --layers 2 "$WORK/hf"
"$CKPTCONV" inspect "$WORK/hf"

step "ckptconv convert --to native $WORK/hf $WORK/native"
"$CKPTCONV" convert --to native "$WORK/hf" "$WORK/native"
"$CKPTCONV" inspect "$WORK/native"

step "ckptconv convert --to hf $WORK/native $WORK/hf-back"
"$CKPTCONV" convert --to hf "$WORK/native" "$WORK/hf-back"

step "ckptconv verify $WORK/hf $WORK/hf-back"
"$CKPTCONV" verify "$WORK/hf" "$WORK/hf-back"

step "done: HF -> native -> HF is bit-identical"
