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
copy_dir "$C/inputs/tiny-r3/model" "$TEST_TMP/nometa"
rm -r "$TEST_TMP/nometa/.hf_metadata"
s3_upload "$TEST_TMP/nometa" s3://src-bkt/nometa/model/ || fail "upload the copy without .hf_metadata"

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

expect_fail "a shard missing in the store: refused" shard_missing \
	"no shard holds it: shard-00002-model-00001-of-00001.safetensors is missing" "$CKPTCONV" \
	convert --to hf s3://src-bkt/gap/model/ s3://dst-bkt/gap/
assert_eq "a shard missing: nothing written" "" "$(s3_keys s3://dst-bkt/gap/)"
expect_fail "no .hf_metadata in the store: refused" hf_metadata_missing \
	"s3://src-bkt/nometa/model: sharded checkpoint (shard-*-model-*.safetensors) without its .hf_metadata/ folder" \
	"$CKPTCONV" convert --to hf s3://src-bkt/nometa/model/ s3://dst-bkt/nometa/
assert_eq "no .hf_metadata: nothing written" "" "$(s3_keys s3://dst-bkt/nometa/)"

# ---- partitions: several processes write the files, finalize the rest ----

# parts N SRC DST [FLAGS...]: partitions 0..N-1 of a consolidation, each
# must succeed.
parts() {
	local n=$1 src=$2 dst=$3 i ok=0
	shift 3
	for i in $(seq 0 $((n - 1))); do
		expect_ok "partition $i/$n of $src -> $dst" "$CKPTCONV" convert --to hf "$@" \
			--partition "$i/$n" "$src" "$dst" || ok=1
	done
	return $ok
}

if parts 2 s3://src-bkt/r3/model/ s3://dst-bkt/p-r3-bf16/ --dtype bf16; then
	keys=$(s3_keys s3://dst-bkt/p-r3-bf16/ | tr '\n' ' ')
	assert_eq "s3 -> s3 partitions: the model files, the manifest and the partitions' checksum records, no config.json, no index" \
		"ckptconv-plan.json ckptconv-sums.0.json ckptconv-sums.1.json model-00001-of-00005.safetensors model-00002-of-00005.safetensors model-00003-of-00005.safetensors model-00004-of-00005.safetensors model-00005-of-00005.safetensors " \
		"$keys"
	expect_ok "s3 -> s3 partitions: finalize" "$CKPTCONV" finalize s3://dst-bkt/p-r3-bf16/
	if s3_download s3://dst-bkt/p-r3-bf16/ "$TEST_TMP/down/p-r3-bf16"; then
		same_files "s3 -> s3, 2 partitions + finalize identical to Automodel's (bf16 cast)" \
			"$C/outputs/tiny-r3-cast-bf16" "$TEST_TMP/down/p-r3-bf16"
	else
		fail "download the partitioned consolidation"
	fi
fi

# More partitions than output files: the extra ones write nothing.
if parts 7 "$C/inputs/tiny-r4-ep2s2/model" s3://dst-bkt/p-ep2s2/; then
	expect_ok "local -> s3, 7 partitions: finalize" "$CKPTCONV" finalize s3://dst-bkt/p-ep2s2/
	if s3_download s3://dst-bkt/p-ep2s2/ "$TEST_TMP/down/p-ep2s2"; then
		same_files "local -> s3, 7 partitions + finalize identical to Automodel's" \
			"$C/outputs/tiny-r4-ep2s2" "$TEST_TMP/down/p-ep2s2"
	else
		fail "download the partitioned consolidation of tiny-r4-ep2s2"
	fi
fi

if parts 3 s3://src-bkt/r3/model/ "$TEST_TMP/p-r3"; then
	expect_ok "s3 -> local, 3 partitions: finalize" "$CKPTCONV" finalize "$TEST_TMP/p-r3"
	same_files "s3 -> local, 3 partitions + finalize identical to Automodel's" \
		"$C/outputs/tiny-r3" "$TEST_TMP/p-r3"
fi

# --allow-gaps is part of the plan: finalize plans again with it and
# writes what one unpartitioned run writes.
if parts 2 s3://src-bkt/gap/model/ s3://dst-bkt/p-gap/ --allow-gaps &&
	expect_ok "s3 gaps allowed, partitions: finalize" "$CKPTCONV" finalize s3://dst-bkt/p-gap/ &&
	expect_ok "s3 gaps allowed, one run" "$CKPTCONV" convert --to hf --allow-gaps \
		s3://src-bkt/gap/model/ "$TEST_TMP/gap-one-run"; then
	if s3_download s3://dst-bkt/p-gap/ "$TEST_TMP/down/p-gap"; then
		same_files "s3 gaps allowed: partitions + finalize equal one run" \
			"$TEST_TMP/gap-one-run" "$TEST_TMP/down/p-gap"
	else
		fail "download the partitioned consolidation with gaps"
	fi
fi

expect_fail "a partition of a damaged checkpoint in the store: refused" shard_missing \
	"shard-00002-model-00001-of-00001.safetensors is missing" \
	"$CKPTCONV" convert --to hf --partition 1/2 s3://src-bkt/gap/model/ s3://dst-bkt/p-bad/
assert_eq "a refused partition: nothing written, no manifest" "" "$(s3_keys s3://dst-bkt/p-bad/)"

finish
