#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_partition.sh: a conversion split into partitions (`convert --partition
# I/N`, then `finalize`).  Three partitions run at once as separate processes
# and, once finalized, give output byte-identical to one unpartitioned run,
# between local directories and on the S3 test server (s3rver on
# 127.0.0.1).  Then what must be refused: a partition of another plan
# (manifest_mismatch), finalize before every partition ran or with a damaged
# file (partition_incomplete, naming the files), bad --partition syntax,
# unrelated files; and that a partition with no files succeeds, a cancelled
# partition removes only its own files, and finalize is idempotent.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary

SRC=$TEST_TMP/src
REF=$TEST_TMP/ref
SHARD=20KB
N=3
MANIFEST=ckptconv-plan.json

# same_output NAME REF DIR [OTHER_SOURCE]: the same file names, every file
# byte-identical (the checksum record: the same entries); with OTHER_SOURCE (a conversion of a copy of the source
# elsewhere) the plan manifest, which names the source, is left out.
same_output() {
	local name=$1 ref=$2 dir=$3 other_source=${4:-} f bad=""
	if [ "$(ls "$ref")" != "$(ls "$dir" 2>/dev/null)" ]; then
		fail "$name: the same files" "expected: $(ls "$ref" | tr '\n' ' ')" \
			"actual:   $(ls "$dir" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	for f in "$ref"/*; do
		[ -n "$other_source" ] && [ "$(basename "$f")" = "$MANIFEST" ] && continue
		# The checksum record by its files, sizes and CRC-32C (each run
		# records its own identities as published).
		if [ "$(basename "$f")" = ckptconv-sums.json ]; then
			[ "$(same_sums "$ref" "$dir")" = same ] || bad="$bad ckptconv-sums.json"
			continue
		fi
		# The plan manifest but for the boot a one-machine run names.
		if [ "$(basename "$f")" = "$MANIFEST" ]; then
			[ "$(same_plan_manifest "$f" "$dir/$MANIFEST")" = same ] ||
				bad="$bad $MANIFEST"
			continue
		fi
		cmp -s "$f" "$dir/$(basename "$f")" || bad="$bad $(basename "$f")"
	done
	if [ -n "$bad" ]; then
		fail "$name: every file byte-identical" "differ:$bad"
		return 1
	fi
	pass "$name: $(ls "$ref" | wc -l) files byte-identical"
}

# json_files FILE: the "files" of a --json result, one a line.
json_files() {
	python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["files"]))' "$1"
}

# partitions DST I... : runs these partitions of the reference plan at once,
# in the background, each result in $TEST_TMP/part-I.json; fails unless
# every one exits 0.
partitions() {
	local dst=$1 i pids=() bad=""
	shift
	for i in "$@"; do
		"$CKPTCONV" convert --json --to native --max-shard-size "$SHARD" --partition "$i/$N" \
			"$PART_SRC" "$dst" >"$TEST_TMP/part-$i.json" 2>"$TEST_TMP/part-$i.err" &
		pids[$i]=$!
	done
	for i in "$@"; do
		wait "${pids[$i]}" || bad="$bad $i"
	done
	if [ -n "$bad" ]; then
		# With --json the error is on stdout.
		for i in $bad; do
			fail "partition $i/$N into $dst" "$(head -c 600 "$TEST_TMP/part-$i.json")" \
				"$(head -5 "$TEST_TMP/part-$i.err")"
		done
		return 1
	fi
	pass "partitions $* of $N into $(basename "$dst") ran at once"
}

expect_ok "fixture tiny" "$CKPTCONV" fixture --preset tiny "$SRC"
expect_ok "unpartitioned reference" "$CKPTCONV" convert --to native --max-shard-size "$SHARD" \
	"$SRC" "$REF"
SHARDS=$(ls "$REF" | grep -c '^model-.*\.safetensors$')
if [ "$SHARDS" -ge 5 ]; then
	pass "the reference has $SHARDS shards"
else
	fail "the reference has at least 5 shards" "it has $SHARDS"
fi

