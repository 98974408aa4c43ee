#!/bin/bash
# SPDX-License-Identifier: MIT
#
# deploy_systemd: `make install` into a temporary DESTDIR must install the
# binary, the unit (with this build's paths) and the default environment
# file; the installed unit must pass `systemd-analyze verify` and carry
# every hardening and lifecycle directive the service needs (a copy with one
# directive broken must be caught); the environment file must name every
# setting; and the installed daemon, run as systemd runs it, must send
# READY=1 on $NOTIFY_SOCKET only once it answers HTTP.
set -u

top=${TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
binary_built=${CKPTCONV:-$PWD/ckptconv}
builddir=$(cd "$(dirname "$binary_built")" && pwd)
passed=0
failed=0
daemon_pid=
receiver_pid=

pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); echo "not ok: $1"; }
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckptconv-systemd.XXXXXX") || exit 1
cleanup() {
	[ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null
	[ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# ---- make install ----

root=$tmp/root
if (unset MAKEFLAGS MFLAGS MAKELEVEL; make -s -C "$builddir" install DESTDIR="$root") >"$tmp/install.log" 2>&1; then
	pass "make install DESTDIR=..."
else
	fail "make install failed:"
	tail -n 20 "$tmp/install.log"
	finish
fi

installed_binary=$(find "$root" -path '*/bin/ckptconv' -type f -perm -u+x | head -n 1)
installed_unit=$(find "$root" -path '*/systemd/system/ckptconv.service' -type f | head -n 1)
installed_env=$(find "$root" -path '*/ckptconv/ckptconv.env' -type f | head -n 1)
[ -n "$installed_binary" ] && pass "installs the binary ${installed_binary#"$root"}" || fail "no bin/ckptconv installed"
[ -n "$installed_unit" ] && pass "installs the unit ${installed_unit#"$root"}" || fail "no systemd/system/ckptconv.service installed"
[ -n "$installed_env" ] && pass "installs the environment file ${installed_env#"$root"}" ||
	fail "no ckptconv/ckptconv.env installed"
[ -n "$installed_binary" ] && [ -n "$installed_unit" ] && [ -n "$installed_env" ] || finish

if [ "$(stat -c %a "$installed_env")" = 600 ]; then
	pass "the environment file is mode 600 (it may hold credentials)"
else
	fail "the environment file is mode $(stat -c %a "$installed_env"), not 600"
fi

# ---- the unit's directives ----

# Value of the last assignment of KEY in FILE ("" if assigned empty), or
# the word UNSET when there is none.
unit_value() {
	awk -v key="$2" '
		/^[ \t]*[#;]/ { next }
		{ line = $0; sub(/^[ \t]+/, "", line) }
		index(line, key "=") == 1 { value = substr(line, length(key) + 2); found = 1 }
		END { if (found) print value; else print "UNSET" }' "$1"
}

seconds_of() {
	case $1 in
	*min) echo $((${1%min} * 60)) ;;
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*[!0-9]* | "") echo -1 ;;
	*) echo "$1" ;;
	esac
}

# The shutdown timeout the environment file sets, or the daemon's default.
shutdown_timeout() {
	local value
	value=$(sed -n 's/^CKPTCONV_SHUTDOWN_TIMEOUT=//p' "$1" | tail -n 1)
	echo "${value:-25}"
}

# Prints one line per directive missing or wrong in unit file $1; $2 is the
# environment file whose shutdown timeout TimeoutStopSec= must exceed.
unit_findings() {
	local unit=$1 v stop timeout
	expect() { [ "$(unit_value "$unit" "$1")" = "$2" ] || echo "$1= is not $2"; }
	expect_one_of() {
		local key=$1 value
		value=$(unit_value "$unit" "$key")
		shift
		for ok in "$@"; do [ "$value" = "$ok" ] && return; done
		echo "$key= is '$value', not one of: $*"
	}
	expect Type notify
	if [ "$(unit_value "$unit" DynamicUser)" != yes ]; then
		v=$(unit_value "$unit" User)
		case $v in UNSET | "" | root | 0) echo "neither DynamicUser=yes nor an unprivileged User=" ;; esac
	fi
	expect StateDirectory ckptconv
	expect ProtectSystem strict
	expect_one_of ProtectHome yes true read-only tmpfs
	expect_one_of PrivateTmp yes true
	expect_one_of NoNewPrivileges yes true
	expect CapabilityBoundingSet ""
	v=$(unit_value "$unit" RestrictAddressFamilies)
	case $v in
	UNSET | "" | "~"* | none) echo "RestrictAddressFamilies= does not list the allowed families" ;;
	*AF_PACKET* | *AF_NETLINK*) echo "RestrictAddressFamilies= allows more than the daemon uses: $v" ;;
	*AF_INET*) ;;
	*) echo "RestrictAddressFamilies= lacks AF_INET" ;;
	esac
	grep -Eq '^SystemCallFilter=@system-service([[:space:]]|$)' "$unit" || echo "SystemCallFilter=@system-service missing"
	expect_one_of MemoryDenyWriteExecute yes true
	v=$(unit_value "$unit" LimitNOFILE)
	[[ $v =~ ^[0-9]+$ ]] && [ "$v" -ge 4096 ] || echo "LimitNOFILE= is '$v', not a number >= 4096"
	v=$(unit_value "$unit" ReadWritePaths)
	case $v in UNSET | "") echo "ReadWritePaths= missing" ;; esac
	expect Restart on-failure
	timeout=$(shutdown_timeout "$2")
	stop=$(seconds_of "$(unit_value "$unit" TimeoutStopSec)")
	[ "$stop" -gt "$timeout" ] || echo "TimeoutStopSec= ($stop s) is not above the shutdown timeout ($timeout s)"
	v=$(unit_value "$unit" EnvironmentFile)
	case $v in UNSET | "" | "-") echo "EnvironmentFile= missing" ;; esac
	v=$(unit_value "$unit" ExecStart)
	case $v in /*/ckptconv\ serve | /*/ckptconv\ serve\ *) ;; *) echo "ExecStart= does not run ckptconv serve: $v" ;; esac
	expect WantedBy multi-user.target
}

