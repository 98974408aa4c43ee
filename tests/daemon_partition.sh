#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_partition.sh: partitioned conversion through the API.  Three
# partition jobs share one destination (the destination_in_use rule lets
# them run together), a finalize job finishes it, and the result is byte
# for byte the output of one unpartitioned `ckptconv convert`.  Also: an
# invalid partition is refused, finalize before every partition is done
# fails with partition_incomplete, finalize of a manifest whose source is
# outside --allow-root fails with forbidden_path, and the options survive a
# restart.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

OUTSIDE="$TEST_TMP/outside"
mkdir -p "$OUTSIDE"
expect_ok "tiny fixture" "$CKPTCONV" fixture --preset tiny "$DATA/src"
expect_ok "reference conversion" "$CKPTCONV" convert --to native --max-shard-size 20KB \
	"$DATA/src" "$TEST_TMP/reference"

daemon_start --max-running 3 --workers 2

# ---- requests that are refused ------------------------------------------------------
post_job "$(job_json "$DATA/src" "$DATA/bad" native '{"partition": {"index": 3, "count": 3}}')"
expect_error "index not below count" 400 invalid_partition options.partition
post_job "$(job_json "$DATA/src" "$DATA/bad" native '{"partition": {"index": 0, "count": 0}}')"
expect_error "count 0" 400 invalid_partition options.partition
post_job "$(job_json "$DATA/src" "$DATA/bad" native '{"partition": {"index": 0, "count": 2, "of": 1}}')"
expect_error "unknown partition member" 400 unknown_field options.partition.of
post_job '{"destination": "'"$DATA/bad"'", "options": {"finalize": true, "dtype": "bf16"}}'
expect_error "finalize with a conversion option" 400 invalid_field options.dtype
post_job "$(job_json "$DATA/src" "$DATA/bad" native '{"finalize": "yes"}')"
expect_error "finalize not a boolean" 400 invalid_field options.finalize

# ---- three partitions, one destination, then finalize --------------------------------
# Throttled so that the partitions still run while the next two requests
# are planned on a loaded machine (about 8 s each).
part_options() {
	printf '{"max_shard_size": "20KB", "max_bytes_per_second": "8KB", "partition": {"index": %s, "count": 3}}' "$1"
}
PARTS=()
for i in 0 1 2; do
	submit "partition $i/3" "$DATA/src" "$DATA/out" native "$(part_options "$i")"
	PARTS+=("$JOB")
done
post_job "$(job_json "$DATA/src" "$DATA/out" native "$(part_options 1)")"
expect_error "the same partition twice at once" 409 destination_in_use destination
post_job "$(job_json "$DATA/src" "$DATA/out" native '{"max_shard_size": "20KB"}')"
expect_error "an unpartitioned job on a partitioned destination" 409 destination_in_use destination
for i in 0 1 2; do
	expect_job "partition $i/3 succeeds" "${PARTS[$i]}" succeeded 120
done
api GET "/v1/jobs/${PARTS[1]}"
assert_eq "partition job echoes options.partition" '{"index": 1, "count": 3}' "$(jget options.partition)"
assert_eq "partition result names its partition" 1 "$(jget result.partition.index)"
assert_eq "a finished partition's progress counts its own tensors" \
	"$(jget result.tensors)/$(jget result.tensors)" \
	"$(jget progress.tensors_done)/$(jget progress.tensors_total)"
PLANNED=$(jget result.partition.planned_files)
WRITTEN=0
for id in "${PARTS[@]}"; do
	WRITTEN=$((WRITTEN + $(job_field "$id" result.files.#)))
done
assert_eq "the partitions write every planned file once" "$PLANNED" "$WRITTEN"

post_job '{"destination": "'"$DATA/out"'", "options": {"finalize": true}}'
if [ "$STATUS" = 201 ]; then
	pass "finalize job: 201"
	FIN=$(jget id)
	expect_job "finalize succeeds" "$FIN" succeeded 60
	api GET "/v1/jobs/$FIN"
	assert_eq "finalize result names the manifest's source" "$DATA/src" "$(jget result.finalize.source)"
	assert_eq "finalize job echoes options.finalize" true "$(jget options.finalize)"
else
	fail "finalize job: 201" "status $STATUS" "$(head -c 400 "$BODY")"
fi

SAME=yes
# The records by their entries (each run records its own identities), the
# plan manifest but for the boot a one-machine run names.
for f in "$TEST_TMP/reference"/*; do
	case "$(basename "$f")" in
	ckptconv-sums.json) [ "$(same_sums "$TEST_TMP/reference" "$DATA/out")" = same ] ;;
	ckptconv-plan.json) [ "$(same_plan_manifest "$f" "$DATA/out/ckptconv-plan.json")" = same ] ;;
	*) cmp -s "$f" "$DATA/out/$(basename "$f")" ;;
	esac || { SAME="differs: $(basename "$f")"; break; }
done
[ "$SAME" = yes ] && [ "$(ls "$TEST_TMP/reference" | wc -l)" = "$(ls -A "$DATA/out" | wc -l)" ] ||
	SAME="${SAME}; files: $(ls -A "$DATA/out" | tr '\n' ' ')"
assert_eq "partitioned output is byte-identical to one conversion" yes "$SAME"

# ---- finalize too early ------------------------------------------------------------------
submit "partition 0/3 alone" "$DATA/src" "$DATA/early" native \
	'{"max_shard_size": "20KB", "partition": {"index": 0, "count": 3}}'
expect_job "lone partition succeeds" "$JOB" succeeded 60
post_job '{"destination": "'"$DATA/early"'", "options": {"finalize": true}}'
EARLY=$(jget id)
expect_job "finalize before every partition is done fails" "$EARLY" failed 60
assert_eq "early finalize: partition_incomplete" partition_incomplete "$(job_field "$EARLY" error.code)"
[ ! -e "$DATA/early/model.safetensors.index.json" ] && pass "early finalize publishes no index" ||
	fail "early finalize publishes no index"

# ---- a manifest whose source the service may not read ------------------------------------
expect_ok "fixture outside the allowed root" "$CKPTCONV" fixture --preset tiny "$OUTSIDE/src"
expect_ok "CLI partition from outside the root" "$CKPTCONV" convert --to native --partition 0/1 \
	"$OUTSIDE/src" "$DATA/foreign"
post_job '{"destination": "'"$DATA/foreign"'", "options": {"finalize": true}}'
FOREIGN=$(jget id)
expect_job "finalize of a foreign source fails" "$FOREIGN" failed 60
assert_eq "foreign source: forbidden_path" forbidden_path "$(job_field "$FOREIGN" error.code)"
[ -e "$DATA/foreign/ckptconv-plan.json" ] && [ ! -e "$DATA/foreign/config.json" ] &&
	pass "foreign finalize leaves the destination as it was" ||
	fail "foreign finalize leaves the destination as it was" "$(ls -A "$DATA/foreign")"

# ---- the options survive a restart ---------------------------------------------------------
daemon_stop
daemon_start --max-running 3
assert_eq "restart keeps options.partition" 3 "$(job_field "${PARTS[2]}" options.partition.count)"
assert_eq "restart keeps options.finalize" true "$(job_field "$FIN" options.finalize)"
assert_eq "restart keeps the finalize result" "$DATA/src" "$(job_field "$FIN" result.finalize.source)"

daemon_stop
assert_eq "clean exit on SIGTERM" 0 "$DAEMON_RC"
finish