# ---- local: N partitions at once, then finalize ----------------------------
PART_SRC=$SRC
OUT=$TEST_TMP/out
partitions "$OUT" 0 1 2
if [ -f "$OUT/$MANIFEST" ] && [ ! -e "$OUT/model.safetensors.index.json" ] &&
	[ ! -e "$OUT/config.json" ]; then
	pass "before finalize: the manifest, no index, no config.json"
else
	fail "before finalize: the manifest, no index, no config.json" "$(ls "$OUT" | tr '\n' ' ')"
fi
ALL=$( (json_files "$TEST_TMP/part-0.json"; json_files "$TEST_TMP/part-1.json"
	json_files "$TEST_TMP/part-2.json") | sort)
assert_eq "every shard written by exactly one partition" \
	"$(ls "$REF" | grep '^model-.*\.safetensors$' | sort)" "$ALL"
for i in 0 1 2; do
	json_files "$TEST_TMP/part-$i.json" >"$TEST_TMP/files-$i"
done
if [ -s "$TEST_TMP/files-0" ] && [ -s "$TEST_TMP/files-1" ] && [ -s "$TEST_TMP/files-2" ]; then
	pass "each of the 3 partitions wrote shards"
else
	fail "each of the 3 partitions wrote shards" "$(wc -l "$TEST_TMP"/files-* | tr '\n' ' ')"
fi

expect_ok "finalize" "$CKPTCONV" finalize "$OUT"
same_output "3 partitions + finalize equal one run" "$REF" "$OUT"
expect_ok "finalize again (idempotent)" "$CKPTCONV" finalize --json "$OUT"
if python3 -c 'import json,sys; d = json.load(open(sys.argv[1]))
assert d["finalize"] == {"source": None, "already_finished": True}, d
assert d["destination"] == sys.argv[2] and d["files"][-1] == "model.safetensors.index.json", d' \
	"$TEST_TMP/run.out" "$OUT"; then
	pass "finalize again: reports an already finished checkpoint"
else
	fail "finalize again: reports an already finished checkpoint" "$(run_out)"
fi
same_output "after the second finalize" "$REF" "$OUT"
expect_ok "the result verifies against the reference" "$CKPTCONV" verify "$REF" "$OUT"

# ---- a plan mismatch -------------------------------------------------------
MIX=$TEST_TMP/mix
expect_ok "partition 0 of the reference plan" "$CKPTCONV" convert --to native \
	--max-shard-size "$SHARD" --partition 0/$N "$SRC" "$MIX"
expect_fail "another --max-shard-size into the same destination" manifest_mismatch "$MIX" \
	"$CKPTCONV" convert --to native --max-shard-size 30KB --partition 1/$N "$SRC" "$MIX"
expect_fail "another partition count" manifest_mismatch "in 3 partitions, not 4" \
	"$CKPTCONV" convert --to native --max-shard-size "$SHARD" --partition 1/4 "$SRC" "$MIX"
expect_fail "--overwrite does not mix plans" manifest_mismatch "$MIX" \
	"$CKPTCONV" convert --overwrite --to native --partition 1/$N "$SRC" "$MIX"
assert_eq "the refused partitions wrote nothing" \
	"$( (cat "$TEST_TMP/files-0"; echo "$MANIFEST"; echo ckptconv-sums.0.json) | sort)" \
	"$(ls -A "$MIX" | sort)"

# ---- finalize before every partition ran -----------------------------------
FIRST_MISSING=$(sort "$TEST_TMP/files-1" "$TEST_TMP/files-2" | head -1)
expect_fail "finalize with partitions 1 and 2 missing" partition_incomplete \
	"$FIRST_MISSING (missing)" "$CKPTCONV" finalize "$MIX"
MISSING=$(cat "$TEST_TMP/files-1" "$TEST_TMP/files-2" | wc -l)
if grep -q "$MISSING of $SHARDS planned files missing or incomplete (rerun partitions 1, 2 of 3)" \
	"$TEST_TMP/run.err"; then
	pass "the message counts the missing files and names the partitions to rerun"
else
	fail "the message counts the missing files and names the partitions to rerun" "$(run_err)"
