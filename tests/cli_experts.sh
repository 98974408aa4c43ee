#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_experts: routed experts stored packed, as transformers keeps them
# (model.layers.N.mlp.experts.gate_up_proj [E, 2I, H], gate rows then up
# rows per expert, and down_proj [E, H, I]).  The golden checkpoint packed
# by an independent Python script converts to native into the same bytes
# as the per-expert golden checkpoint does, with expert parallelism and
# --dtype; back to HF it has the per-expert names; `inspect` names the
# layout.  A MoE layer without routed experts is missing_experts naming
# the layer and what it holds, and nothing is written.

. "$(dirname "$0")/lib.sh"
need_binary

G=$GOLDEN_DIR/tiny
T=$TEST_TMP

json_field() { # json_field FILE PYTHON-EXPRESSION-ON-d
	python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

# pack SRC DST [DROP_LAYER_BASE] [RENAME_SUFFIX]: DST is SRC with every
# layer's per-expert tensors packed into gate_up_proj and down_proj (one
# model.safetensors and config.json).  DROP_LAYER_BASE ("…layers.1.mlp.experts.")
# leaves that layer's experts out entirely; RENAME_SUFFIX is appended to
# the packed names.
pack() {
	st_py - "$@" <<'PYEOF'
import os, re, shutil, sys
from st import *
src, dst = sys.argv[1], sys.argv[2]
drop = sys.argv[3] if len(sys.argv) > 3 else ""
suffix = sys.argv[4] if len(sys.argv) > 4 else ""
os.makedirs(dst)
shutil.copy(os.path.join(src, "config.json"), dst)
expert = re.compile(r"^(.*layers\.\d+\.mlp\.experts\.)(\d+)\.(gate|up|down)_proj\.weight$")
layers, out = {}, {}
for name, entry in tensors(src).items():
    m = expert.match(name)
    if m:
        layers.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = entry
    else:
        out[name] = (entry[1], entry[2], tensor_bytes(entry))
for base, ex in layers.items():
    if base == drop:
        continue
    n = 1 + max(x for x, _ in ex)
    gate, down = ex[(0, "gate")], ex[(0, "down")]
    inter, hidden = gate[2]
    gate_up = b"".join(tensor_bytes(ex[(x, "gate")]) + tensor_bytes(ex[(x, "up")])
                       for x in range(n))
    downs = b"".join(tensor_bytes(ex[(x, "down")]) for x in range(n))
    out[base + "gate_up_proj" + suffix] = (gate[1], [n, 2 * inter, hidden], gate_up)
    out[base + "down_proj" + suffix] = (down[1], [n, hidden, inter], downs)
header, blob = {"__metadata__": {"format": "pt"}}, bytearray()
for name in sorted(out):
    dtype, shape, data = out[name]
    header[name] = {"dtype": dtype, "shape": shape,
                    "data_offsets": [len(blob), len(blob) + len(data)]}
    blob += data
write(os.path.join(dst, "model.safetensors"), header, bytes(blob))
PYEOF
}

# same_bytes NAME DIR_A DIR_B: both hold the same files, byte for byte.
# The checkpoints' files (not the records, which name another source).
same_bytes() {
	if [ -f "$2/model.safetensors" ]; then
		same_files "$@"
	else
		fail "$1" "no $2/model.safetensors"
	fi
}

if ! pack "$G/hf" "$T/packed"; then
	fail "pack the golden checkpoint"
	finish
fi
GU=model.layers.1.mlp.experts.gate_up_proj
assert_eq "the packed fixture has gate_up_proj [E, 2I, H] and no per-expert tensor" \
	"[4, 64, 64] 0" "$(st_py - "$T/packed" <<'PYEOF'
import sys
from st import *
t = tensors(sys.argv[1])
print(t["model.layers.1.mlp.experts.gate_up_proj"][2],
      sum(".experts.0." in n for n in t))
PYEOF
)"

# inspect names how the experts are stored.
expect_ok "inspect --json packed" "$CKPTCONV" inspect --json "$T/packed"
run_out >"$T/inspect.json"
assert_eq "inspect: packed experts, HF layout" "packed hf" \
	"$(json_field "$T/inspect.json" 'd["experts_layout"] + " " + d["layout"]')"
expect_ok "inspect packed" "$CKPTCONV" inspect "$T/packed"
if run_out | grep -q "^experts: *4 (packed)$"; then pass "inspect text names the packed layout"
else fail "inspect text names the packed layout"; show_run; fi
for pair in hf:per_expert native:grouped; do
	expect_ok "inspect --json golden ${pair%%:*}" "$CKPTCONV" inspect --json "$G/${pair%%:*}"
	run_out >"$T/inspect.json"
	assert_eq "inspect: golden ${pair%%:*} experts are ${pair#*:}" "${pair#*:}" \
		"$(json_field "$T/inspect.json" 'd["experts_layout"]')"
done

