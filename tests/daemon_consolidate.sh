#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_consolidate.sh: a NeMo Automodel sharded checkpoint consolidated
# as a daemon job ("to": "hf", options.dtype as CAST_DTYPE) equals
# Automodel's own output byte for byte, with its per-tensor listing and
# final progress; a damaged one is refused at submission with its exact
# code (options.allow_gaps takes a gap, as the CLI's --allow-gaps), and a
# dtype with "to": "hf" on an ordinary checkpoint too.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

C=$GOLDEN_DIR/consolidate
copy_dir "$C/inputs/tiny-r3/model" "$DATA/r3"
copy_dir "$C/inputs/tiny-r4-ep2s2/model" "$DATA/ep2s2"
copy_dir "$C/inputs/tiny-r3/model" "$DATA/gap"
rm "$DATA/gap/shard-00002-model-00001-of-00001.safetensors"
copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"

daemon_start --max-running 2 --workers 2

submit "consolidate tiny-r3, dtype bf16" "$DATA/r3" "$DATA/out-r3" hf '{"dtype": "bf16"}'
J_R3=$JOB
submit "consolidate tiny-r4-ep2s2" "$DATA/ep2s2" "$DATA/out-ep2s2" hf
J_EP=$JOB

check_case() {
	local name=$1 id=$2 dir=$3 golden=$4
	expect_job "$name succeeds" "$id" succeeded 120 || return 0
	same_files "$name: identical to Automodel's output" "$C/outputs/$golden" "$dir"
	listing_matches_output "$name: per-tensor listing matches the output" "$id" "$dir"
	api GET "/v1/jobs/$id"
	if [ "$(jget progress.tensors_done)" = "$(jget progress.tensors_total)" ] &&
		[ "$(jget progress.tensors_total)" = 35 ] && [ "$(jget error)" = null ]; then
		pass "$name: progress by tensor, 35 of 35"
	else
		fail "$name: progress by tensor, 35 of 35" "$(head -c 600 "$BODY")"
	fi
}
check_case "tiny-r3 bf16" "$J_R3" "$DATA/out-r3" tiny-r3-cast-bf16
check_case "tiny-r4-ep2s2" "$J_EP" "$DATA/out-ep2s2" tiny-r4-ep2s2

post_job "$(job_json "$DATA/gap" "$DATA/out-gap" hf)"
expect_error "a shard missing: refused" 422 chunk_gap
no_finished_output "a shard missing: nothing written" "$DATA/out-gap"

# options.allow_gaps: the job writes Automodel's zeros, as the CLI does.
submit "a shard missing, allow_gaps" "$DATA/gap" "$DATA/out-gap-allowed" hf '{"allow_gaps": true}'
if expect_job "allow_gaps: succeeds" "$JOB" succeeded 120 &&
	expect_ok "allow_gaps: the CLI's --allow-gaps" "$CKPTCONV" convert --to hf --allow-gaps \
		"$DATA/gap" "$DATA/cli-gap-allowed"; then
	same_files "allow_gaps: the job's output is the CLI's" "$DATA/cli-gap-allowed" \
		"$DATA/out-gap-allowed"
fi

post_job "$(job_json "$DATA/hf" "$DATA/out-hf" hf '{"dtype": "bf16"}')"
expect_error "dtype with to hf on an ordinary checkpoint" 400 invalid_option

daemon_stop
finish
