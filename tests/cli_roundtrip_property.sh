#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_roundtrip_property: whatever `ckptconv convert` accepts converts back.
# Over every fixture (the golden tiny checkpoints, what Automodel's
# consolidation writes, the tiny `fixture` preset; mini's two layers hold
# 1.6 GB of experts, bench/ material) and a set of inputs changed the ways
# real checkpoints differ from the golden one
# (config.json as newer transformers writes it, other prefixes, extra
# layers and tensors, INT8 experts) or are malformed (tensors the other
# layout has no place for, dimensions that overflow), each case is
# converted, and:
#
#   - accepted: the output converts back, and where SPEC.md calls the round
#     trip lossless `verify` and an independent digest find the original
#     tensors, bit for bit;
#   - refused: exit 1 with the expected code, naming the tensor or file at
#     fault, and nothing written.
#
# Each case also states which of the two it must be, so a case that flips
# fails here.

. "$(dirname "$0")/lib.sh"
need_binary

G=$GOLDEN_DIR/tiny
T=$TEST_TMP
ACCEPTED=0
REFUSED=0

if [ ! -d "$G/hf" ]; then
	fail "golden checkpoints at $G"
	finish
fi

# mutate NAME BASE: a writable copy of golden BASE (hf, native, ...) at
# $T/NAME, changed by the Python on stdin (run in the copy, with the st.py
# helpers imported).
mutate() {
	local name=$1 base=$2
	rm -rf "${T:?}/$name"
	copy_dir "$G/$base" "$T/$name"
	(cd "$T/$name" && st_py - <<PYEOF
from st import *
$(cat)
PYEOF
	)
}

# property NAME SRC EXPECT [CONVERT ARGS...]: converts SRC as ARGS say
# (they include --to); EXPECT is "lossless" (accepted, and back gives SRC's
# tensors bit for bit), "converts" (accepted, and back succeeds) or
# "CODE:FRAGMENT" (refused with CODE, the message naming FRAGMENT).
property() {
	local name=$1 src=$2 expect=$3 to back out line srcdir=$2
	shift 3
	[ -f "$src" ] && srcdir=$(dirname "$src")
	to=$(printf '%s\n' "$@" | sed -n '/^--to$/{n;p}')
	back=hf
	[ "$to" = hf ] && back=native
	out=$T/out/$name
	mkdir -p "$T/out" "$T/back"
	rm -rf "$out" "$T/back/$name"
	run "$CKPTCONV" convert --no-fsync "$@" "$src" "$out"
	if [ "$RUN_RC" -ne 0 ]; then
		REFUSED=$((REFUSED + 1))
		line=$(error_line "$TEST_TMP/run.err")
		case "$expect" in
		lossless | converts)
			fail "$name: accepted" "refused: $line"
			return
			;;
		esac
		if [ "$RUN_RC" -eq 1 ] && [[ "$line" == "ckptconv: ${expect%%:*}: "* ]] &&
			[[ "$line" == *"${expect#*:}"* ]]; then
			pass "$name: refused with ${expect%%:*} naming '${expect#*:}'"
		else
			fail "$name: refused with ${expect%%:*} naming '${expect#*:}'" "exit status $RUN_RC" "$line"
		fi
		expect_empty "$name: nothing written" "$out"
		return
	fi
	ACCEPTED=$((ACCEPTED + 1))
	case "$expect" in
	lossless | converts) ;;
	*)
		# Still held to the invariant below.
		fail "$name: refused with ${expect%%:*}" "accepted"
		;;
	esac
	# --dtype keep: back to native keeps what to_hf wrote.
	if [ "$back" = native ]; then
		expect_ok "$name: accepted, and converts back" \
			"$CKPTCONV" convert --no-fsync --to native --dtype keep "$out" "$T/back/$name" || return
	else
		expect_ok "$name: accepted, and converts back" \
			"$CKPTCONV" convert --no-fsync --to hf "$out" "$T/back/$name" || return
	fi
	if [ "$expect" = lossless ]; then
		expect_ok "$name: verify finds the original tensors" "$CKPTCONV" verify "$src" "$T/back/$name"
		same_tensors "$name: bit for bit (python digest)" "$srcdir" "$T/back/$name"
	fi
}

# --- fixtures ----------------------------------------------------------------

property golden-hf "$G/hf" lossless --to native
property golden-native "$G/native" lossless --to hf
property golden-hf-from-native "$G/hf-from-native" lossless --to native
property golden-native-file "$G/native/model.safetensors" lossless --to hf
property golden-hf-keep "$G/hf" lossless --to native --dtype keep
property golden-hf-f32 "$G/hf" converts --to native --dtype f32
property golden-hf-small-shards "$G/hf" lossless --to native --max-shard-size 20KB
# An expert-parallel rank's output is one share of a native checkpoint, not
# a checkpoint of its own: converting it alone back is refused (SPEC.md:
# E must equal num_experts).
property golden-ep-rank "$G/native-ep2-rank0" "grouped_shape_mismatch:model.layers.1.mlp.experts." --to hf
property golden-ep-rank1 "$G/native-ep2-rank1" "grouped_shape_mismatch:model.layers.1.mlp.experts." --to hf

