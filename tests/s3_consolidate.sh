#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_consolidate.sh: NeMo Automodel sharded checkpoints in an object store
# (s3rver on 127.0.0.1): inspect of an s3:// prefix, consolidation S3 -> S3
# byte for byte equal to Automodel's output, S3 -> local to native equal
# to the reference, and a damaged one refused with nothing written.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver src-bkt dst-bkt

C=$GOLDEN_DIR/consolidate

s3_upload "$C/inputs/tiny-r3/model" s3://src-bkt/r3/model/ || fail "upload tiny-r3"
s3_upload "$C/inputs/tiny-r4-ep2s2/model" s3://src-bkt/ep2s2/model/ || fail "upload tiny-r4-ep2s2"
copy_dir "$C/inputs/tiny-r3/model" "$TEST_TMP/gap"
rm "$TEST_TMP/gap/shard-00002-model-00001-of-00001.safetensors"
s3_upload "$TEST_TMP/gap" s3://src-bkt/gap/model/ || fail "upload the damaged copy"

expect_ok "inspect an s3:// sharded checkpoint" "$CKPTCONV" inspect s3://src-bkt/r3/model/
if run_out | grep -q "NeMo Automodel sharded checkpoint: 3 ranks"; then
	pass "inspect says it is a sharded Automodel checkpoint"
else
	fail "inspect says it is a sharded Automodel checkpoint"
	show_run
fi

expect_ok "consolidate s3 -> s3, --dtype bf16" "$CKPTCONV" convert --to hf --dtype bf16 \
	s3://src-bkt/r3/model/ s3://dst-bkt/r3-bf16/
if s3_download s3://dst-bkt/r3-bf16/ "$TEST_TMP/down/r3-bf16"; then
	same_files "s3 consolidation identical to Automodel's" "$C/outputs/tiny-r3-cast-bf16" \
		"$TEST_TMP/down/r3-bf16"
else
	fail "download the consolidation"
fi

expect_ok "consolidate and convert s3 -> local, to native" "$CKPTCONV" convert --to native \
	s3://src-bkt/ep2s2/model/ "$TEST_TMP/native"
expect_ok "... equals golden/tiny/native" "$CKPTCONV" verify "$GOLDEN_DIR/tiny/native" \
	"$TEST_TMP/native"

expect_fail "a shard missing in the store: refused" chunk_gap "shard-00002" "$CKPTCONV" \
	convert --to hf s3://src-bkt/gap/model/ s3://dst-bkt/gap/
assert_eq "a shard missing: nothing written" "" "$(s3_keys s3://dst-bkt/gap/)"

finish
