#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_bad_input: every class of bad input, through the real binary.  Each
# case starts from a copy of golden/tiny, breaks one thing with Python
# (standard library only) and asserts that `ckptconv convert` exits 1 (no
# crash), prints the exact error code, names the file or tensor at fault,
# and leaves nothing in the destination.  Then the destination failures
# (not writable, no room, not empty), a source truncated mid-conversion,
# cancellation by signal, and bad command lines (exit 2).

. "$(dirname "$0")/lib.sh"
need_binary

G=$GOLDEN_DIR/tiny
T=$TEST_TMP
S1=model-00001-of-00005.safetensors
S3=model-00003-of-00005.safetensors
S4=model-00004-of-00005.safetensors
S5=model-00005-of-00005.safetensors
QKV1=model.layers.1.attention.query_key_value.weight

if [ ! -d "$G/hf" ]; then
	fail "golden checkpoints at $G"
	finish
fi

# broken NAME [native]: a fresh copy of golden hf (or native) at $T/NAME.
broken() {
	rm -rf "$T/$1"
	copy_dir "$G/${2:-hf}" "$T/$1"
}

# py DIR: runs the Python on stdin with `from st import *` done and the
# checkpoint directory as the working directory.
py() {
	local dir=$1
	(cd "$dir" && st_py - <<PYEOF
from st import *
$(cat)
PYEOF
	)
}

