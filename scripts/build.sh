#!/bin/bash
# SPDX-License-Identifier: MIT
#
# build.sh BUILD_DIR [CONFIGURE_FLAGS...]: builds ckptconv out of tree.
# Regenerates the autotools files when configure.ac or Makefile.am changed,
# configures BUILD_DIR when it is new or the flags differ, then runs make
# with one job per CPU.  Used by the README's commands, the test script and
# the container build alike.

set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: build.sh BUILD_DIR [CONFIGURE_FLAGS...]" >&2
	exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=$1
shift

cd "$REPO"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
	autoreconf -fi
fi

mkdir -p "$BUILD_DIR"
cd "$BUILD_DIR"
wanted="$*"
if [ ! -f config.status ] || [ ! -f Makefile ] || [ "$(cat .configure-flags 2>/dev/null)" != "$wanted" ]; then
	"$REPO/configure" "$@"
	echo "$wanted" >.configure-flags
fi
make -j"$(nproc)"