findings=$(unit_findings "$installed_unit" "$installed_env")
if [ -z "$findings" ]; then
	pass "the unit carries every required directive"
else
	fail "the unit lacks required directives:"
	echo "$findings"
fi

# Each broken directive must be caught.
mutant() {
	local name=$1 expr=$2 expected=$3 copy=$tmp/mutant.service out
	sed -e "$expr" "$installed_unit" >"$copy"
	if cmp -s "$installed_unit" "$copy"; then
		fail "mutant $name: '$expr' changed nothing"
		return
	fi
	out=$(unit_findings "$copy" "$installed_env")
	if grep -qF -- "$expected" <<<"$out"; then
		pass "mutant $name: caught"
	else
		fail "mutant $name: not caught (wanted '$expected', got '$out')"
	fi
}
mutant simple-type 's/^Type=notify/Type=simple/' 'Type= is not notify'
mutant root-user 's/^DynamicUser=yes/DynamicUser=no/; s/^User=.*/User=root/' 'neither DynamicUser=yes'
mutant no-state-dir '/^StateDirectory=/d' 'StateDirectory= is not ckptconv'
mutant full-system 's/^ProtectSystem=strict/ProtectSystem=full/' 'ProtectSystem= is not strict'
mutant home-visible 's/^ProtectHome=.*/ProtectHome=no/' 'ProtectHome='
mutant shared-tmp '/^PrivateTmp=/d' 'PrivateTmp='
mutant new-privileges 's/^NoNewPrivileges=.*/NoNewPrivileges=no/' 'NoNewPrivileges='
mutant capabilities 's/^CapabilityBoundingSet=$/CapabilityBoundingSet=CAP_NET_BIND_SERVICE/' 'CapabilityBoundingSet= is not'
mutant any-family 's/^RestrictAddressFamilies=.*/RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_PACKET/' \
	'RestrictAddressFamilies= allows more'