# case_convert NAME CODE NAMES [ARGS...]: converting $T/NAME fails with
# CODE, naming NAMES, and leaves nothing behind.  ARGS default to --to native.
case_convert() {
	local name=$1 code=$2 names=$3
	shift 3
	[ $# -gt 0 ] || set -- --to native
	expect_fail "$name" "$code" "$names" "$CKPTCONV" convert "$@" "$T/$name" "$T/out-$name"
	expect_empty "$name: nothing left in the destination" "$T/out-$name"
}

# --- safetensors files ----------------------------------------------------

broken short-file
truncate -s 5 "$T/short-file/$S5"
case_convert short-file file_truncated "$S5"

# Cut inside the data area: the last tensor's data lies past the end.
broken truncated-data
truncate -s -100 "$T/truncated-data/$S4"
case_convert truncated-data offsets_out_of_bounds "$S4"

broken header-past-file
py "$T/header-past-file" <<'EOF'
import os
size = os.path.getsize("model-00005-of-00005.safetensors")
with open("model-00005-of-00005.safetensors", "r+b") as f:
    f.write(struct.pack("<Q", size))
EOF
case_convert header-past-file header_out_of_bounds "$S5"

broken header-huge
py "$T/header-huge" <<'EOF'
with open("model-00005-of-00005.safetensors", "r+b") as f:
    f.write(struct.pack("<Q", 100_000_001))
EOF
case_convert header-huge header_too_large "$S5"

broken header-array
py "$T/header-array" <<'EOF'
write_raw("model-00005-of-00005.safetensors", "[1, 2, 3]", b"")
EOF
case_convert header-array header_not_object "$S5"

broken header-garbage
py "$T/header-garbage" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
write_raw("model-00005-of-00005.safetensors", json.dumps(header)[:-7], data)
EOF
case_convert header-garbage header_invalid_json "$S5"

broken duplicate-name
py "$T/duplicate-name" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
name = "model.layers.1.mlp.shared_experts.down_proj.weight"
t = header[name]
# The same key twice, each entry covering half of the data.
half = json.dumps({"dtype": "BF16", "shape": [32, 32], "data_offsets": [0, 2048]})
other = json.dumps({"dtype": "BF16", "shape": [32, 32], "data_offsets": [2048, 4096]})
write_raw("model-00005-of-00005.safetensors",
          '{"%s": %s, "%s": %s, "__metadata__": {"format": "pt"}}' % (name, half, name, other),
          data)
EOF
case_convert duplicate-name duplicate_tensor "$S5"

broken unknown-dtype
py "$T/unknown-dtype" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
header["model.layers.1.mlp.shared_experts.down_proj.weight"]["dtype"] = "BF17"
write("model-00005-of-00005.safetensors", header, data)
EOF
case_convert unknown-dtype unknown_dtype "$S5"

broken negative-shape
py "$T/negative-shape" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
header["model.layers.1.mlp.shared_experts.down_proj.weight"]["shape"] = [-64, 32]
write("model-00005-of-00005.safetensors", header, data)
EOF
case_convert negative-shape invalid_shape "$S5"

broken fractional-shape
py "$T/fractional-shape" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
header["model.layers.1.mlp.shared_experts.down_proj.weight"]["shape"] = [64.5, 32]
write("model-00005-of-00005.safetensors", header, data)
EOF
case_convert fractional-shape invalid_shape "$S5"

broken offsets-mismatch
py "$T/offsets-mismatch" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
header["model.layers.1.mlp.shared_experts.down_proj.weight"]["shape"] = [64, 31]
write("model-00005-of-00005.safetensors", header, data)
EOF
case_convert offsets-mismatch offsets_mismatch "$S5"

broken overlap
py "$T/overlap" <<'EOF'
header, data = read("model-00004-of-00005.safetensors")
header["model.layers.1.mlp.experts.1.down_proj.weight"]["data_offsets"] = [2048, 6144]
write("model-00004-of-00005.safetensors", header, data)
EOF
case_convert overlap overlapping_tensors "$S4"

broken hole
py "$T/hole" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
header["model.layers.1.mlp.shared_experts.down_proj.weight"]["data_offsets"] = [64, 4160]
write("model-00005-of-00005.safetensors", header, bytes(64) + data)
EOF
case_convert hole data_hole "$S5"

broken offsets-past-end
py "$T/offsets-past-end" <<'EOF'
header, data = read("model-00005-of-00005.safetensors")
t = header["model.layers.1.mlp.shared_experts.down_proj.weight"]
t["shape"], t["data_offsets"] = [64, 40], [0, 5120]
write("model-00005-of-00005.safetensors", header, data)
EOF
case_convert offsets-past-end offsets_out_of_bounds "$S5"

broken trailing
printf 'trailing' >>"$T/trailing/$S5"
case_convert trailing trailing_bytes "$S5"

# --- the checkpoint -------------------------------------------------------

broken index-missing-file
rm "$T/index-missing-file/$S5"
case_convert index-missing-file index_missing_file "$S5"

broken weight-map-wrong-file
py "$T/weight-map-wrong-file" <<'EOF'
edit_index(".", add={"model.layers.1.mlp.shared_experts.down_proj.weight":
                     "model-00004-of-00005.safetensors"})
EOF
case_convert weight-map-wrong-file weight_map_mismatch "model.layers.1.mlp.shared_experts.down_proj.weight"

broken weight-map-missing-name
py "$T/weight-map-missing-name" <<'EOF'
edit_index(".", drop={"model.norm.weight"})
EOF
case_convert weight-map-missing-name weight_map_mismatch "model.norm.weight"

broken no-config
rm "$T/no-config/config.json"
case_convert no-config missing_config "config.json"

broken config-key
py "$T/config-key" <<'EOF'
edit_config(".", num_experts=None)
EOF
case_convert config-key missing_config_key "num_experts"

broken config-not-json
printf '{"architectures": ["BailingMoeV2ForCausalLM"],' >"$T/config-not-json/config.json"
case_convert config-not-json config_invalid "config.json"

broken ling-1x
py "$T/ling-1x" <<'EOF'
edit_config(".", architectures=["BailingMoeForCausalLM"])
EOF
case_convert ling-1x unsupported_model "BailingMoeForCausalLM"

# git-lfs pointers where the files should be (a clone without `git lfs
# pull`): every command that reads the checkpoint says so.
lfs_pointer() { # lfs_pointer FILE: FILE becomes a git-lfs pointer
	printf 'version https://git-lfs.github.com/spec/v1\noid sha256:%064d\nsize 88064\n' 0 >"$1"
}
broken lfs-shard
lfs_pointer "$T/lfs-shard/$S4"
case_convert lfs-shard lfs_pointer "$S4: a git-lfs pointer to 88064 bytes"
expect_fail "lfs-shard: inspect" lfs_pointer "$S4" "$CKPTCONV" inspect "$T/lfs-shard"
expect_fail "lfs-shard: verify" lfs_pointer "$S4" "$CKPTCONV" verify "$G/hf" "$T/lfs-shard"
broken lfs-config
lfs_pointer "$T/lfs-config/config.json"
case_convert lfs-config lfs_pointer "config.json: a git-lfs pointer"
broken lfs-index
lfs_pointer "$T/lfs-index/model.safetensors.index.json"
case_convert lfs-index lfs_pointer "model.safetensors.index.json: a git-lfs pointer"

# A dimension whose tensors no file could hold: config_invalid naming the
# key, from convert and from inspect alike.
broken config-overflow
py "$T/config-overflow" <<'EOF'
edit_config(".", head_dim=2**62)
EOF
case_convert config-overflow config_invalid "head_dim 4611686018427387904"
expect_ok "config-overflow: inspect describes the checkpoint" "$CKPTCONV" inspect "$T/config-overflow"
if run_out | grep -q "^convertible: *config_invalid: .*head_dim 4611686018427387904"; then
	pass "config-overflow: inspect says config_invalid naming head_dim"
else
	fail "config-overflow: inspect says config_invalid naming head_dim"
	show_run
fi

# --- model rules ----------------------------------------------------------

broken qkv-rows
py "$T/qkv-rows" <<'EOF'
rewrite("model-00003-of-00005.safetensors",
        shape={"model.layers.1.attention.query_key_value.weight": [120, 64]})
EOF
case_convert qkv-rows qkv_shape_mismatch "$QKV1"

broken missing-experts
py "$T/missing-experts" <<'EOF'
gone = {"model.layers.1.mlp.experts.2.gate_proj.weight",
        "model.layers.1.mlp.experts.3.up_proj.weight"}
rewrite("model-00004-of-00005.safetensors", drop=gone)
edit_index(".", drop=gone)
EOF
case_convert missing-experts missing_experts "model.layers.1.mlp.experts.2.gate_proj.weight"
if run_err | grep -Eq '(^|[ (:])2 '; then
	pass "missing_experts gives the count"
else
	fail "missing_experts gives the count" "$(run_err)"
fi

broken expert-shapes
py "$T/expert-shapes" <<'EOF'
rewrite("model-00004-of-00005.safetensors",
        shape={"model.layers.1.mlp.experts.3.gate_proj.weight": [16, 64],
               "model.layers.1.mlp.experts.3.up_proj.weight": [16, 64],
               "model.layers.1.mlp.experts.3.down_proj.weight": [64, 16]})
EOF
case_convert expert-shapes expert_shape_mismatch "model.layers.1.mlp.experts.3."

broken expert-number
py "$T/expert-number" <<'EOF'
extra = {"model.layers.1.mlp.experts.4.gate_proj.weight": ("BF16", [32, 64]),
         "model.layers.1.mlp.experts.4.up_proj.weight": ("BF16", [32, 64]),
         "model.layers.1.mlp.experts.4.down_proj.weight": ("BF16", [64, 32])}
rewrite("model-00005-of-00005.safetensors", add=extra)
edit_index(".", add={n: "model-00005-of-00005.safetensors" for n in extra})
EOF
case_convert expert-number expert_out_of_range "model.layers.1.mlp.experts.4."

broken grouped-count native
py "$T/grouped-count" <<'EOF'
edit_config(".", num_experts=8)
EOF
case_convert grouped-count grouped_shape_mismatch "model.layers.1.mlp.experts." --to hf

broken fp8
py "$T/fp8" <<'EOF'
rewrite("model-00005-of-00005.safetensors",
        dtype={"model.layers.1.mlp.shared_experts.down_proj.weight": "F8_E4M3"},
        shape={"model.layers.1.mlp.shared_experts.down_proj.weight": [64, 64]})
EOF
case_convert fp8 quantized_input "model.layers.1.mlp.shared_experts.down_proj.weight"

broken scale-inv
py "$T/scale-inv" <<'EOF'
name = "model.layers.1.mlp.shared_experts.down_proj.weight_scale_inv"
rewrite("model-00005-of-00005.safetensors", add={name: ("F32", [1, 1])})
edit_index(".", add={name: "model-00005-of-00005.safetensors"})
EOF
case_convert scale-inv quantized_input "weight_scale_inv"

broken fp8-native native
py "$T/fp8-native" <<'EOF'
rewrite("model.safetensors",
        dtype={"model.layers.1.mlp.shared_experts.down_proj.weight": "F8_E4M3"},
        shape={"model.layers.1.mlp.shared_experts.down_proj.weight": [64, 64]})
EOF
case_convert fp8-native quantized_input "model.layers.1.mlp.shared_experts.down_proj.weight" --to hf

broken qkv-dtypes native
py "$T/qkv-dtypes" <<'EOF'
rewrite("model.safetensors",
        dtype={"model.layers.1.self_attn.k_proj.weight": "F32"},
        shape={"model.layers.1.self_attn.k_proj.weight": [32, 32]})
EOF
case_convert qkv-dtypes qkv_mismatch "model.layers.1." --to hf

broken both-layouts
py "$T/both-layouts" <<'EOF'
old, new = "model.word_embeddings.weight", "model.embed_tokens.weight"
rewrite("model-00001-of-00005.safetensors", rename={old: new})
edit_index(".", rename={old: new})
EOF
case_convert both-layouts ambiguous_layout ""

broken already-hf
case_convert already-hf already_in_layout "" --to hf

mkdir -p "$T/empty-source"
case_convert empty-source not_a_checkpoint "$T/empty-source"
case_convert no-such-source source_not_found "$T/no-such-source"

# --- errors as JSON --------------------------------------------------------

run "$CKPTCONV" convert --to native --json "$T/trailing" "$T/out-json"
if [ "$RUN_RC" -eq 1 ] && python3 -c '
import json, sys
e = json.load(sys.stdin)["error"]
assert e["code"] == "trailing_bytes" and sys.argv[1] in e["message"]' "$S5" <"$T/run.out"; then
	pass "--json prints the error as {\"error\": {code, message}} on stdout"
else
	fail "--json prints the error as JSON"
	show_run
fi

# --- the destination -------------------------------------------------------

touch "$T/a-file"
expect_fail "destination under a regular file" destination_not_writable "$T/a-file" \
	"$CKPTCONV" convert --to native "$G/hf" "$T/a-file/out"
assert_eq "the regular file is untouched" "0" "$(stat -c %s "$T/a-file")"

mkdir -p "$T/not-empty"
echo keep >"$T/not-empty/notes.txt"
expect_fail "destination holding files" destination_not_empty "$T/not-empty" \
	"$CKPTCONV" convert --to native "$G/hf" "$T/not-empty"
assert_eq "its files are untouched" "notes.txt keep" \
	"$(ls "$T/not-empty") $(cat "$T/not-empty/notes.txt")"

# expect_absent NAME PATH: PATH does not exist.
expect_absent() {
	if [ -e "$2" ]; then
		fail "$1" "$(ls -la "$2" | head -5)"
	else
		pass "$1"
	fi
}

# A file size limit (ulimit -f, RLIMIT_FSIZE) below the output's size: the
# write fails with EFBIG instead of SIGXFSZ killing the process, the error
# names the file, and what was written (and published) is removed.  With
# 20 KB shards only model-00009 (32,920 bytes) is over 24 KiB, so eight
# shards are published before it fails.
expect_fail "file size limit, one output file" io_error "model.safetensors: File too large" \
	bash -c 'ulimit -f 100 && exec "$@"' limit "$CKPTCONV" convert --to native "$G/hf" "$T/fsize1"
expect_empty "file size limit, one output file: nothing left" "$T/fsize1"
expect_absent "file size limit: the destination directory the run created is removed" "$T/fsize1"
mkdir "$T/fsize-existing"
expect_fail "file size limit, into an empty directory that exists" io_error "File too large" \
	bash -c 'ulimit -f 100 && exec "$@"' limit "$CKPTCONV" convert --to native "$G/hf" \
	"$T/fsize-existing"
if [ -d "$T/fsize-existing" ]; then
	pass "... which stays: the run did not create it"
else
	fail "... which stays: the run did not create it" "$T/fsize-existing is gone"
fi
expect_fail "file size limit, a later shard" io_error "model-00009-of-00012.safetensors: File too large" \
	bash -c 'ulimit -f 24 && exec "$@"' limit "$CKPTCONV" convert --to native \
	--max-shard-size 20KB "$G/hf" "$T/fsize2"
expect_empty "file size limit, a later shard: published shards removed" "$T/fsize2"

unmount_small() {
	if mountpoint -q "$T/small" 2>/dev/null; then
		umount "$T/small"
	fi
}
mkdir -p "$T/small"
if mount -t tmpfs -o size=128k tmpfs "$T/small" 2>/dev/null; then
	CLEANUP_HOOKS+=(unmount_small)
	expect_fail "not enough free space (128 KiB tmpfs)" insufficient_space "$T/small/out" \
		"$CKPTCONV" convert --to native "$G/hf" "$T/small/out"
	if run_err | grep -q "need"; then pass "insufficient_space says how much is needed"; else
		fail "insufficient_space says how much is needed" "$(run_err)"; fi
	expect_empty "nothing written to the small filesystem" "$T/small/out"
	unmount_small
else
	skip "not enough free space: cannot mount a tmpfs here (the check_store suite covers the free-space check through its seam)"
fi

# --- a source truncated while it is converted, and cancellation ------------

# Starts a throttled conversion of $T/NAME in the background (SIGINT back to
# its default: shells start background jobs with it ignored).
start_slow() {
	local name=$1
	broken "$name"
	python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$CKPTCONV" convert --to native --max-rate 16KB \
		"$T/$name" "$T/out-$name" >"$T/$name.out" 2>"$T/$name.err" &
	SLOW_PID=$!
	wait_for_output "$T/out-$name"
}

# wait_for_output DIR: until the conversion has started writing into DIR
# (its checks are done and data moves), or has ended; at most 60 s.
wait_for_output() {
	local i
	for i in $(seq 600); do
		if [ -n "$(find "$1" -mindepth 1 2>/dev/null | head -1)" ] ||
			! kill -0 "$SLOW_PID" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	sleep 0.5
}

# finish_slow NAME CODE NAMES: the background conversion failed as expected.
finish_slow() {
	local name=$1 code=$2 names=$3 rc=0 line
	wait "$SLOW_PID" || rc=$?
	line=$(error_line "$T/$name.err")
	if [ "$rc" -eq 1 ] && [[ "$line" == "ckptconv: $code: "* ]] && [[ "$line" == *"$names"* ]]; then
		pass "$name: exit 1 with $code naming '$names'"
	else
		fail "$name: exit 1 with $code naming '$names'" "exit status $rc" "$(cat "$T/$name.err")"
	fi
	expect_empty "$name: nothing left in the destination" "$T/out-$name"
}

start_slow truncated-live
for f in "$T"/truncated-live/*.safetensors; do
	truncate -s 0 "$f"
done
finish_slow truncated-live source_truncated ".safetensors"
expect_absent "truncated-live: the destination directory the run created is removed" \
	"$T/out-truncated-live"

start_slow sigint
kill -INT "$SLOW_PID"
finish_slow sigint cancelled ""
expect_absent "sigint: the destination directory the run created is removed" "$T/out-sigint"

start_slow sigterm
kill -TERM "$SLOW_PID"
finish_slow sigterm cancelled ""

# --- bad command lines: exit 2, nothing written ----------------------------

usage() { # usage NAME CODE ARGS...
	local name=$1 code=$2
	shift 2
	run "$CKPTCONV" "$@"
	if [ "$RUN_RC" -eq 2 ] && run_err | grep -q "^ckptconv: $code: "; then
		pass "usage: $name"
	else
		fail "usage: $name (exit 2, $code)" "command: ckptconv $*"
		show_run
	fi
}
usage "unknown command" usage_error frobnicate
usage "convert without --to" usage_error convert "$G/hf" "$T/u1"
usage "--to bogus" usage_error convert --to gguf "$G/hf" "$T/u2"
usage "--ep-size with --to hf" usage_error convert --to hf --ep-size 2 --ep-rank 0 "$G/native" "$T/u3"
# --dtype with --to hf is for consolidating a sharded checkpoint; elsewhere refused.
usage "--dtype with --to hf" invalid_option convert --to hf --dtype bf16 "$G/native" "$T/u4"
usage "--ep-size without --ep-rank" usage_error convert --to native --ep-size 2 "$G/hf" "$T/u5"
usage "--ep-rank without --ep-size" usage_error convert --to native --ep-rank 0 "$G/hf" "$T/u6"
usage "--ep-rank not below --ep-size" usage_error convert --to native --ep-size 2 --ep-rank 2 "$G/hf" "$T/u7"
usage "--dtype bogus" usage_error convert --to native --dtype f8 "$G/hf" "$T/u8"
usage "--max-shard-size bad unit" invalid_size convert --to native --max-shard-size 5XB "$G/hf" "$T/u9"
usage "--max-rate not a size" invalid_size convert --to native --max-rate fast "$G/hf" "$T/u10"
usage "--threads 0" usage_error convert --to native --threads 0 "$G/hf" "$T/u11"
usage "missing DST" usage_error convert --to native "$G/hf"
usage "extra argument" usage_error convert --to native "$G/hf" "$T/u12" "$T/u13"
usage "unknown option" usage_error convert --to native --fast "$G/hf" "$T/u14"
usage "invalid --exclude" invalid_exclude convert --to native --exclude '(' "$G/hf" "$T/u15"
# Patterns beyond the bounds on their cost are refused before regcomp sees
# them, as the daemon refuses options.exclude (exclude.h).
exclude_bound() { # exclude_bound NAME PATTERN MESSAGE DST
	usage "$1" invalid_exclude convert --to native --exclude "$2" "$G/hf" "$4"
	if run_err | grep -qF -- "$3"; then
		pass "$1: the message says '$3'"
	else
		fail "$1: the message says '$3'" "$(run_err)"
	fi
	expect_empty "$1: nothing written" "$4"
}
exclude_bound "--exclude with nested repetitions" '((a{1,100}){1,100}){1,100}' \
	"expands to more than 4000 regular-expression nodes" "$T/u19"
# The error line shows the pattern as typed (a backslash is doubled only
# where it could be read as the start of an escape such as \x1b).
exclude_bound "--exclude with a back-reference" '^(.*)(.*)\2\1$' \
	'back-references such as \2 (offset 9) are not allowed' "$T/u20"
usage "--exclude '(a)\\1'" invalid_exclude convert --to native --exclude '(a)\1' "$G/hf" "$T/u22"
assert_eq "--exclude '(a)\\1': the pattern as typed" \
	"ckptconv: invalid_exclude: exclude pattern '(a)\1': back-references such as \1 (offset 3) are not allowed" \
	"$(run_err)"
exclude_bound "--exclude over 1024 bytes" "$(head -c 1100 /dev/zero | tr '\0' a)" \
	"1100 bytes long, over the limit of 1024" "$T/u21"
usage "bad --s3-addressing-style" s3_config convert --to native --s3-addressing-style sideways \
	"$G/hf" "$T/u18"
usage "fixture without --preset" usage_error fixture "$T/u16"
usage "fixture --preset huge" usage_error fixture --preset huge "$T/u17"
usage "fixture --sharded 0" usage_error fixture --preset tiny --sharded 0 "$T/u19"
usage "fixture --sharded not a number" usage_error fixture --preset tiny --sharded x "$T/u20"
usage "inspect without PATH" usage_error inspect
usage "verify with one side" usage_error verify "$G/hf"
expect_empty "no usage error wrote anything" "$T/u1"
for i in $(seq 2 20); do
	[ -e "$T/u$i" ] && fail "usage error wrote $T/u$i"
done
run "$CKPTCONV"
assert_eq "no arguments: exit 2" 2 "$RUN_RC"

expect_ok "--version" "$CKPTCONV" --version
if run_out | grep -q '^ckptconv [0-9]'; then pass "--version prints the version"; else
	fail "--version prints the version"; fi
expect_ok "--help" "$CKPTCONV" --help
for cmd in convert inspect verify fixture; do
	expect_ok "$cmd --help" "$CKPTCONV" "$cmd" --help
	if run_out | grep -q "^Usage: ckptconv $cmd"; then pass "$cmd --help prints its usage"; else
		fail "$cmd --help prints its usage"; fi
done

finish
