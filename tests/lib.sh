# SPDX-License-Identifier: MIT
#
# lib.sh: helpers shared by the integration scripts (sourced, not run).  A
# private temporary directory removed on exit, pass/fail counting with a
# closing "N passed, N failed" line, assertions on exit codes and error
# codes, and a small stdlib-only Python helper (st.py) that reads, digests
# and rewrites safetensors files independently of ckptconv.
#
# The Makefile exports CKPTCONV (the binary), GOLDEN_DIR and TOP_SRCDIR; run
# by hand, they default to a build tree in the working directory.

set -u

: "${TOP_SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${CKPTCONV:=$PWD/ckptconv}"
: "${GOLDEN_DIR:=$TOP_SRCDIR/tests/golden}"
export TOP_SRCDIR CKPTCONV GOLDEN_DIR
# No test may reach the instance metadata address (169.254.169.254): the
# credential chain's last source stays off unless a test points it at a
# stand-in on 127.0.0.1.
export AWS_EC2_METADATA_DISABLED=true

TESTS_PASSED=0
TESTS_FAILED=0
TESTS_SKIPPED=0
CLEANUP_HOOKS=()

TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ckptconv-test.XXXXXX")

# Functions named in CLEANUP_HOOKS run first (stop processes, unmount).
cleanup_test_tmp() {
	local hook
	for hook in "${CLEANUP_HOOKS[@]+"${CLEANUP_HOOKS[@]}"}"; do
		"$hook" || true
	done
	rm -rf "$TEST_TMP"
}
trap cleanup_test_tmp EXIT
trap 'exit 130' INT TERM

pass() {
	TESTS_PASSED=$((TESTS_PASSED + 1))
	echo "ok: $1"
}

fail() {
	TESTS_FAILED=$((TESTS_FAILED + 1))
	echo "FAIL: $1"
	if [ $# -gt 1 ]; then
		printf '  %s\n' "${@:2}"
	fi
}

skip() {
	TESTS_SKIPPED=$((TESTS_SKIPPED + 1))
	echo "SKIP: $1"
}

# finish: the closing line, and the exit status (0 only when nothing failed
# and something passed).
finish() {
	if [ "$TESTS_SKIPPED" -gt 0 ]; then
		echo "$TESTS_PASSED passed, $TESTS_FAILED failed, $TESTS_SKIPPED skipped"
	else
		echo "$TESTS_PASSED passed, $TESTS_FAILED failed"
	fi
	[ "$TESTS_FAILED" -eq 0 ] && [ "$TESTS_PASSED" -gt 0 ]
	exit $?
}

# need_binary: stop early (as a failure) when there is nothing to test.
need_binary() {
	if [ ! -x "$CKPTCONV" ]; then
		fail "ckptconv binary at $CKPTCONV" "not found or not executable"
		finish
	fi
}

# assert_eq NAME EXPECTED ACTUAL
assert_eq() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1" "expected: $2" "actual:   $3"
	fi
}

# run CMD...: runs a command, keeping its exit status in RUN_RC and its
# output in $TEST_TMP/run.out and $TEST_TMP/run.err.
RUN_RC=0
run() {
	RUN_RC=0
	"$@" >"$TEST_TMP/run.out" 2>"$TEST_TMP/run.err" || RUN_RC=$?
}

run_out() { cat "$TEST_TMP/run.out"; }
run_err() { cat "$TEST_TMP/run.err"; }

show_run() {
	echo "  exit status: $RUN_RC"
	sed -n '1,15s/^/  stdout: /p' "$TEST_TMP/run.out"
	sed -n '1,15s/^/  stderr: /p' "$TEST_TMP/run.err"
}

# expect_ok NAME CMD...: the command succeeds.
expect_ok() {
	local name=$1
	shift
	run "$@"
	if [ "$RUN_RC" -eq 0 ]; then
		pass "$name"
		return 0
	fi
	fail "$name" "command: $*"
	show_run
	return 1
}

# expect_exit NAME STATUS CMD...: the command exits with STATUS.
expect_exit() {
	local name=$1 status=$2
	shift 2
	run "$@"
	if [ "$RUN_RC" -eq "$status" ]; then
		pass "$name"
		return 0
	fi
	fail "$name (wanted exit $status)" "command: $*"
	show_run
	return 1
}

# error_line FILE: the first "ckptconv: <code>: <message>" line of a
# command's stderr, skipping progress lines.
error_line() {
	grep -v "^ckptconv: progress: " "$1" | grep -m1 "^ckptconv: [a-z0-9_]*: " || true
}