mutant no-syscall-filter '/^SystemCallFilter=@system-service/d' 'SystemCallFilter=@system-service missing'
mutant wx-memory '/^MemoryDenyWriteExecute=/d' 'MemoryDenyWriteExecute='
mutant few-files 's/^LimitNOFILE=.*/LimitNOFILE=1024/' 'LimitNOFILE='
mutant no-data-roots '/^ReadWritePaths=/d' 'ReadWritePaths= missing'
mutant always-restart 's/^Restart=on-failure/Restart=always/' 'Restart= is not on-failure'
mutant short-stop 's/^TimeoutStopSec=.*/TimeoutStopSec=20s/' 'TimeoutStopSec= (20 s) is not above'
mutant no-env-file '/^EnvironmentFile=/d' 'EnvironmentFile= missing'
mutant not-serve 's/ckptconv serve$/ckptconv convert/' 'ExecStart= does not run ckptconv serve'

# A longer shutdown timeout in the environment file needs a longer stop timeout.
sed 's/^#CKPTCONV_SHUTDOWN_TIMEOUT=.*/CKPTCONV_SHUTDOWN_TIMEOUT=90/' "$installed_env" >"$tmp/long.env"
if grep -qF 'is not above the shutdown timeout (90 s)' <<<"$(unit_findings "$installed_unit" "$tmp/long.env")"; then
	pass "TimeoutStopSec= is checked against the environment file's shutdown timeout"
else
	fail "a 90 s shutdown timeout in the environment file went unnoticed"
fi

# ---- the installed paths agree ----

exec_path=$(unit_value "$installed_unit" ExecStart)
exec_path=${exec_path%% *}
if [ "$root$exec_path" = "$installed_binary" ]; then
	pass "ExecStart= names the installed binary $exec_path"
else
	fail "ExecStart= names $exec_path, but the binary was installed as ${installed_binary#"$root"}"
