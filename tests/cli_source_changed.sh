#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_source_changed.sh: a conversion reads one version of each source file
# or fails.  A shard rewritten in place while a throttled conversion runs
# (same size, other bytes), or only touched (mtime set, nothing written),
# fails the job with source_changed naming the shard, exit 1, and the
# destination is left empty.  A --resume after a shard was rewritten in
# place with its mtime put back is refused (the ctime tells).  Partitions: partition 1 of 2 started after a
# shard changed following partition 0's plan refuses the source
# (source_changed) and writes nothing, and finalize refuses it too and
# publishes no index.  Unchanged, the same partitions and finalize succeed.

. "$(dirname "$0")/lib.sh"
need_binary

T=$TEST_TMP
SRC=$T/src
SHARD=model-00006-of-00006.safetensors

expect_ok "fixture: 6 shards" "$CKPTCONV" fixture --preset tiny --layers 6 \
	--max-shard-size 100KB "$SRC" || finish
expect_ok "reference conversion" "$CKPTCONV" convert --no-fsync --to native "$SRC" "$T/ref"

# rewrite_in_place FILE: its last 256 bytes inverted, written into the same
# inode (the size stays).
rewrite_in_place() {
	python3 - "$1" <<'PYEOF'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(-256, os.SEEK_END)
    data = f.read(256)
    f.seek(-256, os.SEEK_END)
    f.write(bytes(b ^ 0xFF for b in data))
PYEOF
}

# start_slow NAME: a throttled conversion of a fresh copy of the source
# ($T/NAME) into $T/out-NAME in the background, waited for until it writes.
start_slow() {
	local name=$1 i
	cp -r "$SRC" "$T/$name"
	"$CKPTCONV" convert --no-fsync --to native --max-rate 32KB "$T/$name" "$T/out-$name" \
		>"$T/$name.out" 2>"$T/$name.err" &
	SLOW_PID=$!
	for i in $(seq 600); do
		if [ -n "$(find "$T/out-$name" -mindepth 1 2>/dev/null | head -1)" ] ||
			! kill -0 "$SLOW_PID" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	if ! kill -0 "$SLOW_PID" 2>/dev/null; then
		fail "$name: the conversion is still running when the shard changes" \
			"$(cat "$T/$name.err")"
	fi
}

# finish_slow NAME NAMES: the background conversion failed with
# source_changed naming NAMES, and left nothing in its destination.
finish_slow() {
	local name=$1 names=$2 rc=0 line
	wait "$SLOW_PID" || rc=$?
	line=$(error_line "$T/$name.err")
	if [ "$rc" -eq 1 ] && [[ "$line" == "ckptconv: source_changed: "* ]] &&
		[[ "$line" == *"$names"* ]]; then
		pass "$name: exit 1 with source_changed naming '$names'"
	else
		fail "$name: exit 1 with source_changed naming '$names'" "exit status $rc" \
			"$(cat "$T/$name.err")"
	fi
	expect_empty "$name: nothing left in the destination" "$T/out-$name"
}

# --- while a conversion runs ------------------------------------------------

start_slow rewritten
rewrite_in_place "$T/rewritten/$SHARD"
finish_slow rewritten "$SHARD"

start_slow touched
touch -m -d @1000000000 "$T/touched/$SHARD"
finish_slow touched "$SHARD"

# --- a resume after the source changed ----------------------------------------
# Written in place with its mtime put back to the nanosecond: on the machine
# (and boot) that made the plan, the ctime still tells, and --resume refuses.
cp -r "$SRC" "$T/rsrc"
expect_ok "a conversion to resume later" "$CKPTCONV" convert --no-fsync --to native \
	"$T/rsrc" "$T/rout"
python3 - "$T/rsrc/$SHARD" <<'PYEOF'
import os, sys
st = os.stat(sys.argv[1])
with open(sys.argv[1], "r+b") as f:
    f.seek(-256, os.SEEK_END)
    data = f.read(256)
    f.seek(-256, os.SEEK_END)
    f.write(bytes(b ^ 0xFF for b in data))
os.utime(sys.argv[1], ns=(st.st_atime_ns, st.st_mtime_ns))
PYEOF
before=$(cd "$T/rout" && find . -type f -printf '%p %s %T@\n' | sort)
expect_fail "--resume after the shard changed, its mtime put back" source_changed \
	"the source file $SHARD of $T/rsrc changed since the conversion's plan was made (ctime" \
	"$CKPTCONV" convert --no-fsync --to native --resume "$T/rsrc" "$T/rout"
assert_eq "... and wrote nothing" "$before" \
	"$(cd "$T/rout" && find . -type f -printf '%p %s %T@\n' | sort)"

# --- partitions started at different times -----------------------------------

cp -r "$SRC" "$T/psrc"
expect_ok "partition 0/2" "$CKPTCONV" convert --no-fsync --to native --partition 0/2 \
	"$T/psrc" "$T/pout"
if grep -q '"mtime_ns"' "$T/pout/ckptconv-plan.json" &&
	grep -q "\"name\": \"$SHARD\"" "$T/pout/ckptconv-plan.json"; then
	pass "the plan manifest records the source files' identities"
else
	fail "the plan manifest records the source files' identities" \
		"$(head -c 2000 "$T/pout/ckptconv-plan.json")"
fi
before=$(cd "$T/pout" && find . | sort)
rewrite_in_place "$T/psrc/$SHARD"
expect_fail "partition 1/2 after the shard changed" source_changed "$SHARD" \
	"$CKPTCONV" convert --no-fsync --to native --partition 1/2 "$T/psrc" "$T/pout"
assert_eq "partition 1/2 wrote nothing" "$before" "$(cd "$T/pout" && find . | sort)"
expect_fail "finalize after the shard changed" source_changed "$SHARD" \
	"$CKPTCONV" finalize "$T/pout"
if [ ! -e "$T/pout/model.safetensors.index.json" ] && [ ! -e "$T/pout/config.json" ]; then
	pass "finalize published neither the index nor config.json"
else
	fail "finalize published neither the index nor config.json" "$(ls -a "$T/pout")"
fi

# The same partitions over an unchanged source: finished, as converted at once.
cp -r "$SRC" "$T/qsrc"
expect_ok "unchanged: partition 0/2" "$CKPTCONV" convert --no-fsync --to native \
	--partition 0/2 "$T/qsrc" "$T/qout"
expect_ok "unchanged: partition 1/2" "$CKPTCONV" convert --no-fsync --to native \
	--partition 1/2 "$T/qsrc" "$T/qout"
expect_ok "unchanged: finalize" "$CKPTCONV" finalize "$T/qout"
same_files "unchanged: the partitioned output equals the reference" "$T/ref" "$T/qout"
finish
