#!/bin/bash
# SPDX-License-Identifier: MIT
#
# install-deps.sh [build|runtime|demo|test]...: installs what ckptconv needs on
# Debian 12, and nothing that is already there (so it is quick and safe to
# run again).  build: compiler, autotools and the -dev libraries; runtime:
# the shared libraries alone (container runtime stage); demo: build plus
# curl and Python for scripts/demo.sh; test: build plus
# the tools the test suite drives (Python, AWS CLI and botocore, wrk,
# systemd-analyze, Chromium for the jobs page, promtool (package prometheus)
# for the alerting rules, clang with libFuzzer for scripts/fuzz.sh, Node.js
# and the npm test tools of tests/package.json,
# installed outside the source tree in $CKPTCONV_NPM_DIR, default
# /var/cache/ckptconv-test-npm; scripts/test.sh puts its node_modules/.bin
# on PATH and exports CKPTCONV_NPM_DIR for the tests).  Default: build.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NPM_DIR=${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}

BUILD_PACKAGES=(build-essential autoconf automake libtool pkg-config libjansson-dev
	libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libexpat1-dev check)
RUNTIME_PACKAGES=(libjansson4 libmicrohttpd12 libcurl4 libssl3 libexpat1 ca-certificates)
TEST_PACKAGES=(python3 time awscli python3-botocore wrk systemd iproute2 curl procps
	util-linux coreutils openssl chromium prometheus clang libclang-rt-14-dev)

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		echo "install-deps: need root (or sudo) to run: $*" >&2
		exit 1
	fi
}

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# apt_install PACKAGE...: installs the missing ones, updating the package
# lists first (once) when something is missing.
APT_UPDATED=no
apt_install() {
	local missing=() p
	for p in "$@"; do
		installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	if [ "$APT_UPDATED" = no ]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
		APT_UPDATED=yes
	fi
	echo "install-deps: installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${missing[@]}"
}

# The npm tools, pinned by tests/package.json, reinstalled only when it
# changes.
npm_tools() {
	local stamp="$NPM_DIR/.package.json.installed"
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		apt_install nodejs npm
	fi
	as_root mkdir -p "$NPM_DIR"
	if [ -d "$NPM_DIR/node_modules" ] && cmp -s "$REPO/tests/package.json" "$stamp"; then
		return 0
	fi
	as_root cp "$REPO/tests/package.json" "$NPM_DIR/package.json"
	echo "install-deps: npm install in $NPM_DIR"
	(cd "$NPM_DIR" && as_root npm install --no-audit --no-fund --loglevel=error)
	as_root cp "$REPO/tests/package.json" "$stamp"
}

main() {
	local set
	[ $# -gt 0 ] || set -- build
	for set in "$@"; do
		case "$set" in
		build) apt_install "${BUILD_PACKAGES[@]}" ;;
		runtime) apt_install "${RUNTIME_PACKAGES[@]}" ;;
		demo) apt_install "${BUILD_PACKAGES[@]}" curl python3 ;;
		test)
			apt_install "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
			npm_tools
			echo "install-deps: npm tools in $NPM_DIR/node_modules/.bin"
			;;
		*)
			echo "usage: install-deps.sh [build|runtime|demo|test]..." >&2
			exit 2
			;;
		esac
	done
}

main "$@"