# What NeMo Automodel's offline consolidation writes (golden/consolidate):
# HF checkpoints whose config.json carries "dtype" (and sometimes a
# different "torch_dtype"), some with F32 or F16 experts.  Kept as they
# are, each comes back bit for bit; cast to the model's dtype, each
# converts back.  One has experts of two dtypes in a layer (Automodel maps
# only rank 0's experts back to BF16): keeping that is refused, naming the
# first expert that differs.
CONSOLIDATED=0
for dir in "$GOLDEN_DIR"/consolidate/outputs/*/; do
	name=consolidate-$(basename "$dir")
	if [ "$name" = consolidate-tiny-ep2-f32save ]; then
		property "$name-keep" "$dir" \
			"expert_shape_mismatch:model.layers.1.mlp.experts.2.gate_proj.weight: dtype F32 differs from BF16" \
			--to native --dtype keep
	else
		property "$name-keep" "$dir" lossless --to native --dtype keep
	fi
	property "$name" "$dir" converts --to native
	CONSOLIDATED=$((CONSOLIDATED + 1))
done
assert_eq "every consolidation golden is a case" \
	"$(find "$GOLDEN_DIR/consolidate/outputs" -mindepth 1 -maxdepth 1 -type d | wc -l)" "$CONSOLIDATED"
if [ "$CONSOLIDATED" -ge 15 ]; then pass "the consolidation goldens are there ($CONSOLIDATED)"; else
	fail "the consolidation goldens are there" "found $CONSOLIDATED"; fi

expect_ok "fixture --preset tiny" "$CKPTCONV" fixture --preset tiny --seed 3 "$T/fixture-bf16"
expect_ok "fixture --preset tiny --dtype f32" "$CKPTCONV" fixture --preset tiny --dtype f32 "$T/fixture-f32"
property fixture-bf16 "$T/fixture-bf16" lossless --to native
property fixture-f32 "$T/fixture-f32" lossless --to native
property fixture-f32-keep "$T/fixture-f32" lossless --to native --dtype keep
property fixture-f32-bf16 "$T/fixture-f32" converts --to native --dtype bf16

# --- config.json as transformers writes it -----------------------------------

# transformers >= 4.56 saves "dtype", not "torch_dtype": a float16 model
# keeps float16 experts.
mutate f16-dtype-key hf <<'EOF'
map_tensors(".", dtype=lambda n, dt: "F16" if dt == "BF16" else dt)
edit_config(".", torch_dtype=None, dtype="float16")
EOF
property f16-dtype-key "$T/f16-dtype-key" lossless --to native
assert_eq "f16-dtype-key: grouped experts are F16" "F16 F16" \
	"$(st_py - "$T/out/f16-dtype-key" <<'PYEOF'
import sys
from st import tensors
t = tensors(sys.argv[1])
print(t["model.layers.1.mlp.experts.gate_and_up_projs"][1], t["model.layers.1.mlp.experts.down_projs"][1])
PYEOF
)"
expect_ok "inspect --json f16-dtype-key" "$CKPTCONV" inspect --json "$T/f16-dtype-key"
assert_eq "inspect shows the dtype and the key it comes from" "F16 dtype" \
	"$(run_out | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["dtype"], d["dtype_source"])')"
expect_ok "inspect f16-dtype-key" "$CKPTCONV" inspect "$T/f16-dtype-key"
if run_out | grep -q '^dtype: *F16 (config.json "dtype")$'; then
	pass "inspect text shows 'dtype: F16 (config.json \"dtype\")'"
else
	fail "inspect text shows the dtype and its key"
	show_run
fi

# Both keys: transformers uses dtype.
mutate both-dtype-keys hf <<'EOF'
map_tensors(".", dtype=lambda n, dt: "F32" if ".mlp.experts." in n else dt)
edit_config(".", torch_dtype="bfloat16", dtype="float32")
EOF
property both-dtype-keys "$T/both-dtype-keys" lossless --to native

mutate dtype-not-castable hf <<'EOF'
edit_config(".", dtype="float64")
EOF
property dtype-not-castable "$T/dtype-not-castable" 'config_invalid:config.json: dtype "float64"' --to native
property dtype-not-castable-named "$T/dtype-not-castable" lossless --to native --dtype bf16

# --- names and tensors --------------------------------------------------------

mutate language-model-prefix hf <<'EOF'
map_tensors(".", name=lambda n: n.replace("model.layers.", "model.language_model.layers."))
EOF
property language-model-prefix "$T/language-model-prefix" lossless --to native

mutate mtp-layer hf <<'EOF'
add_tensors(".", "model-00005-of-00005.safetensors",
            {"model.layers.2.attention.query_key_value.weight": ("BF16", [128, 64]),
             "model.layers.2.attention.dense.weight": ("BF16", [64, 64]),
             "model.layers.2.enorm.weight": ("BF16", [64]),
             "model.layers.2.hnorm.weight": ("BF16", [64]),
             "model.layers.2.eh_proj.weight": ("BF16", [64, 128]),
             "model.layers.2.final_layernorm.weight": ("BF16", [64]),
             **{f"model.layers.2.mlp.experts.{x}.{p}_proj.weight":
                ("BF16", [64, 32] if p == "down" else [32, 64])
                for x in range(4) for p in ("gate", "up", "down")}})
EOF
property mtp-layer "$T/mtp-layer" lossless --to native

# The MTP layer is a MoE layer: without routed experts it is refused.
mutate mtp-layer-no-experts hf <<'EOF'
add_tensors(".", "model-00005-of-00005.safetensors",
            {"model.layers.2.enorm.weight": ("BF16", [64]),
             "model.layers.2.eh_proj.weight": ("BF16", [64, 128])})
EOF
property mtp-layer-no-experts "$T/mtp-layer-no-experts" \
	"missing_experts:model.layers.2: a MoE layer (first_k_dense_replace 1) without routed experts" \
	--to native

mutate int8-experts hf <<'EOF'
map_tensors(".", dtype=lambda n, dt: "I8" if ".mlp.experts." in n else dt)
EOF
property int8-experts-keep "$T/int8-experts" lossless --to native --dtype keep
property int8-experts-auto "$T/int8-experts" "unsupported_cast:I8 cannot be cast to BF16" --to native

# --- what the other layout has no place for ------------------------------------

mutate expert-bias hf <<'EOF'
add_tensors(".", "model-00005-of-00005.safetensors",
            {"model.layers.1.mlp.experts.1.down_proj.bias": ("BF16", [64])})
EOF
property expert-bias "$T/expert-bias" "unsupported_tensor:model.layers.1.mlp.experts.1.down_proj.bias" --to native
property expert-bias-ep "$T/expert-bias" "unsupported_tensor:model.layers.1.mlp.experts.1.down_proj.bias" \
	--to native --ep-size 2 --ep-rank 1
property expert-bias-excluded "$T/expert-bias" converts --to native --exclude 'experts\.1\.down_proj\.bias'

mutate int8-experts-scales hf <<'EOF'
map_tensors(".", dtype=lambda n, dt: "I8" if ".mlp.experts." in n else dt)
add_tensors(".", "model-00005-of-00005.safetensors",
            {"model.layers.1.mlp.experts.%d.%s.weight_scale" % (e, p): ("F32", [64 if p == "down_proj" else 32, 1])
             for e in range(4) for p in ("gate_proj", "up_proj", "down_proj")})
EOF
property int8-experts-scales "$T/int8-experts-scales" \
	"unsupported_tensor:model.layers.1.mlp.experts.0.down_proj.weight_scale" --to native --dtype keep

mutate transformer-prefix hf <<'EOF'
map_tensors(".", name=lambda n: n.replace("model.layers.", "transformer.layers."))
EOF
property transformer-prefix "$T/transformer-prefix" \
	"missing_experts:transformer.layers.1: a MoE layer (first_k_dense_replace 1) without routed experts" \
	--to native

mutate no-model-prefix-embeddings hf <<'EOF'
map_tensors(".", name=lambda n: n.replace("model.word_embeddings.", "word_embeddings."))
EOF
property no-model-prefix-embeddings "$T/no-model-prefix-embeddings" \
	"unsupported_tensor:word_embeddings.weight" --to native

mutate qkv-bias hf <<'EOF'
add_tensors(".", "model-00005-of-00005.safetensors",
            {"model.layers.0.attention.query_key_value.bias": ("BF16", [128])})
EOF
property qkv-bias "$T/qkv-bias" "unsupported_tensor:model.layers.0.attention.query_key_value.bias" --to native

mutate expert-leading-zero hf <<'EOF'
map_tensors(".", name=lambda n: n.replace(".experts.2.", ".experts.02."))
EOF
property expert-leading-zero "$T/expert-leading-zero" \
	"unsupported_tensor:model.layers.1.mlp.experts.02.down_proj.weight (comes back as model.layers.1.mlp.experts.2.down_proj.weight)" \
	--to native

mutate native-attn-bias native <<'EOF'
name = "model.layers.1.self_attn.k_proj.bias"
rewrite("model.safetensors", add={name: ("BF16", [32])})
EOF
property native-attn-bias "$T/native-attn-bias" "unsupported_tensor:model.layers.1.self_attn.k_proj.bias" --to hf

mutate native-q-rows native <<'EOF'
rewrite("model.safetensors", shape={"model.layers.1.self_attn.q_proj.weight": [48, 64]})
EOF
property native-q-rows "$T/native-q-rows" \
	"qkv_shape_mismatch:model.layers.1.self_attn.q_proj.weight: the output could not be converted back" --to hf

# --- dimensions (more in cli_bad_input.sh) -------------------------------------

mutate experts-overflow native <<'EOF'
edit_config(".", num_experts=2**58)
EOF
property experts-overflow "$T/experts-overflow" "config_invalid:num_experts 288230376151711744" --to hf

if [ "$ACCEPTED" -gt 0 ] && [ "$REFUSED" -gt 0 ]; then
	pass "the cases cover both sides: $ACCEPTED accepted, $REFUSED refused"
else
	fail "the cases cover both sides" "$ACCEPTED accepted, $REFUSED refused"
fi

finish
