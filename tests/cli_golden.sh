#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_golden: the CLI against the reference implementation's outputs in
# golden/tiny: HF -> native, expert-parallel ranks, native -> HF, compared
# with `ckptconv verify` and with an independent Python digest; plus what
# the CLI shows around a conversion: dry runs write nothing, inspect and
# --json outputs parse and say the right things, shard splitting, exclude
# and overwrite.

. "$(dirname "$0")/lib.sh"
need_binary

G=$GOLDEN_DIR/tiny
T=$TEST_TMP

if [ ! -d "$G/hf" ]; then
	fail "golden checkpoints at $G"
	finish
fi

json_field() { # json_field FILE PYTHON-EXPRESSION-ON-d
	python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

# HF -> native equals the reference.
expect_ok "convert golden hf -> native" "$CKPTCONV" convert --to native "$G/hf" "$T/native"
expect_ok "verify native against golden native/" "$CKPTCONV" verify "$G/native" "$T/native"
same_tensors "native tensors identical (python digest)" "$G/native" "$T/native"
if cmp -s "$G/hf/config.json" "$T/native/config.json"; then
	pass "config.json copied unchanged"
else
	fail "config.json copied unchanged"
fi
assert_eq "single shard written as model.safetensors and the records, nothing else" \
	"ckptconv-plan.json ckptconv-sums.json config.json model.safetensors" "$(ls "$T/native" | tr '\n' ' ' | sed 's/ $//')"

# Expert-parallel output, both ranks of 2.
for rank in 0 1; do
	expect_ok "convert EP 2 rank $rank" "$CKPTCONV" convert --to native --ep-size 2 \
		--ep-rank "$rank" "$G/hf" "$T/ep2-rank$rank"
	expect_ok "verify EP 2 rank $rank against golden" "$CKPTCONV" verify \
		"$G/native-ep2-rank$rank" "$T/ep2-rank$rank"
done

# native -> HF equals the reference.
expect_ok "convert golden native -> hf" "$CKPTCONV" convert --to hf "$G/native" "$T/hf"
expect_ok "verify hf against golden hf-from-native/" "$CKPTCONV" verify "$G/hf-from-native" "$T/hf"
same_tensors "hf tensors identical (python digest)" "$G/hf-from-native" "$T/hf"
expect_ok "our native converted back equals the hf input" "$CKPTCONV" convert --to hf \
	"$T/native" "$T/hf-back"
expect_ok "verify round trip hf -> native -> hf" "$CKPTCONV" verify "$G/hf" "$T/hf-back"

# verify reports differences (so the checks above can fail).
expect_exit "verify hf against native differs (exit 1)" 1 "$CKPTCONV" verify "$G/hf" "$G/native"
if run_out | grep -q "^different"; then pass "verify prints a difference summary"; else
	fail "verify prints a difference summary"; show_run; fi
if run_out | grep -qx "note: expected is in the hf layout and actual in the native one; verify compares tensors by name: convert one side first"; then
	pass "verify says the two sides are in different layouts"; else
	fail "verify says the two sides are in different layouts"; show_run; fi
expect_exit "verify --json hf against native" 1 "$CKPTCONV" verify --json "$G/hf" "$G/native"
run_out >"$T/verify-layouts.json"
assert_eq "verify --json: layouts_differ" "True" "$(json_field "$T/verify-layouts.json" 'd["layouts_differ"]')"
expect_exit "verify rank 0 against rank 1 differs" 1 "$CKPTCONV" verify \
	"$G/native-ep2-rank0" "$T/ep2-rank1"
expect_exit "verify with an unreadable side (exit 1)" 1 "$CKPTCONV" verify "$G/hf" "$T/missing"
expect_ok "verify --json" "$CKPTCONV" verify --json "$G/native" "$T/native"
run_out >"$T/verify.json"
assert_eq "verify --json says equal" "True" "$(json_field "$T/verify.json" 'd["equal"]')"
assert_eq "verify --json: same layout" "False" "$(json_field "$T/verify.json" 'd["layouts_differ"]')"

# --dry-run prints the plan and writes nothing.
expect_ok "dry run" "$CKPTCONV" convert --to native --dry-run "$G/hf" "$T/dry"
if [ -s "$T/run.out" ]; then pass "dry run prints the plan"; else fail "dry run prints the plan"; fi
if [ ! -e "$T/dry" ]; then pass "dry run writes nothing"; else fail "dry run writes nothing"; fi
if grep -q "model.layers.1.mlp.experts.gate_and_up_projs" "$T/run.out"; then
	pass "dry-run plan names the grouped tensors"
else
	fail "dry-run plan names the grouped tensors"
fi
mkdir "$T/dry-existing"
expect_ok "dry run --json" "$CKPTCONV" convert --to native --dry-run --json "$G/hf" "$T/dry-existing"
if python3 -m json.tool "$T/run.out" >/dev/null 2>&1; then pass "dry-run --json parses"; else
	fail "dry-run --json parses"; show_run; fi
expect_empty "dry run into an existing directory leaves it empty" "$T/dry-existing"

# inspect: text and JSON.
expect_ok "inspect hf" "$CKPTCONV" inspect "$G/hf"
for want in "layout: *hf" "layers: *2" "experts: *4" "model-00005-of-00005.safetensors"; do
	if run_out | grep -q "$want"; then pass "inspect shows '$want'"; else
		fail "inspect shows '$want'"; show_run; fi
done
expect_ok "inspect --json hf" "$CKPTCONV" inspect --json "$G/hf"
run_out >"$T/inspect-hf.json"
if python3 -m json.tool "$T/inspect-hf.json" >/dev/null 2>&1; then pass "inspect --json parses"; else
	fail "inspect --json parses"; fi
expected_count=$(st_py "$ST_PY" count "$G/hf")
assert_eq "inspect --json tensor count" "$expected_count" "$(json_field "$T/inspect-hf.json" 'd["tensors"]')"
assert_eq "inspect --json layout" "hf" "$(json_field "$T/inspect-hf.json" 'd["layout"]')"
assert_eq "inspect --json experts" "4" "$(json_field "$T/inspect-hf.json" 'd["experts"]')"
assert_eq "inspect --json mtp_layers (none)" "0" "$(json_field "$T/inspect-hf.json" 'd["mtp_layers"]')"
assert_eq "inspect --json files" "5" "$(json_field "$T/inspect-hf.json" 'len(d["files"])')"
assert_eq "inspect --json bytes by dtype add up" \
	"$(json_field "$T/inspect-hf.json" 'd["bytes"]')" \
	"$(json_field "$T/inspect-hf.json" 'sum(d["bytes_by_dtype"].values())')"
expect_ok "inspect --json native" "$CKPTCONV" inspect --json "$G/native"
run_out >"$T/inspect-native.json"
assert_eq "inspect sees the native layout" "native" "$(json_field "$T/inspect-native.json" 'd["layout"]')"
expect_ok "inspect --tensors" "$CKPTCONV" inspect --tensors "$G/native"
if run_out | grep -q "^model.layers.1.mlp.experts.gate_and_up_projs BF16 \[4, 64, 64\] model.safetensors$"; then
	pass "inspect --tensors lists name, dtype, shape, file"
else
	fail "inspect --tensors lists name, dtype, shape, file"; show_run
fi
expect_ok "inspect a single .safetensors file" "$CKPTCONV" inspect "$G/native/model.safetensors"

# convert --json: one result object.
expect_ok "convert --json" "$CKPTCONV" convert --to native --json "$G/hf" "$T/native-json"
run_out >"$T/result.json"
assert_eq "result tensors" "$(st_py "$ST_PY" count "$G/native")" "$(json_field "$T/result.json" 'd["tensors"]')"
assert_eq "result lists the files written" "config.json model.safetensors" \
	"$(json_field "$T/result.json" '" ".join(sorted(d["files"]))')"
assert_eq "result has bytes, seconds, rate, warnings" "True" \
	"$(json_field "$T/result.json" 'd["bytes"] > 0 and d["seconds"] >= 0 and "bytes_per_second" in d and d["warnings"] == []')"
# bytes are tensor data bytes (what inspect counts), file_bytes the
# *.safetensors file's size, header included.
expect_ok "inspect the --json output" "$CKPTCONV" inspect --json "$T/native-json"
run_out >"$T/inspect-json-out.json"
assert_eq "result bytes are the output's tensor bytes" \
	"$(json_field "$T/inspect-json-out.json" 'd["bytes"]')" "$(json_field "$T/result.json" 'd["bytes"]')"
assert_eq "result file_bytes is the size of model.safetensors" \
	"$(stat -c %s "$T/native-json/model.safetensors")" "$(json_field "$T/result.json" 'd["file_bytes"]')"

# Shards: a small --max-shard-size splits the output and writes an index.
expect_ok "convert with --max-shard-size 40KB" "$CKPTCONV" convert --to native \
	--max-shard-size 40KB "$G/hf" "$T/sharded"
nshards=$(ls "$T/sharded" | grep -c '^model-.*-of-.*\.safetensors$')
if [ "$nshards" -gt 1 ] && [ -f "$T/sharded/model.safetensors.index.json" ]; then
	pass "several shards and an index ($nshards shards)"
else
	fail "several shards and an index" "$(ls "$T/sharded")"
fi
expect_ok "sharded output verifies" "$CKPTCONV" verify "$G/native" "$T/sharded"

# --overwrite replaces an earlier, larger conversion, leaving no stale shard.
expect_fail "a non-empty destination is refused" destination_not_empty "" \
	"$CKPTCONV" convert --to native "$G/hf" "$T/sharded"
expect_ok "convert --overwrite" "$CKPTCONV" convert --to native --overwrite "$G/hf" "$T/sharded"
assert_eq "overwrite removed the old shards and index" \
	"ckptconv-plan.json ckptconv-sums.json config.json model.safetensors" \
	"$(ls "$T/sharded" | tr '\n' ' ' | sed 's/ $//')"
expect_ok "overwritten output verifies" "$CKPTCONV" verify "$G/native" "$T/sharded"

# --exclude drops exactly the matching tensors.
expect_ok "convert --exclude" "$CKPTCONV" convert --to native --exclude '^lm_head\.' "$G/hf" "$T/excluded"
expect_exit "excluded output lacks one tensor" 1 "$CKPTCONV" verify --json "$G/native" "$T/excluded"
run_out >"$T/excluded.json"
assert_eq "only lm_head.weight is missing" "1 0 0" \
	"$(json_field "$T/excluded.json" '"%d %d %d" % (d["only_expected"], d["only_actual"], d["differences"] - d["only_expected"])')"

# One tensor in one file is counted in the singular.
expect_ok "convert --exclude all but one tensor" "$CKPTCONV" convert --to native \
	--exclude 'layers|lm_head|norm' "$G/hf" "$T/one-tensor"
assert_eq "convert says 1 tensor, 1 file" "converted 1 tensor (" "$(run_out | grep -o '^converted 1 tensor[s]* (')"
run_out | grep -q " into 1 file in " && pass "into 1 file" || fail "into 1 file" "$(run_out)"
expect_ok "inspect the one-tensor output" "$CKPTCONV" inspect "$T/one-tensor"
assert_eq "inspect says 1 tensor for the file" "1 tensor" "$(run_out | grep 'model.safetensors' | grep -o '1 tensors*$')"

# The result is the same whatever the thread count.
expect_ok "convert with --threads 1" "$CKPTCONV" convert --to native --threads 1 "$G/hf" "$T/native-t1"
same_files "1 thread and the default give byte-identical files" "$T/native" "$T/native-t1"

finish