# expect_fail NAME CODE NAMES CMD...: the command fails cleanly: exit 1 (not
# a crash), one line "ckptconv: CODE: ..." on stderr, and the message
# contains NAMES (the file or tensor at fault; "" to skip that check).
expect_fail() {
	local name=$1 code=$2 names=$3 line
	shift 3
	run "$@"
	line=$(error_line "$TEST_TMP/run.err")
	if [ "$RUN_RC" -ge 128 ]; then
		fail "$name: no crash" "killed by signal $((RUN_RC - 128))"
		show_run
		return 1
	fi
	if [ "$RUN_RC" -ne 1 ]; then
		fail "$name: exit status 1" "command: $*"
		show_run
		return 1
	fi
	case "$line" in
	"ckptconv: $code: "*) ;;
	*)
		fail "$name: error code $code" "command: $*"
		show_run
		return 1
		;;
	esac
	if [ -n "$names" ] && [[ "$line" != *"$names"* ]]; then
		fail "$name: message names '$names'" "$line"
		return 1
	fi
	pass "$name ($code)"
	return 0
}

# no_raw_controls NAME: neither stdout nor stderr of the last run holds a
# control character a terminal would act on: a C0 control other than the
# end of line, DEL, or a C1 control in its UTF-8 form.
no_raw_controls() {
	local hits
	hits=$(cat "$TEST_TMP/run.out" "$TEST_TMP/run.err" |
		LC_ALL=C grep -caP '[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]' || true)
	assert_eq "$1: no raw control character reaches the terminal" 0 "$hits"
}

# expect_empty NAME DIR: DIR is absent or holds nothing.
expect_empty() {
	local left
	if [ ! -e "$2" ]; then
		pass "$1"
		return 0
	fi
	left=$(find "$2" -mindepth 1 2>/dev/null | head -5)
	if [ -z "$left" ]; then
		pass "$1"
		return 0
	fi
	fail "$1" "left behind:" $left
	return 1
}

# copy_dir SRC DST: a writable copy (the golden tree is read-only).
copy_dir() {
	cp -r "$1" "$2" && chmod -R u+w "$2"
}

# Python helper for safetensors files, standard library only.
ST_PY="$TEST_TMP/st.py"
cat >"$ST_PY" <<'PYEOF'
"""Reads, digests and rewrites safetensors files for the tests."""
import hashlib
import json
import os
import struct
import sys

# Bits per element of every dtype of the format (huggingface/safetensors).
DTYPE_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16,
              "I8": 8, "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
              "U16": 16, "U32": 32, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
              "C64": 64}


def nbytes(dtype, shape):
    """The bytes of a tensor (whole bytes: the format packs sub-byte dtypes)."""
    return prod(shape) * DTYPE_BITS[dtype] // 8


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return n, header


def read(path):
    """(header dict in file order, data bytes)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def write_raw(path, header_text, data):
    """Writes header_text (str, used as is, padded to 8) and data."""
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.write(data)


def write(path, header, data):
    write_raw(path, json.dumps(header, separators=(",", ":")), data)


def tensors(directory):
    """name -> (file path, dtype, shape, absolute offset, nbytes)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(directory, name)
        n, header = read_header(path)
        for key, t in header.items():
            if key == "__metadata__":
                continue
            b, e = t["data_offsets"]
            out[key] = (path, t["dtype"], t["shape"], 8 + n + b, e - b)
    return out


def tensor_bytes(entry):
    path, _, _, off, nbytes = entry
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(nbytes)


def digest(directory):
    """One line per tensor: name dtype shape sha256, sorted by name."""
    lines = []
    for name, entry in sorted(tensors(directory).items()):
        h = hashlib.sha256()
        path, dtype, shape, off, nbytes = entry
        with open(path, "rb") as f:
            f.seek(off)
            left = nbytes
            while left:
                chunk = f.read(min(left, 1 << 24))
                if not chunk:
                    raise SystemExit(f"{path}: short read")
                h.update(chunk)
                left -= len(chunk)
        lines.append(f"{name} {dtype} {shape} {h.hexdigest()}")
    return lines


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def rewrite(path, drop=(), rename=None, shape=None, dtype=None, add=None):
    """Rewrites a file's tensors contiguously in data order: drops, renames,
    reshapes or retypes some (their bytes cut or zero-padded to fit) and
    appends new ones (add: name -> (dtype, shape))."""
    rename, shape, dtype, add = rename or {}, shape or {}, dtype or {}, add or {}
    header, data = read(path)
    meta = header.pop("__metadata__", None)
    out, blob = {}, bytearray()
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if name in drop:
            continue
        b, e = t["data_offsets"]
        dt, sh = dtype.get(name, t["dtype"]), shape.get(name, t["shape"])
        n = nbytes(dt, sh)
        out[rename.get(name, name)] = {"dtype": dt, "shape": sh,
                                       "data_offsets": [len(blob), len(blob) + n]}
        blob += (data[b:e] + bytes(n))[:n]
    for name, (dt, sh) in add.items():
        n = nbytes(dt, sh)
        out[name] = {"dtype": dt, "shape": sh, "data_offsets": [len(blob), len(blob) + n]}
        blob += bytes((i * 7) & 0x3F for i in range(n))
    if meta is not None:
        out["__metadata__"] = meta
    write(path, out, bytes(blob))


