#!/bin/bash
# SPDX-License-Identifier: MIT
#
# deploy_docker: no Docker engine runs here, so this test checks
# docker/Dockerfile's structure (tests/deploy_dockerfile.py, which must also
# catch each rule broken in a copy) and replays its build steps: the build
# context Docker would send (sources less .dockerignore) gets the build
# stage's own RUN commands, the binary the runtime stage copies must come
# out of them, and that binary then runs as the image would: --version, the
# daemon, and the image's HEALTHCHECK command against it.
set -u

top=${TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
dockerfile=$top/docker/Dockerfile
reader=$top/tests/deploy_dockerfile.py
passed=0
failed=0
daemon_pid=

pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); echo "not ok: $1"; }
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckptconv-docker.XXXXXX") || exit 1
cleanup() {
	[ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# ---- structure ----

if out=$(python3 "$reader" check "$dockerfile" 2>&1); then
	pass "the Dockerfile follows every rule"
else
	fail "the Dockerfile breaks rules:"
	echo "$out"
fi

# mutant NAME SED_EXPRESSION EXPECTED_FINDING
mutant() {
	local name=$1 expr=$2 expected=$3 copy=$tmp/Dockerfile.$1 out
	sed -e "$expr" "$dockerfile" >"$copy"
	if cmp -s "$dockerfile" "$copy"; then
		fail "mutant $name: '$expr' changed nothing"
		return
	fi
	if out=$(python3 "$reader" check "$copy" 2>&1); then
		fail "mutant $name: accepted"
	elif grep -qF -- "$expected" <<<"$out"; then
		pass "mutant $name: caught"
	else
		fail "mutant $name: caught without '$expected': $out"
	fi
}
mutant single-stage '/^FROM .* AS runtime/,$ d' 'not a multi-stage build'
mutant latest-base 's/^FROM debian:[^ ]* AS runtime/FROM debian:latest AS runtime/' 'is not pinned to a Debian 12 version tag'
mutant untagged-base 's/^FROM debian:[^ ]* AS build/FROM debian AS build/' 'is not pinned to a Debian 12 version tag'
mutant other-release 's/^FROM debian:12[^ ]* AS build/FROM debian:11.11-slim AS build/' 'is not pinned to a Debian 12 version tag'
mutant root-user 's/^USER .*/USER root/' 'is root'
mutant no-user '/^USER /d' 'sets no USER'
mutant curl-healthcheck 's/CMD \["ckptconv", "healthcheck"\]/CMD curl -f http:\/\/127.0.0.1:8080\/healthz/' \
	'HEALTHCHECK is not CMD'
mutant curl-installed 's|install-deps.sh runtime \\|install-deps.sh runtime \&\& apt-get install -y curl \\|' \
	'installs or runs curl/wget'
mutant no-expose '/^EXPOSE /d' 'does not EXPOSE 8080'
mutant other-signal 's/^STOPSIGNAL .*/STOPSIGNAL SIGKILL/' 'STOPSIGNAL is not SIGTERM'
mutant no-volume '/^VOLUME /d' 'no VOLUME for the state dir'
mutant loopback-listen 's/CKPTCONV_LISTEN=0.0.0.0:8080/CKPTCONV_LISTEN=127.0.0.1:8080/' \
	'ENV CKPTCONV_LISTEN is not 0.0.0.0:8080'
mutant baked-credentials 's/^ENV CKPTCONV_LISTEN=/ENV AWS_SECRET_ACCESS_KEY=abc CKPTCONV_LISTEN=/' 'ENV names a secret'
mutant copied-env-file 's|^COPY . .$|COPY . .\nCOPY systemd/ckptconv.env /etc/ckptconv.env|' \
	'copies a secret or environment file'
mutant no-runtime-deps 's/install-deps.sh runtime/install-deps.sh build/' \
	'does not run scripts/install-deps.sh runtime'
mutant no-build-script 's|scripts/build.sh|./configure \&\& make #|' 'does not run scripts/build.sh'
mutant shell-entrypoint 's/^ENTRYPOINT .*/ENTRYPOINT ckptconv/' 'ENTRYPOINT is not'

# ---- the packages each stage installs ----

deps=$top/scripts/install-deps.sh
if [ -x "$deps" ]; then
	pass "scripts/install-deps.sh is executable"
	for mode in $(python3 "$reader" show "$dockerfile" install-deps-modes); do
		if grep -Eq "^[[:space:]]*\(?[a-z|]*\b$mode\b[a-z|]*\)" "$deps"; then
			pass "scripts/install-deps.sh has the '$mode' mode the Dockerfile uses"
		else
			fail "scripts/install-deps.sh has no '$mode' mode"
		fi
	done
else
	fail "scripts/install-deps.sh is missing or not executable"
fi

# ---- replay the build stage ----

context=$tmp/context
python3 "$reader" context "$top" "$context" || fail "copying the build context"
for required in configure.ac Makefile.am scripts/build.sh scripts/install-deps.sh src/main.c; do
	[ -e "$context/$required" ] || fail ".dockerignore leaves $required out of the build context"
done

# The build stage's ARG defaults are container paths; here they move into
# the temporary directory, as the image's /build and /out.
declare -A arg_default
while IFS='=' read -r key value; do
	[ -n "$key" ] && arg_default[$key]=$value
done < <(python3 "$reader" show "$dockerfile" build-args)
stage_dir=$tmp/stage
build_env=(BUILD_DIR="$tmp/build" STAGE_DIR="$stage_dir")
built=1
while IFS= read -r -d '' run; do
	echo "replaying: RUN $run"
	if (cd "$context" && unset MAKEFLAGS MFLAGS MAKELEVEL &&
		env "${build_env[@]}" /bin/sh -c "$run") >"$tmp/build.log" 2>&1; then
		pass "build step ran: ${run:0:60}..."
	else
		fail "build step failed: $run"
		tail -n 30 "$tmp/build.log"
		built=
	fi
done < <(python3 "$reader" show "$dockerfile" build-runs; printf '\0')
[ -n "$built" ] || finish

read -r copy_source copy_target < <(python3 "$reader" show "$dockerfile" binary-copy)
stage_default=${arg_default[STAGE_DIR]:-/out}
binary=$stage_dir${copy_source#"$stage_default"}
if [ -x "$binary" ]; then
	pass "the build stage produces $copy_source for COPY --from (installed as $copy_target)"
else
	fail "the build stage did not produce $copy_source (looked for $binary)"
	finish
fi
if missing=$(ldd "$binary" | grep 'not found'); then
	fail "the binary needs libraries that are not installed: $missing"
else
	pass "every shared library the binary needs resolves"
fi

# Each library the binary links must come from a package the runtime stage
# installs (or from libc6, which the base image has).
runtime_packages=" libc6 $(sed -n 's/^RUNTIME_PACKAGES=(\(.*\))$/\1/p' "$deps") "
uncovered=
for lib in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
	path=$(ldd "$binary" | awk -v lib="$lib" '$1 == lib { print $3 }')
	package=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null)
	package=${package%%:*}
	case $runtime_packages in
	*" $package "*) ;;
	*) uncovered="$uncovered $lib(${package:-no package})" ;;
	esac