fi
if [ ! -e "$MIX/model.safetensors.index.json" ] && [ ! -e "$MIX/config.json" ] &&
	[ -f "$MIX/$MANIFEST" ]; then
	pass "a refused finalize publishes nothing"
else
	fail "a refused finalize publishes nothing" "$(ls "$MIX" | tr '\n' ' ')"
fi
partitions "$MIX" 1 2
expect_ok "finalize once the rest ran" "$CKPTCONV" finalize "$MIX"
same_output "partition 0 first, 1 and 2 later" "$REF" "$MIX"

# ---- damaged partition output ----------------------------------------------
DMG=$TEST_TMP/damaged
partitions "$DMG" 0 1 2
VICTIM=$(head -1 "$TEST_TMP/files-1")
truncate -s -1 "$DMG/$VICTIM"
expect_fail "finalize with a truncated shard" partition_incomplete "$VICTIM (" \
	"$CKPTCONV" finalize "$DMG"
if grep -q "rerun partition 1 of 3" "$TEST_TMP/run.err"; then
	pass "a truncated shard: the message names partition 1"
else
	fail "a truncated shard: the message names partition 1" "$(run_err)"
fi
expect_ok "rerun partition 1" "$CKPTCONV" convert --to native --max-shard-size "$SHARD" \
	--partition 1/$N "$SRC" "$DMG"
VICTIM=$(head -1 "$TEST_TMP/files-2")
printf 'X' | dd of="$DMG/$VICTIM" bs=1 seek=20 conv=notrunc status=none
expect_fail "finalize with a shard whose header changed" partition_incomplete \
	"$VICTIM (header not as planned)" "$CKPTCONV" finalize "$DMG"
expect_ok "rerun partition 2" "$CKPTCONV" convert --to native --max-shard-size "$SHARD" \
	--partition 2/$N "$SRC" "$DMG"
expect_ok "finalize after the reruns" "$CKPTCONV" finalize "$DMG"
same_output "after recovering damaged files" "$REF" "$DMG"

# ---- a cancelled partition removes only its own files ----------------------
CAN=$TEST_TMP/cancel
partitions "$CAN" 0 2
"$CKPTCONV" convert --to native --max-shard-size "$SHARD" --max-rate 20KB --partition 1/$N \
	"$SRC" "$CAN" >"$TEST_TMP/cancel.out" 2>&1 &
CANCEL_PID=$!
# Cancel once partition 1 has published one of its files (or after 10 s).
for _ in $(seq 1 200); do
	PUBLISHED=$(cd "$CAN" && ls $(cat "$TEST_TMP/files-1") 2>/dev/null | head -1)
	[ -n "$PUBLISHED" ] && break
	sleep 0.05
done
if [ -n "$PUBLISHED" ]; then
	pass "partition 1 published $PUBLISHED before it was cancelled"
else
	fail "partition 1 published a file before it was cancelled"
fi
kill -TERM "$CANCEL_PID" 2>/dev/null
CANCEL_RC=0
wait "$CANCEL_PID" || CANCEL_RC=$?
if [ "$CANCEL_RC" -eq 1 ] && grep -q "cancelled" "$TEST_TMP/cancel.out"; then
	pass "partition 1 cancelled mid-run (exit 1, cancelled)"
else
	fail "partition 1 cancelled mid-run (exit 1, cancelled)" "exit $CANCEL_RC" \
		"$(head -3 "$TEST_TMP/cancel.out")"
fi
assert_eq "the other partitions' files and the manifest stay, none of partition 1's" \
	"$( (cat "$TEST_TMP/files-0" "$TEST_TMP/files-2"; echo "$MANIFEST"
		echo ckptconv-sums.0.json; echo ckptconv-sums.2.json) | sort)" \
	"$(ls -A "$CAN" | sort)"

# ---- more partitions than files, bad syntax, unrelated files ---------------
EMPTY=$TEST_TMP/empty
expect_ok "partition 15 of 20 (more partitions than files) succeeds" "$CKPTCONV" convert --json \
	--to native --max-shard-size "$SHARD" --partition 15/20 "$SRC" "$EMPTY"
