#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_consolidate.sh: a NeMo Automodel sharded checkpoint consolidated
# as a daemon job ("to": "hf", options.dtype as CAST_DTYPE) equals
# Automodel's own output byte for byte, with its per-tensor listing and
# final progress; a damaged one is refused at submission with its exact
# code (options.allow_gaps takes a gap, as the CLI's --allow-gaps), and a
# dtype with "to": "hf" on an ordinary checkpoint too.  Partitioned jobs
# of a sharded source and a finalize job write Automodel's output byte
# for byte, with gaps allowed as one run writes them.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

C=$GOLDEN_DIR/consolidate
copy_dir "$C/inputs/tiny-r3/model" "$DATA/r3"
copy_dir "$C/inputs/tiny-r4-ep2s2/model" "$DATA/ep2s2"
copy_dir "$C/inputs/tiny-r3/model" "$DATA/gap"
rm "$DATA/gap/shard-00002-model-00001-of-00001.safetensors"
copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"
copy_dir "$C/inputs/tiny-r3-f32save/model" "$DATA/f32save"

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
expect_error "a shard missing: refused" 422 shard_missing
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

# ---- partitioned jobs, then a finalize job ------------------------------------

# partition_jobs NAME SOURCE DESTINATION COUNT [OPTIONS]: COUNT partition
# jobs ("to": "hf"), each must succeed; JOBS are their ids.
partition_jobs() {
	local name=$1 src=$2 dst=$3 count=$4 extra=${5:-} i ok=0
	JOBS=()
	for i in $(seq 0 $((count - 1))); do
		submit "$name: partition $i/$count" "$src" "$dst" hf \
			"{$extra\"partition\": {\"index\": $i, \"count\": $count}}" || return 1
		JOBS+=("$JOB")
	done
	for i in $(seq 0 $((count - 1))); do
		expect_job "$name: partition $i/$count succeeds" "${JOBS[$i]}" succeeded 120 || ok=1
	done
	return $ok
}

# finalize_job NAME DESTINATION: a finalize job that must succeed.
finalize_job() {
	post_job '{"destination": "'"$2"'", "options": {"finalize": true}}'
	if [ "$STATUS" != 201 ]; then
		fail "$1: finalize job 201" "status $STATUS" "$(head -c 400 "$BODY")"
		return 1
	fi
	expect_job "$1: finalize succeeds" "$(jget id)" succeeded 60
}

if partition_jobs "f32save bf16" "$DATA/f32save" "$DATA/p-f32save" 3 '"dtype": "bf16", '; then
	# Every partition's progress is by its own tensors; together they are
	# every tensor once.
	total=0
	for id in "${JOBS[@]}"; do
		api GET "/v1/jobs/$id"
		[ "$(jget progress.tensors_done)" = "$(jget progress.tensors_total)" ] || total=-1000
		total=$((total + $(jget progress.tensors_total)))
	done
	assert_eq "f32save bf16: the partitions' tensors add up to the 35 tensors" 35 "$total"
	if [ ! -e "$DATA/p-f32save/config.json" ] &&
		[ ! -e "$DATA/p-f32save/model.safetensors.index.json" ]; then
		pass "f32save bf16: before finalize no config.json, no index"
	else
		fail "f32save bf16: before finalize no config.json, no index" "$(ls -A "$DATA/p-f32save")"
	fi
	finalize_job "f32save bf16" "$DATA/p-f32save" &&
		same_files "f32save bf16: 3 partition jobs + finalize identical to Automodel's" \
			"$C/outputs/tiny-r3-f32save-cast-bf16" "$DATA/p-f32save"
fi

if partition_jobs "gaps allowed" "$DATA/gap" "$DATA/p-gap" 2 '"allow_gaps": true, ' &&
	finalize_job "gaps allowed" "$DATA/p-gap"; then
	same_files "gaps allowed: 2 partition jobs + finalize equal the CLI's one run" \
		"$DATA/cli-gap-allowed" "$DATA/p-gap"
fi

post_job "$(job_json "$DATA/gap" "$DATA/p-bad" hf '{"partition": {"index": 0, "count": 2}}')"
expect_error "a partition of a damaged checkpoint: refused" 422 shard_missing
no_finished_output "a refused partition: nothing written" "$DATA/p-bad"
if [ ! -e "$DATA/p-bad/ckptconv-plan.json" ]; then
	pass "a refused partition: no manifest"
else
	fail "a refused partition: no manifest"
fi

daemon_stop
finish