def edit_index(directory, drop=(), rename=None, add=None):
    """Applies the same drops and renames to the index's weight_map and maps
    the added names (add: name -> file)."""
    rename, add = rename or {}, add or {}
    path = os.path.join(directory, "model.safetensors.index.json")
    with open(path) as f:
        index = json.load(f)
    weight_map = {}
    for name, file in index["weight_map"].items():
        if name not in drop:
            weight_map[rename.get(name, name)] = file
    weight_map.update(add)
    index["weight_map"] = weight_map
    with open(path, "w") as f:
        json.dump(index, f, indent=2)


def add_tensors(directory, file, tensors):
    """Appends tensors (name -> (dtype, shape)) to one file of a sharded
    checkpoint and maps them in its index."""
    rewrite(os.path.join(directory, file), add=tensors)
    edit_index(directory, add={n: file for n in tensors})


def shards(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))


def map_tensors(directory, name=None, dtype=None):
    """Renames (name(n) -> new name) and retypes (dtype(n, dt) -> new
    dtype) tensors in every file of a checkpoint and in its index."""
    renamed = {}
    for file in shards(directory):
        header, _ = read(os.path.join(directory, file))
        names = [n for n in header if n != "__metadata__"]
        rename = {n: name(n) for n in names if name and name(n) != n}
        retype = {n: dtype(n, header[n]["dtype"]) for n in names if dtype}
        renamed.update(rename)
        rewrite(os.path.join(directory, file), rename=rename, dtype=retype)
    if renamed and os.path.exists(os.path.join(directory, "model.safetensors.index.json")):
        edit_index(directory, rename=renamed)


def edit_config(directory, **changes):
    """Sets config.json keys (a value of None removes the key)."""
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    if sys.argv[1] == "digest":
        print("\n".join(digest(sys.argv[2])))
    elif sys.argv[1] == "count":
        print(len(tensors(sys.argv[2])))
    else:
        raise SystemExit("usage: st.py digest|count DIR")
PYEOF

# st_py ARGS...: runs the helper; `st_py - <<EOF` runs a script that may
# `from st import *`.
st_py() {
	PYTHONPATH="$TEST_TMP${PYTHONPATH:+:$PYTHONPATH}" python3 "$@"
}

# same_tensors NAME DIR_A DIR_B: the same tensors, bytes compared by Python
# (independently of `ckptconv verify`).
same_tensors() {
	local a b
	a=$(st_py "$ST_PY" digest "$2") || { fail "$1" "cannot read $2"; return 1; }
	b=$(st_py "$ST_PY" digest "$3") || { fail "$1" "cannot read $3"; return 1; }
	if [ -n "$a" ] && [ "$a" = "$b" ]; then
		pass "$1"
		return 0
	fi
	fail "$1" "tensor digests differ:" \
		"$(diff <(echo "$a") <(echo "$b") | head -6)"
	return 1
}

# same_files NAME DIR_A DIR_B: byte-identical directories but for a
# conversion's records (its plan manifest and checksum records,
# docs/manifest.md), which the golden outputs do not hold.
# same_sums A B: "same" when the checksum records (ckptconv-sums.json) of
# directories A and B hold the same plan digest and the same files with the
# same sizes and CRC-32C (each run records its own identities as
# published), else what differs.
same_sums() {
	python3 -c 'import json,sys
def entries(path):
    r = json.load(open(path))
    return r["plan_digest"], sorted((f["name"], f["size"], f["crc32c"]) for f in r["files"])
a, b = entries(sys.argv[1]), entries(sys.argv[2])
print("same" if a == b else "differ: %r" % (set(a[1]) ^ set(b[1])))' \
		"$1/ckptconv-sums.json" "$2/ckptconv-sums.json"
}

# await_port_file FILE WHAT: waits up to 10 s for a server started in the
# background to write its port into FILE; fails the test ("WHAT starts")
# and ends it otherwise.
await_port_file() {
	local i
	for i in $(seq 100); do
		[ -s "$1" ] && return 0
		sleep 0.1
	done
	fail "$2 starts"
	finish
}

# same_plan_manifest A B: "same" when two plan manifests are equal but for
# "boot_id" (recorded by a conversion run on one machine only).
same_plan_manifest() {
	python3 -c 'import json,sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for m in (a, b):
    m.pop("boot_id", None)
print("same" if a == b else "differ")' "$1" "$2"
}

same_files() {
	if diff -r -q -x ckptconv-plan.json -x "ckptconv-sums*.json" "$2" "$3" >"$TEST_TMP/diff.out" 2>&1; then
		pass "$1"
		return 0
	fi
	fail "$1" "$(head -5 "$TEST_TMP/diff.out")"
	return 1
}