fi
env_path=$(unit_value "$installed_unit" EnvironmentFile)
env_path=${env_path#-}
if [ "$root$env_path" = "$installed_env" ]; then
	pass "EnvironmentFile= names the installed file $env_path"
else
	fail "EnvironmentFile= names $env_path, but the file was installed as ${installed_env#"$root"}"
fi

# ---- systemd-analyze verify ----

# verify needs ExecStart's binary to exist: point a copy of the unit at the
# binary installed under DESTDIR.
mkdir -p "$tmp/unit"
sed -e "s|^ExecStart=$exec_path|ExecStart=$installed_binary|" \
	-e "s|^EnvironmentFile=-$env_path|EnvironmentFile=-$installed_env|" "$installed_unit" >"$tmp/unit/ckptconv.service"
if ! command -v systemd-analyze >/dev/null; then
	fail "systemd-analyze is not installed (Debian package systemd)"
else
	out=$(systemd-analyze verify --man=no "$tmp/unit/ckptconv.service" 2>&1)
	rc=$?
	complaints=$(grep -F 'ckptconv.service' <<<"$out")
	if [ "$rc" -eq 0 ] && [ -z "$complaints" ]; then
		pass "systemd-analyze verify accepts the unit"
	else
		fail "systemd-analyze verify (exit $rc):"
		echo "$out"
	fi
	# ... and it does notice a broken unit, so the pass above means something.
	sed 's/^ProtectSystem=strict/ProtectSystem=sometimes/' "$tmp/unit/ckptconv.service" >"$tmp/unit/broken.service"
	if out=$(systemd-analyze verify --man=no "$tmp/unit/broken.service" 2>&1) && ! grep -qF broken.service <<<"$out"; then
		fail "systemd-analyze verify did not notice ProtectSystem=sometimes"
	else
		pass "systemd-analyze verify notices a broken directive"
	fi
fi

# ---- the environment file names every setting ----

settings="CKPTCONV_LISTEN CKPTCONV_WORKERS CKPTCONV_MAX_RUNNING CKPTCONV_MAX_QUEUED CKPTCONV_STATE_DIR
CKPTCONV_ALLOW_ROOT CKPTCONV_TOKEN_FILE CKPTCONV_SHUTDOWN_TIMEOUT CKPTCONV_JOB_RETENTION CKPTCONV_ALLOW_S3
CKPTCONV_ALLOW_S3_ENDPOINT CKPTCONV_S3_ADDRESSING_STYLE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_SESSION_TOKEN AWS_REGION AWS_DEFAULT_REGION AWS_ENDPOINT_URL_S3 AWS_ENDPOINT_URL AWS_CA_BUNDLE"
# ... and every variable the sources read.
settings="$settings $(grep -ohE '"(CKPTCONV|AWS)_[A-Z0-9_]+"' "$top"/src/*.c "$top"/src/*/*.c 2>/dev/null | tr -d '"' | sort -u)"
missing=
for name in $(tr ' ' '\n' <<<"$settings" | sort -u); do
	grep -Eq "^#?$name=" "$installed_env" || missing="$missing $name"
done
if [ -z "$missing" ]; then
	pass "the environment file names every CKPTCONV_* and AWS_* setting"
else
	fail "the environment file lacks:$missing"
fi
# docs/operations.md documents the same settings and every flag of serve.
missing=
for name in $(tr ' ' '\n' <<<"$settings" | sort -u); do
	grep -qF "\`$name\`" "$top/docs/operations.md" || missing="$missing $name"
done
for flag in $("$installed_binary" serve --help 2>&1 | grep -oE '^ +--[a-z0-9-]+' | sort -u); do
	grep -qF -- "\`$flag" "$top/docs/operations.md" || missing="$missing $flag"
done
if [ -z "$missing" ]; then
	pass "docs/operations.md documents every setting and every flag of serve"
else
	fail "docs/operations.md lacks:$missing"
fi
if grep -Eq '^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)=.' "$installed_env"; then
	fail "the default environment file sets a credential"
else
	pass "the default environment file sets no credential"
fi

# ---- Type=notify: READY=1 once listening ----

# Receives sd_notify datagrams on a socket path and prints each on a line.
cat >"$tmp/receiver.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    print(s.recv(4096).decode().replace("\n", " "), flush=True)
EOF
python3 "$tmp/receiver.py" "$tmp/notify.sock" >"$tmp/notify.log" 2>&1 &
receiver_pid=$!
for _ in $(seq 100); do grep -q bound "$tmp/notify.log" && break; sleep 0.1; done
mkdir -p "$tmp/state"
(
	cd "$tmp" || exit 1
	exec env -i PATH=/usr/bin:/bin NOTIFY_SOCKET="$tmp/notify.sock" CKPTCONV_STATE_DIR="$tmp/state" \
		CKPTCONV_LISTEN="127.0.0.1:0" "$installed_binary" serve
) >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
ready=
for _ in $(seq 300); do
	if grep -q 'READY=1' "$tmp/notify.log"; then
		ready=1
		break
	fi
	kill -0 "$daemon_pid" 2>/dev/null || break
	sleep 0.1
done
if [ -n "$ready" ]; then
	pass "the daemon sends READY=1 on \$NOTIFY_SOCKET"
	port=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$tmp/daemon.log" | head -n 1 | cut -d: -f2)
	if [ -z "$port" ]; then
		fail "the daemon did not log the address it listens on"
	elif "$installed_binary" healthcheck --url "http://127.0.0.1:$port/healthz" --timeout 5; then
		pass "after READY=1 the daemon answers /healthz"
	else
		fail "READY=1 came before the daemon answered /healthz"
	fi
else
	fail "no READY=1 within 30 s; daemon log:"
	tail -n 20 "$tmp/daemon.log"
fi
if kill -0 "$daemon_pid" 2>/dev/null; then
	kill -TERM "$daemon_pid"
	for _ in $(seq 300); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$daemon_pid" 2>/dev/null; then
		fail "the daemon did not exit within 30 s of SIGTERM"
	else
		wait "$daemon_pid"
		rc=$?
		daemon_pid=
		[ "$rc" -eq 0 ] && pass "SIGTERM: the daemon exits 0" || fail "SIGTERM: the daemon exited $rc"
		if grep -q 'STOPPING=1' "$tmp/notify.log"; then
			pass "SIGTERM: the daemon tells systemd STOPPING=1"
		else
			fail "SIGTERM: no STOPPING=1 on \$NOTIFY_SOCKET"
		fi
	fi
fi

finish
