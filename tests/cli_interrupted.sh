#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_interrupted.sh: kill -9 of `ckptconv convert` in the middle of a
# single-file conversion (throttled with --max-rate) leaves the output's
# reserved, partly written temporary file.  No reader may take it for a
# checkpoint: its name does not end in .safetensors, and inspect and
# convert refuse the directory and the file (not_a_checkpoint), also under
# the name earlier versions gave it (.ckptconv-tmp.model.safetensors).  A
# new conversion into the directory removes it and publishes the complete
# output.

. "$(dirname "$0")/lib.sh"
need_binary

SRC="$TEST_TMP/src"
OUT="$TEST_TMP/out"
TMP_NAME=.ckptconv-tmp.model.safetensors.tmp
OLD_NAME=.ckptconv-tmp.model.safetensors

expect_ok "fixture tiny" "$CKPTCONV" fixture --preset tiny "$SRC"
expect_ok "reference conversion" "$CKPTCONV" convert --to native "$SRC" "$TEST_TMP/ref"

"$CKPTCONV" convert --to native --max-rate 16KB "$SRC" "$OUT" >/dev/null 2>&1 &
PID=$!
for i in $(seq 300); do
	[ -e "$OUT/$TMP_NAME" ] && break
	sleep 0.05
done
sleep 1 # some of its bytes written
kill -9 "$PID" 2>/dev/null
wait "$PID" 2>/dev/null
REF_SIZE=$(stat -c %s "$TEST_TMP/ref/model.safetensors")
if [ -f "$OUT/$TMP_NAME" ] && [ "$(stat -c %s "$OUT/$TMP_NAME")" = "$REF_SIZE" ]; then
	pass "kill -9 left the full-size temporary file $TMP_NAME"
else
	fail "kill -9 left the full-size temporary file $TMP_NAME" "$(ls -la "$OUT")"
fi
if [ -z "$(find "$OUT" -name '*.safetensors')" ]; then
	pass "no file in the destination ends in .safetensors"
else
	fail "no file in the destination ends in .safetensors" "$(find "$OUT" -name '*.safetensors')"
fi

expect_fail "inspect refuses the directory" not_a_checkpoint "$OUT" "$CKPTCONV" inspect "$OUT"
expect_fail "convert refuses the directory" not_a_checkpoint "$OUT" \
	"$CKPTCONV" convert --to hf "$OUT" "$TEST_TMP/from-tmp"
expect_empty "... and writes nothing" "$TEST_TMP/from-tmp"
expect_fail "inspect refuses the file itself" not_a_checkpoint "$TMP_NAME" \
	"$CKPTCONV" inspect "$OUT/$TMP_NAME"

# The name earlier versions gave the temporary file.
mv "$OUT/$TMP_NAME" "$OUT/$OLD_NAME"
expect_fail "inspect refuses a directory with the earlier name" not_a_checkpoint "$OUT" \
	"$CKPTCONV" inspect "$OUT"
expect_fail "convert refuses it too" not_a_checkpoint "$OUT" \
	"$CKPTCONV" convert --to hf "$OUT" "$TEST_TMP/from-old"
expect_fail "inspect refuses the earlier name itself" not_a_checkpoint "unfinished output" \
	"$CKPTCONV" inspect "$OUT/$OLD_NAME"

# The interrupted run published config.json: replacing it takes --overwrite,
# and the leftover goes.
expect_ok "converting again with --overwrite" "$CKPTCONV" convert --to native --overwrite "$SRC" "$OUT"
if [ -z "$(find "$OUT" -name '.ckptconv-tmp.*')" ]; then
	pass "no temporary file left"
else
	fail "no temporary file left" "$(ls -a "$OUT")"
fi
same_files "output equals the uninterrupted conversion" "$TEST_TMP/ref" "$OUT"
finish