if grep -q '"files":\[\]' "$TEST_TMP/run.out"; then
	pass "partition 15 of 20 writes no file"
else
	fail "partition 15 of 20 writes no file" "$(run_out)"
fi
assert_eq "partition 15 of 20 leaves only the manifest and its empty checksum record" \
	"$MANIFEST ckptconv-sums.15.json" "$(ls -A "$EMPTY" | tr '\n' ' ' | sed 's/ $//')"
for spec in 3/3 abc 1/0 -1/3 1/ 2x/3; do
	expect_exit "--partition $spec is a usage error" 2 "$CKPTCONV" convert --to native \
		--partition "$spec" "$SRC" "$TEST_TMP/bad"
	if grep -q "^ckptconv: invalid_partition: " "$TEST_TMP/run.err"; then
		pass "--partition $spec: invalid_partition"
	else
		fail "--partition $spec: invalid_partition" "$(run_err)"
	fi
done
expect_empty "bad --partition wrote nothing" "$TEST_TMP/bad"
JUNK=$TEST_TMP/junk
mkdir -p "$JUNK" && echo notes >"$JUNK/notes.txt"
expect_fail "a destination with unrelated files" destination_not_empty "notes.txt" \
	"$CKPTCONV" convert --to native --partition 0/$N "$SRC" "$JUNK"
assert_eq "the refused destination is untouched" "notes.txt" "$(ls -A "$JUNK")"
expect_fail "finalize on an empty directory" partition_incomplete "run the partitions first" \
	"$CKPTCONV" finalize "$JUNK"
expect_exit "finalize without DST is a usage error" 2 "$CKPTCONV" finalize

# ---- the same on the S3 test server ----------------------------------------
start_s3rver src-bkt dst-bkt
s3_upload "$SRC" s3://src-bkt/tiny/ || fail "upload the fixture"
PART_SRC=s3://src-bkt/tiny/
partitions s3://dst-bkt/out/ 0 1 2
if s3_keys s3://dst-bkt/out/ | grep -qx "$MANIFEST" &&
	! s3_keys s3://dst-bkt/out/ | grep -qx model.safetensors.index.json; then
	pass "s3: before finalize the manifest and no index"
else
	fail "s3: before finalize the manifest and no index" "$(s3_keys s3://dst-bkt/out/ | tr '\n' ' ')"
fi
expect_ok "s3: finalize" "$CKPTCONV" finalize s3://dst-bkt/out/
s3_download s3://dst-bkt/out/ "$TEST_TMP/s3-out" || fail "s3: download the output"
same_output "s3: 3 partitions + finalize equal one local run" "$REF" "$TEST_TMP/s3-out" \
	other-source
expect_ok "s3: finalize again (idempotent)" "$CKPTCONV" finalize s3://dst-bkt/out/
if grep -q "already a finished checkpoint" "$TEST_TMP/run.out"; then
	pass "s3: finalize again reports an already finished checkpoint"
else
	fail "s3: finalize again reports an already finished checkpoint" "$(run_out)"
fi

partitions s3://dst-bkt/mix/ 0
expect_fail "s3: another --max-shard-size into the same prefix" manifest_mismatch \
	"s3://dst-bkt/mix" "$CKPTCONV" convert --to native --max-shard-size 30KB \
	--partition 1/$N s3://src-bkt/tiny/ s3://dst-bkt/mix/
FIRST_MISSING=$(sort "$TEST_TMP/files-1" "$TEST_TMP/files-2" | head -1)
expect_fail "s3: finalize with partitions 1 and 2 missing" partition_incomplete \
	"$FIRST_MISSING (missing)" "$CKPTCONV" finalize s3://dst-bkt/mix/
partitions s3://dst-bkt/mix/ 2 1
expect_ok "s3: finalize once the rest ran" "$CKPTCONV" finalize s3://dst-bkt/mix/
s3_download s3://dst-bkt/mix/ "$TEST_TMP/s3-mix" || fail "s3: download the mixed-order output"
same_output "s3: partition 0 first, 2 and 1 later" "$REF" "$TEST_TMP/s3-mix" other-source

finish
