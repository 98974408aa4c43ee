#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_resume.sh: `convert --resume` after a SIGKILL.  A native -> HF
# conversion of the mini fixture into 100 MB shards, throttled with
# --max-rate, is killed with SIGKILL once a few shards are published;
# `--resume` then keeps those shards (the same inode and mtime: not
# written again), removes the temporary files and finishes: the output
# equals a clean run's, records included.  A corrupted byte in a finished
# shard is found by `verify --checksums` (exit 1 naming the file) and by
# `--resume`, which writes that shard again and keeps the others.  Another
# plan's destination is refused (manifest_mismatch); --resume on an empty
# destination is a normal run; without --resume the interrupted destination
# is refused as before (destination_not_empty).

. "$(dirname "$0")/lib.sh"
need_binary

HF=$TEST_TMP/hf
NAT=$TEST_TMP/native
REF=$TEST_TMP/ref
OUT=$TEST_TMP/out
CONVERT=("$CKPTCONV" convert --no-fsync --to hf --max-shard-size 100MB)

expect_ok "fixture mini" "$CKPTCONV" fixture --preset mini "$HF"
expect_ok "mini to native" "$CKPTCONV" convert --no-fsync --to native "$HF" "$NAT"
expect_ok "--resume on an empty destination is a normal run" "${CONVERT[@]}" --resume --json \
	"$NAT" "$REF"
if grep -q '"kept_files":0,"kept_bytes":0' "$TEST_TMP/run.out"; then
	pass "... which kept nothing"
else
	fail "... which kept nothing" "$(run_out)"
fi
expect_ok "the clean run verifies by its checksums" "$CKPTCONV" verify --checksums "$REF"

# ---- SIGKILL after a few shards, then --resume -------------------------------
"${CONVERT[@]}" --max-rate 40MB "$NAT" "$OUT" >/dev/null 2>&1 &
PID=$!
for i in $(seq 600); do
	[ "$(ls "$OUT" 2>/dev/null | grep -c '^model-.*\.safetensors$')" -ge 3 ] && break
	sleep 0.1
done
kill -9 "$PID" 2>/dev/null
wait "$PID" 2>/dev/null
PUBLISHED=$(ls "$OUT" | grep '^model-.*\.safetensors$' | grep -v index)
NPUB=$(echo "$PUBLISHED" | grep -c .)
if [ "$NPUB" -ge 3 ] && [ "$NPUB" -lt 19 ] && [ ! -e "$OUT/model.safetensors.index.json" ]; then
	pass "killed with $NPUB of 19 shards published, no index"
else
	fail "killed with a few shards published, no index" "$(ls -A "$OUT")"
fi
if ls -A "$OUT" | grep -q '^\.ckptconv-tmp\.'; then
	pass "the kill left temporary files"
else
	fail "the kill left temporary files" "$(ls -A "$OUT")"
fi
(cd "$OUT" && stat -c '%n %i %Y.%y' $PUBLISHED) >"$TEST_TMP/before"
expect_fail "without --resume the destination is refused" destination_not_empty "" \
	"${CONVERT[@]}" "$NAT" "$OUT"
expect_fail "another plan's destination is refused" manifest_mismatch "another plan" \
	"$CKPTCONV" convert --no-fsync --to hf --max-shard-size 50MB --resume "$NAT" "$OUT"
expect_ok "--resume" "${CONVERT[@]}" --resume --json "$NAT" "$OUT"
KEPT=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["kept_files"], r["kept_bytes"])' "$TEST_TMP/run.out")
WANT_BYTES=$(cd "$OUT" && stat -c %s $PUBLISHED | awk '{s += $1} END {print s}')
assert_eq "the result counts the kept shards and their bytes" "$NPUB $WANT_BYTES" "$KEPT"
(cd "$OUT" && stat -c '%n %i %Y.%y' $PUBLISHED) >"$TEST_TMP/after"
if cmp -s "$TEST_TMP/before" "$TEST_TMP/after"; then
	pass "the $NPUB shards published before the kill keep their inode and mtime"
else
	fail "the shards published before the kill keep their inode and mtime" \
		"$(diff "$TEST_TMP/before" "$TEST_TMP/after" | head -4)"
fi
if ls -A "$OUT" | grep -q '^\.ckptconv-tmp\.'; then
	fail "no temporary file remains" "$(ls -A "$OUT" | grep tmp)"
else
	pass "no temporary file remains"
fi
if diff -r -q "$REF" "$OUT" >"$TEST_TMP/diff.out"; then
	pass "the output equals the clean run's, records included"
else
	fail "the output equals the clean run's, records included" "$(head -5 "$TEST_TMP/diff.out")"
fi
expect_ok "the resumed output verifies by its checksums" "$CKPTCONV" verify --checksums "$OUT"

# ---- a corrupted byte ----------------------------------------------------------
BAD=model-00002-of-00019.safetensors
printf '\x5a' | dd of="$OUT/$BAD" bs=1 seek=50000000 conv=notrunc status=none
cmp -s "$REF/$BAD" "$OUT/$BAD" && fail "the byte was changed" "$BAD equals the reference"
expect_fail "verify --checksums finds the corrupted shard" checksum_mismatch "$BAD" \
	"$CKPTCONV" verify --checksums "$OUT"
(cd "$OUT" && stat -c '%n %i %Y.%y' model-000*.safetensors) >"$TEST_TMP/before"
expect_ok "--resume over the corrupted shard" "${CONVERT[@]}" --resume --json "$NAT" "$OUT"
if grep -q '"kept_files":18,' "$TEST_TMP/run.out" &&
	grep -q "not kept: written again.*$BAD" "$TEST_TMP/run.err"; then
	pass "--resume kept 18 shards and named the one it writes again"
else
	fail "--resume kept 18 shards and named the one it writes again" "$(run_out)" "$(run_err)"
fi
(cd "$OUT" && stat -c '%n %i %Y.%y' model-000*.safetensors) >"$TEST_TMP/after"
assert_eq "only the corrupted shard was written again" "$BAD" \
	"$(diff "$TEST_TMP/before" "$TEST_TMP/after" | sed -n 's/^> \([^ ]*\) .*/\1/p')"
if diff -r -q "$REF" "$OUT" >"$TEST_TMP/diff.out"; then
	pass "after --resume the output equals the clean run's again"
else
	fail "after --resume the output equals the clean run's again" "$(head -5 "$TEST_TMP/diff.out")"
fi
expect_ok "and verifies by its checksums" "$CKPTCONV" verify --checksums "$OUT"
expect_exit "verify --checksums with two locations is a usage error" 2 \
	"$CKPTCONV" verify --checksums "$REF" "$OUT"
finish