done
if [ -z "$uncovered" ]; then
	pass "the runtime stage's packages provide every library the binary links"
else
	fail "libraries the runtime stage does not install:$uncovered"
fi
# https endpoints (AWS itself) need the CA certificates, which libcurl only
# recommends, and recommends are not installed.
case $runtime_packages in
*" ca-certificates "*) pass "the runtime stage installs ca-certificates for https endpoints" ;;
*) fail "the runtime stage does not install ca-certificates: https to AWS S3 would fail" ;;
esac

# ---- run it as the image does ----

version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' "$top/configure.ac")
if out=$("$binary" --version 2>&1) && grep -qF "$version" <<<"$out"; then
	pass "ckptconv --version prints $version"
else
	fail "ckptconv --version: '$out' (expected $version)"
fi

# The image's environment, with the daemon on loopback and a free port, and
# the healthcheck run exactly as the image runs it (CKPTCONV_LISTEN on the
# wildcard address, as inside the container).
mapfile -t image_env < <(python3 "$reader" show "$dockerfile" env)
mapfile -t health < <(python3 "$reader" show "$dockerfile" healthcheck)
health[0]=$binary
mkdir -p "$tmp/state" "$tmp/scratch"
(
	cd "$tmp/state" || exit 1
	exec env -i PATH=/usr/bin:/bin "${image_env[@]}" CKPTCONV_LISTEN="127.0.0.1:0" \
		CKPTCONV_STATE_DIR="$tmp/state" TMPDIR="$tmp/scratch" "$binary" serve
) >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
# The daemon picks a free port and logs it.
port=
for _ in $(seq 300); do
	port=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$tmp/daemon.log" | head -n 1 | cut -d: -f2)
	[ -n "$port" ] && break
	kill -0 "$daemon_pid" 2>/dev/null || break
	sleep 0.1
done
[ -n "$port" ] || port=1 # nothing listens there: the checks below fail and say so
healthy=
for _ in $(seq 300); do
	if env -i PATH=/usr/bin:/bin "${image_env[@]}" CKPTCONV_LISTEN="0.0.0.0:$port" "${health[@]}" 2>/dev/null; then
		healthy=1
		break
	fi
	kill -0 "$daemon_pid" 2>/dev/null || break
	sleep 0.1
done
if [ -n "$healthy" ]; then
	pass "the image's HEALTHCHECK command passes against the running daemon"
else
	fail "the image's HEALTHCHECK never passed; daemon log:"
	tail -n 20 "$tmp/daemon.log"
fi
if kill -0 "$daemon_pid" 2>/dev/null; then
	kill -TERM "$daemon_pid" # the image's STOPSIGNAL
	for _ in $(seq 300); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$daemon_pid" 2>/dev/null; then
		fail "the daemon did not exit within 30 s of SIGTERM"
	else
		wait "$daemon_pid"
		rc=$?
		daemon_pid=
		[ "$rc" -eq 0 ] && pass "SIGTERM: the daemon exits 0" || fail "SIGTERM: the daemon exited $rc"
	fi
fi
if out=$(env -i PATH=/usr/bin:/bin "${image_env[@]}" CKPTCONV_LISTEN="0.0.0.0:$port" "${health[@]}" 2>&1); then
	fail "the HEALTHCHECK passed with no daemon running"
elif grep -q '^ckptconv: unhealthy: ' <<<"$out"; then
	pass "with the daemon stopped the HEALTHCHECK fails: $out"
else
	fail "with the daemon stopped the HEALTHCHECK failed without a reason line: $out"
fi

finish