# To native: the same bytes as from the per-expert checkpoint, whole, per
# expert-parallel rank, and cast.
for opts in "" "--ep-size 2 --ep-rank 0" "--ep-size 2 --ep-rank 1" "--ep-size 3 --ep-rank 2" \
	"--dtype f32" "--dtype f16 --ep-size 3 --ep-rank 1" "--dtype keep"; do
	tag=$(echo "x $opts" | tr ' -' '_')
	# shellcheck disable=SC2086
	expect_ok "per-expert to native $opts" "$CKPTCONV" convert --to native $opts \
		"$G/hf" "$T/ref$tag"
	# inspect says how many of the experts an expert-parallel rank holds.
	case "$opts" in
	"--ep-size 2 --ep-rank 1") want="experts:       2 of 4 (grouped: one expert-parallel rank's share)" ;;
	"--ep-size 3 --ep-rank 2") want="experts:       1 of 4 (grouped: one expert-parallel rank's share)" ;;
	"") want="experts:       4 (grouped)" ;;
	*) want= ;;
	esac
	if [ -n "$want" ]; then
		expect_ok "inspect native $opts" "$CKPTCONV" inspect "$T/ref$tag"
		assert_eq "inspect native $opts: the experts it holds" "$want" "$(run_out | grep '^experts:')"
	fi
	# shellcheck disable=SC2086
	expect_ok "packed to native $opts" "$CKPTCONV" convert --to native $opts \
		"$T/packed" "$T/out$tag"
	same_bytes "packed to native $opts: byte-identical to the per-expert path" \
		"$T/ref$tag" "$T/out$tag"
done
expect_ok "packed to native equals the reference's native" "$CKPTCONV" verify "$G/native" "$T/outx_"
expect_ok "packed EP 2 rank 1 equals the reference's rank 1" "$CKPTCONV" verify \
	"$G/native-ep2-rank1" "$T/outx___ep_size_2___ep_rank_1"

# Back to HF: the published per-expert names, the golden tensors.
expect_ok "native from packed to hf" "$CKPTCONV" convert --to hf "$T/outx_" "$T/hf-back"
expect_ok "hf from packed equals the golden hf" "$CKPTCONV" verify "$G/hf" "$T/hf-back"
if st_py "$ST_PY" digest "$T/hf-back" | grep -q "^model.layers.1.mlp.experts.3.up_proj.weight "; then
	pass "hf output names experts one by one"
else
	fail "hf output names experts one by one"
fi

# A MoE layer without routed experts: refused up front, nothing written.
pack "$G/hf" "$T/no-experts" model.layers.1.mlp.experts.
want="model.layers.1: a MoE layer (first_k_dense_replace 1) without routed experts, neither"
want+=" model.layers.1.mlp.experts.E.{gate,up,down}_proj.weight nor"
want+=" model.layers.1.mlp.experts.{gate_up_proj,down_proj}; its MLP tensors:"
want+=" model.layers.1.mlp.gate.expert_bias, model.layers.1.mlp.gate.weight,"
want+=" model.layers.1.mlp.shared_experts.down_proj.weight,"
want+=" model.layers.1.mlp.shared_experts.gate_proj.weight and 1 more"
expect_fail "layer without experts" missing_experts "" \
	"$CKPTCONV" convert --to native "$T/no-experts" "$T/no-experts-out"
assert_eq "missing_experts message" "ckptconv: missing_experts: $want" \
	"$(error_line "$T/run.err")"
expect_empty "layer without experts: nothing written" "$T/no-experts-out"
expect_fail "layer without experts, dry run" missing_experts "model.layers.1:" \
	"$CKPTCONV" convert --to native --dry-run "$T/no-experts" "$T/no-experts-dry"
expect_empty "dry run: nothing written" "$T/no-experts-dry"
expect_fail "layer without experts, EP rank" missing_experts "model.layers.1:" \
	"$CKPTCONV" convert --to native --ep-size 2 --ep-rank 1 "$T/no-experts" "$T/no-experts-ep"
expect_empty "EP rank: nothing written" "$T/no-experts-ep"
mkdir "$T/existing"
expect_fail "into an existing empty directory" missing_experts "model.layers.1:" \
	"$CKPTCONV" convert --to native "$T/no-experts" "$T/existing"
expect_empty "existing directory left empty" "$T/existing"

# Packed under names ckptconv does not read (".weight" appended): listed.
pack "$G/hf" "$T/odd" "" .weight
expect_fail "packed experts under other names" missing_experts \
	"its MLP tensors: model.layers.1.mlp.experts.down_proj.weight, model.layers.1.mlp.experts.gate_up_proj.weight," \
	"$CKPTCONV" convert --to native "$T/odd" "$T/odd-out"
expect_empty "other names: nothing written" "$T/odd-out"

# Both ways in one layer.
copy_dir "$T/packed" "$T/both"
(cd "$T/both" && st_py - <<'PYEOF'
from st import *
rewrite("model.safetensors",
        add={"model.layers.1.mlp.experts.0.gate_proj.weight": ("BF16", [32, 64])})
PYEOF
)
expect_fail "packed and per-expert in one layer" duplicate_tensor "not both" \
	"$CKPTCONV" convert --to native "$T/both" "$T/both-out"
expect_empty "both ways: nothing written" "$T/both-out"

finish
