#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_consolidate: NeMo Automodel sharded training checkpoints.  Every case
# of golden/consolidate/cases.jsonl converted with --to hf must equal
# Automodel's own consolidation byte for byte (file names, headers, tensor
# order, index, config.json); inspect describes a sharded checkpoint; and
# every class of damaged input is refused with its exact error code, naming
# the tensor or file, with nothing left in the destination.

. "$(dirname "$0")/lib.sh"
need_binary

C=$GOLDEN_DIR/consolidate
T=$TEST_TMP

if [ ! -f "$C/cases.jsonl" ]; then
	fail "golden consolidation cases at $C"
	finish
fi

# ---- every golden case, byte for byte ----

# CAST_DTYPE of a case -> --dtype.
dtype_flag() {
	case "$1" in
	"") echo auto ;;
	fp32) echo f32 ;;
	fp16) echo f16 ;;
	bf16) echo bf16 ;;
	fp64) echo f64 ;;
	*) echo "unknown-cast-$1" ;;
	esac
}

ncases=0
while read -r name input output cast; do
	ncases=$((ncases + 1))
	flag=$(dtype_flag "$cast")
	if expect_ok "consolidate $name (--dtype $flag)" "$CKPTCONV" convert --to hf \
		--dtype "$flag" "$C/$input" "$T/out-$name"; then
		same_files "$name: output identical to Automodel's" "$C/$output" "$T/out-$name"
	fi
done < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    c = json.loads(line)
    print(c["case"], c["input"], c["output"], c["cast_dtype"] or "")
' "$C/cases.jsonl")
assert_eq "all 15 golden cases ran" 15 "$ncases"

# The consolidated checkpoint is an ordinary HF checkpoint: it converts.
expect_ok "consolidated output converts to native" "$CKPTCONV" convert --to native \
	"$T/out-tiny-r4-ep2s2" "$T/native-from-consolidated"
expect_ok "... equal to the reference's native" "$CKPTCONV" verify \
	"$GOLDEN_DIR/tiny/native" "$T/native-from-consolidated"

# --dtype f64 (Automodel's CAST_DTYPE fp64, no golden case): every tensor
# but the F32-original router becomes F64 holding the values of the
# golden fp32 cast; config.json says float64.
if expect_ok "consolidate tiny-r3-f32save --dtype f64" "$CKPTCONV" convert --to hf --dtype f64 \
	"$C/inputs/tiny-r3-f32save/model" "$T/out-f64"; then
	if python3 - "$T/out-f64" "$C/outputs/tiny-r3-cast-fp32" <<'PYEOF'; then
import json, os, struct, sys
def load(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            b = open(os.path.join(d, f), "rb").read()
            n = struct.unpack("<Q", b[:8])[0]
            for k, v in json.loads(b[8:8 + n]).items():
                s, e = v["data_offsets"]
                out[k] = (v["dtype"], v["shape"], b[8 + n + s:8 + n + e])
    return out
a, g = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == g.keys()
f64 = 0
for k, (dt, shape, data) in a.items():
    gdt, gshape, gdata = g[k]
    assert shape == gshape, k
    if dt == "F64":
        f64 += 1
        x = struct.unpack("<%dd" % (len(data) // 8), data)
        y = struct.unpack("<%df" % (len(gdata) // 4), gdata)
        assert x == y, k
    else:
        assert (dt, data) == ("F32", gdata) and gdt == "F32", k
assert f64 == len(a) - 2, f64
assert json.load(open(os.path.join(sys.argv[1], "config.json")))["torch_dtype"] == "float64"
PYEOF
		pass "--dtype f64: F64 values of the fp32 cast, F32 router kept, torch_dtype float64"
	else
		fail "--dtype f64: F64 values of the fp32 cast, F32 router kept, torch_dtype float64"
	fi
fi
expect_exit "--dtype f64 --to native is refused" 2 "$CKPTCONV" convert --to native --dtype f64 \
	"$C/inputs/tiny-r3/model" "$T/u-f64"
expect_empty "--dtype f64 --to native: nothing written" "$T/u-f64"

# ---- consolidation and conversion to native in one pass ----

for input in tiny-r4-ep2s2 tiny-r3 tiny-r3-dim1 tiny-r3-f32save tiny-ep2; do
	if expect_ok "$input --to native in one pass" "$CKPTCONV" convert --to native \
		"$C/inputs/$input/model" "$T/native-$input"; then
		expect_ok "$input --to native equals golden/tiny/native" "$CKPTCONV" verify \
			"$GOLDEN_DIR/tiny/native" "$T/native-$input"
		same_tensors "$input --to native: same tensors (python digest)" \
			"$GOLDEN_DIR/tiny/native" "$T/native-$input"
	fi
done
for rank in 0 1; do
	if expect_ok "tiny-r4-ep2s2 --to native EP 2 rank $rank" "$CKPTCONV" convert --to native \
		--ep-size 2 --ep-rank "$rank" "$C/inputs/tiny-r4-ep2s2/model" "$T/native-ep$rank"; then
		expect_ok "EP rank $rank equals golden/tiny/native-ep2-rank$rank" "$CKPTCONV" verify \
			"$GOLDEN_DIR/tiny/native-ep2-rank$rank" "$T/native-ep$rank"
	fi
done
if cmp -s "$C/inputs/tiny-r3/model/.hf_metadata/config.json" "$T/native-tiny-r3/config.json"; then
	pass "--to native: config.json from .hf_metadata, unchanged"
else
	fail "--to native: config.json from .hf_metadata, unchanged"
fi
d=$T/bad-native-gap
copy_dir "$C/inputs/tiny-r3/model" "$d"
rm "$d/shard-00002-model-00001-of-00001.safetensors"
expect_fail "--to native of a checkpoint with a missing shard" shard_missing \
	"shard-00002-model-00001-of-00001.safetensors is missing" \
	"$CKPTCONV" convert --to native "$d" "$T/dst-native-gap"
expect_empty "--to native refused: nothing written" "$T/dst-native-gap"
# Expert parallel without the last EP rank's shard, config.json without
# hidden_size: its experts are mapped but in no shard.
d=$T/bad-native-ep-last
copy_dir "$C/inputs/tiny-ep2/model" "$d"
rm "$d/shard-00002-model-00001-of-00001.safetensors"
python3 - "$d/.hf_metadata/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
del c["hidden_size"]
open(sys.argv[1], "w").write(json.dumps(c, indent=2, sort_keys=True) + "\n")
PYEOF
expect_fail "--to native without the last EP rank's shard" shard_missing \
	"'model.layers.1.mlp.experts.2.down_proj.weight' is mapped to model-00004-of-00005.safetensors" \
	"$CKPTCONV" convert --to native "$d" "$T/dst-native-ep-last"
expect_empty "--to native without the last EP rank's shard: nothing written" "$T/dst-native-ep-last"
# Without the last shard the chunks still tile smaller tensors (the full
# shape is stored nowhere); config.json's sizes show it.
d=$T/bad-native-last
copy_dir "$C/inputs/tiny-r3/model" "$d"
rm "$d/shard-00003-model-00001-of-00001.safetensors"
expect_fail "--to native without the last shard" shard_missing "shard-00003" \
	"$CKPTCONV" convert --to native "$d" "$T/dst-native-last"
expect_empty "--to native without the last shard: nothing written" "$T/dst-native-last"

# ---- partitions: two processes write the files, finalize the rest ----

for spec in "tiny-r3-f32save tiny-r3-f32save-cast-bf16 bf16" "tiny-r4-ep2s2 tiny-r4-ep2s2 auto"; do
	read -r input output flag <<<"$spec"
	out=$T/parts-$output
	ok=1
	for i in 0 1; do
		expect_ok "$output: partition $i/2" "$CKPTCONV" convert --to hf --dtype "$flag" \
			--partition "$i/2" "$C/inputs/$input/model" "$out" || ok=0
	done
	if [ ! -e "$out/config.json" ] && [ ! -e "$out/model.safetensors.index.json" ]; then
		pass "$output: before finalize no config.json, no index"
	else
		fail "$output: before finalize no config.json, no index" "$(ls "$out" | tr '\n' ' ')"
	fi
	if [ $ok = 1 ] && expect_ok "$output: finalize" "$CKPTCONV" finalize "$out"; then
		same_files "$output: 2 partitions + finalize identical to Automodel's" \
			"$C/outputs/$output" "$out"
	fi
done

# --allow-gaps is part of the plan: finalize plans again with it.
d=$T/parts-gap-src
copy_dir "$C/inputs/tiny-r3/model" "$d"
rm "$d/shard-00002-model-00001-of-00001.safetensors"
ok=1
for i in 0 1 2; do
	expect_ok "gaps allowed: partition $i/3" "$CKPTCONV" convert --to hf --allow-gaps \
		--partition "$i/3" "$d" "$T/parts-gap" || ok=0
done
if [ $ok = 1 ] && expect_ok "gaps allowed: finalize" "$CKPTCONV" finalize "$T/parts-gap" &&
	expect_ok "gaps allowed: one run" "$CKPTCONV" convert --to hf --allow-gaps "$d" \
		"$T/parts-gap-one-run"; then
	same_files "gaps allowed: 3 partitions + finalize equal one run" "$T/parts-gap-one-run" \
		"$T/parts-gap"
fi
expect_fail "a partition of a damaged checkpoint: refused" shard_missing \
	"shard-00002-model-00001-of-00001.safetensors is missing" "$CKPTCONV" convert --to hf \
	--partition 0/2 "$d" "$T/parts-refused"
expect_empty "a refused partition: nothing written, no manifest" "$T/parts-refused"

# ---- inspect ----

expect_ok "inspect a sharded checkpoint" "$CKPTCONV" inspect --json "$C/inputs/tiny-r3/model"
run_out >"$T/inspect.json"
if python3 - "$T/inspect.json" <<'PYEOF'; then
import json, sys
d = json.load(open(sys.argv[1]))
s = d["sharded"]
assert s["format"] == "nemo_automodel", s["format"]
assert [r["rank"] for r in s["ranks"]] == [0, 1, 2], s["ranks"]
t = {x["name"]: x for x in s["tensors"]}
g = t["model.layers.1.mlp.gate.weight"]
assert g["shape"] == [4, 64], g["shape"]
assert [c["shape"] for c in g["chunks"]] == [[2, 64], [2, 64], [0, 64]], g["chunks"]
assert [c["offsets"] for c in g["chunks"]] == [[0, 0], [2, 0], [4, 0]], g["chunks"]
assert g["file"] == "model-00004-of-00005.safetensors" or g["file"].startswith("model-0000"), g
assert len(s["output_files"]) == 5, s["output_files"]
assert d["layout"] == "hf", d["layout"]
PYEOF
	pass "inspect --json: ranks, chunks, full shapes, output files"
else
	fail "inspect --json: ranks, chunks, full shapes, output files" "$(head -c 600 "$T/inspect.json")"
fi
expect_ok "inspect (text) a sharded checkpoint" "$CKPTCONV" inspect "$C/inputs/tiny-r3/model"
if run_out | grep -q "NeMo Automodel sharded checkpoint: 3 ranks"; then
	pass "inspect says it is a sharded Automodel checkpoint"
else
	fail "inspect says it is a sharded Automodel checkpoint"
	show_run
fi

# ---- options ----

expect_exit "--dtype bogus is a usage error" 2 "$CKPTCONV" convert --to hf --dtype fp32 \
	"$C/inputs/tiny-r3/model" "$T/u1"
expect_empty "--dtype bogus: nothing written" "$T/u1"
expect_exit "--exclude with a consolidation to hf is refused" 2 "$CKPTCONV" convert \
	--to hf --exclude lm_head "$C/inputs/tiny-r3/model" "$T/u2"
expect_empty "--exclude: nothing written" "$T/u2"
expect_exit "--max-shard-size with a consolidation to hf is refused" 2 "$CKPTCONV" convert \
	--to hf --max-shard-size 1MB "$C/inputs/tiny-r3/model" "$T/u3"
expect_empty "--max-shard-size: nothing written" "$T/u3"

# ---- damaged input ----

# A writable copy of a golden input's model/ folder.
damaged() { # damaged NAME INPUT: prints the copy's path
	local dir=$T/bad-$1
	copy_dir "$C/inputs/$2/model" "$dir" && echo "$dir"
}

# edit_shard FILE PYTHON: runs PYTHON with `h` the header (dict, in order),
# `info` its DCP_SHARDING_INFO (dict) and `data` the data bytes, then
# writes the file back (info re-encoded unless the code sets raw_info).
edit_shard() {
	python3 - "$1" "$2" <<'PYEOF'
import json, struct, sys
path, code = sys.argv[1], sys.argv[2]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = b[8 + n:]
meta = h["__metadata__"]
info = json.loads(meta["DCP_SHARDING_INFO"])
raw_info = None
exec(code)
if "__metadata__" in h and "DCP_SHARDING_INFO" in h["__metadata__"]:
    h["__metadata__"]["DCP_SHARDING_INFO"] = raw_info if raw_info is not None else json.dumps(info)
j = json.dumps(h, separators=(",", ":")).encode()
j += b" " * ((8 - len(j) % 8) % 8)
open(path, "wb").write(struct.pack("<Q", len(j)) + j + data)
PYEOF
}

# refused NAME CODE NAMES DIR: conversion and inspect fail with CODE, and
# the destination stays empty.
refused() {
	local name=$1 code=$2 names=$3 dir=$4
	expect_fail "$name: convert refuses" "$code" "$names" "$CKPTCONV" convert --to hf \
		"$dir" "$T/dst-$name"
	expect_empty "$name: nothing written" "$T/dst-$name"
	expect_fail "$name: inspect refuses" "$code" "$names" "$CKPTCONV" inspect "$dir"
}

GATE=model.layers.1.mlp.gate.weight
DENSE=model.layers.0.attention.dense.weight

d=$(damaged overlap tiny-r3)
edit_shard "$d/shard-00002-model-00001-of-00001.safetensors" \
	"info['$GATE']['saved_offsets'] = [1, 0]"
refused overlap chunk_overlap "$GATE" "$d"

d=$(damaged gap tiny-r3)
edit_shard "$d/shard-00002-model-00001-of-00001.safetensors" \
	"info['$GATE']['saved_offsets'] = [3, 0]; info['$DENSE']['saved_offsets'][0] += 0"
refused gap chunk_gap "$GATE" "$d"
# --allow-gaps: Automodel's zero fill.  The full shape is 5 rows (the
# moved chunk ends at 5); row 2 is held by no chunk and is zeros, the others
# are the golden rows where the chunks put them; the warning names the
# tensor and the element.
if expect_ok "gap --allow-gaps: converts" "$CKPTCONV" convert --to hf --allow-gaps "$d" \
	"$T/gap-allowed"; then
	if grep -q "$GATE.*\[2, 0\].*zeros" "$T/run.err"; then
		pass "gap --allow-gaps: a warning names tensor and element"
	else
		fail "gap --allow-gaps: a warning names tensor and element" "$(cat "$T/run.err")"
	fi
	if python3 - "$T/gap-allowed" "$C/outputs/tiny-r3" "$GATE" <<'PYEOF'; then
import json, os, struct, sys
def load(d, name):
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            b = open(os.path.join(d, f), "rb").read()
            n = struct.unpack("<Q", b[:8])[0]
            h = json.loads(b[8:8 + n])
            if name in h:
                s, e = h[name]["data_offsets"]
                return h[name], b[8 + n + s:8 + n + e]
a, ad = load(sys.argv[1], sys.argv[3])
g, gd = load(sys.argv[2], sys.argv[3])
row = len(gd) // g["shape"][0]
assert a["shape"] == [5, g["shape"][1]] and a["dtype"] == g["dtype"], a
assert ad == gd[:2 * row] + bytes(row) + gd[2 * row:], "rows"
PYEOF
		pass "gap --allow-gaps: the uncovered row is zeros, the chunks' rows in place"
	else
		fail "gap --allow-gaps: the uncovered row is zeros, the chunks' rows in place"
	fi
fi
expect_fail "gap --allow-gaps does not take an overlap" chunk_overlap "$GATE" \
	"$CKPTCONV" convert --to hf --allow-gaps "$T/bad-overlap" "$T/dst-overlap-allowed"

# A shard missing from the middle of the numbering: the router bias its
# rank saved whole is mapped but in no shard; the error names it and the
# file that should hold it.
d=$(damaged missing-shard tiny-r3)
rm "$d/shard-00002-model-00001-of-00001.safetensors"
refused missing-shard shard_missing "model.layers.1.mlp.gate.expert_bias" "$d"
"$CKPTCONV" convert --to hf "$d" "$T/dst-missing-shard-msg" 2>"$T/missing-shard.err" || true
assert_eq "missing-shard: the exact message" \
	"$d: 'model.layers.1.mlp.gate.expert_bias' is mapped to model-00003-of-00005.safetensors by .hf_metadata/fqn_to_file_index_mapping.json but no shard holds it: shard-00002-model-00001-of-00001.safetensors is missing" \
	"$(error_line "$T/missing-shard.err" | sed 's/^ckptconv: shard_missing: //')"
expect_empty "missing-shard: nothing written (message run)" "$T/dst-missing-shard-msg"
# --allow-gaps: Automodel's output without that shard: its rows are zeros
# (the full shapes from every chunk's offset + size, empty chunks included),
# and what it held whole is left out.
if expect_ok "missing-shard --allow-gaps: converts" "$CKPTCONV" convert --to hf --allow-gaps \
	"$d" "$T/missing-allowed"; then
	if python3 - "$T/missing-allowed" "$C/outputs/tiny-r3" \
		"$C/inputs/tiny-r3/model/shard-00002-model-00001-of-00001.safetensors" <<'PYEOF'; then
import json, os, struct, sys
def load(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            b = open(os.path.join(d, f), "rb").read()
            n = struct.unpack("<Q", b[:8])[0]
            for k, v in json.loads(b[8:8 + n]).items():
                s, e = v["data_offsets"]
                out[k] = (v["shape"], b[8 + n + s:8 + n + e])
    return out
a, g = load(sys.argv[1]), load(sys.argv[2])
b = open(sys.argv[3], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
info = json.loads(h["__metadata__"]["DCP_SHARDING_INFO"])
# A tensor the shard held whole (the router bias) is in no shard: dropped
# with a warning, as Automodel drops it.
whole = {k for k in info if g[k][0] == h[k]["shape"]}
assert whole and a.keys() == g.keys() - whole, (whole, g.keys() - a.keys())
zeroed = 0
for k, (shape, data) in g.items():
    if k in whole:
        continue
    want = bytearray(data)
    if k in info and h[k]["shape"] and h[k]["shape"][0]:
        o, n = info[k]["saved_offsets"][0], h[k]["shape"][0]
        row = len(data) // shape[0]
        want[o * row:(o + n) * row] = bytes(n * row)
        zeroed += 1
    assert a[k] == (shape, bytes(want)), k
assert zeroed > 20, zeroed
PYEOF
		pass "missing-shard --allow-gaps: the missing shard's rows are zeros, the rest Automodel's"
	else
		fail "missing-shard --allow-gaps: the missing shard's rows are zeros, the rest Automodel's"
	fi
fi

# A missing middle shard that held only chunks: the chunks leave a gap,
# and the message names the absent shard.
d=$(damaged missing-chunks-only tiny-r4-serial)
rm "$d/shard-00003-model-00001-of-00001.safetensors"
refused missing-chunks-only chunk_gap "absent from the shard numbers: shard-00003" "$d"

# Many shards absent from the numbering: the first few are named.
d=$(damaged missing-many tiny-r3)
mv "$d/shard-00003-model-00001-of-00001.safetensors" "$d/shard-00009-model-00001-of-00001.safetensors"
rm "$d/shard-00002-model-00001-of-00001.safetensors"
refused missing-many shard_missing \
	"shard-00002-model-00001-of-00001.safetensors, shard-00003-model-00001-of-00001.safetensors, shard-00004-model-00001-of-00001.safetensors, shard-00005-model-00001-of-00001.safetensors and 3 more are missing" \
	"$d"

# The last shard missing: the other chunks tile smaller tensors, whose
# sizes config.json contradicts.  The error names the missing shard.
d=$(damaged missing-last tiny-r3)
rm "$d/shard-00003-model-00001-of-00001.safetensors"
refused missing-last shard_missing "shard-00003" "$d"
"$CKPTCONV" convert --to hf "$d" "$T/dst-missing-last-msg" 2>"$T/missing-last.err" || true
assert_eq "missing-last: the exact message" \
	"$d: 'model.layers.0.input_layernorm.weight' has 44 in dimension 0 in the shards but .hf_metadata/config.json's hidden_size is 64: shard-00003 is missing" \
	"$(error_line "$T/missing-last.err" | sed 's/^ckptconv: shard_missing: //')"
d=$(damaged missing-last2 tiny-r4-serial)
rm "$d/shard-00003-model-00001-of-00001.safetensors" "$d/shard-00004-model-00001-of-00001.safetensors"
refused missing-last2 shard_missing "shard-00003, shard-00004 are missing" "$d"
# The last shard missing and config.json without hidden_size: the layout
# alone shows it when that rank saved a tensor whole (the router bias of
# tiny-r2): mapped, in no shard, the next shard named.
d=$(damaged missing-last-nosize tiny-r2)
rm "$d/shard-00002-model-00001-of-00001.safetensors"
python3 - "$d/.hf_metadata/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
del c["hidden_size"]
open(sys.argv[1], "w").write(json.dumps(c, indent=2, sort_keys=True) + "\n")
PYEOF
refused missing-last-nosize shard_missing "model.layers.1.mlp.gate.expert_bias" "$d"
"$CKPTCONV" convert --to hf "$d" "$T/dst-missing-last-nosize-msg" 2>"$T/missing-last-nosize.err" || true
assert_eq "missing-last-nosize: the exact message" \
	"$d: 'model.layers.1.mlp.gate.expert_bias' is mapped to model-00003-of-00005.safetensors by .hf_metadata/fqn_to_file_index_mapping.json but no shard holds it: shard-00002-model-00001-of-00001.safetensors (or a later one) is missing" \
	"$(error_line "$T/missing-last-nosize.err" | sed 's/^ckptconv: shard_missing: //')"
expect_empty "missing-last-nosize: nothing written (message run)" "$T/dst-missing-last-nosize-msg"

d=$(damaged dtype tiny-r3)
edit_shard "$d/shard-00002-model-00001-of-00001.safetensors" \
	"h['$DENSE']['dtype'] = 'F16'"
refused dtype chunk_dtype_mismatch "$DENSE" "$d"

d=$(damaged ndim tiny-r3)
edit_shard "$d/shard-00002-model-00001-of-00001.safetensors" "
s = h['$GATE']['shape']; h['$GATE']['shape'] = [s[0] * s[1]]
info['$GATE']['saved_offsets'] = [info['$GATE']['saved_offsets'][0] * s[1]]"
refused ndim chunk_ndim_mismatch "$GATE" "$d"

d=$(damaged bounds tiny-r3)
edit_shard "$d/shard-00003-model-00001-of-00001.safetensors" \
	"info['$GATE']['saved_offsets'] = [9, 0]"
refused bounds chunk_out_of_bounds "$GATE" "$d"

d=$(damaged no-info tiny-r3)
edit_shard "$d/shard-00001-model-00001-of-00001.safetensors" "del h['__metadata__']['DCP_SHARDING_INFO']"
refused no-info sharding_info_missing "shard-00001" "$d"

d=$(damaged info-not-json tiny-r3)
edit_shard "$d/shard-00001-model-00001-of-00001.safetensors" "raw_info = '{\"x\": '"
refused info-not-json sharding_info_invalid "shard-00001" "$d"

d=$(damaged info-extra tiny-r3)
edit_shard "$d/shard-00001-model-00001-of-00001.safetensors" \
	"info['model.no_such.weight'] = {'saved_offsets': [0]}"
refused info-extra sharding_info_invalid "model.no_such.weight" "$d"

d=$(damaged info-lacks tiny-r3)
edit_shard "$d/shard-00001-model-00001-of-00001.safetensors" "del info['$GATE']"
refused info-lacks sharding_info_invalid "$GATE" "$d"

d=$(damaged info-offsets tiny-r3)
edit_shard "$d/shard-00001-model-00001-of-00001.safetensors" \
	"info['$GATE']['saved_offsets'] = [0]"
refused info-offsets sharding_info_invalid "$GATE" "$d"

d=$(damaged no-metadata tiny-r3)
rm -r "$d/.hf_metadata"
refused no-metadata hf_metadata_missing ".hf_metadata" "$d"

d=$(damaged no-mapping tiny-r3)
rm "$d/.hf_metadata/fqn_to_file_index_mapping.json"
refused no-mapping hf_metadata_missing "fqn_to_file_index_mapping.json" "$d"

d=$(damaged bad-mapping tiny-r3)
printf '{"%s": 0}' "$GATE" >"$d/.hf_metadata/fqn_to_file_index_mapping.json"
refused bad-mapping mapping_invalid "$GATE" "$d"

d=$(damaged mapping-not-json tiny-r3)
printf '[1, 2' >"$d/.hf_metadata/fqn_to_file_index_mapping.json"
refused mapping-not-json mapping_invalid "fqn_to_file_index_mapping.json" "$d"

d=$(damaged config-not-json tiny-r3)
printf '{"hidden_size": 64,' >"$d/.hf_metadata/config.json"
refused config-not-json config_invalid ".hf_metadata/config.json: not valid JSON" "$d"

d=$(damaged bad-dtypes tiny-r3)
printf '{"%s": "F31"}' "$GATE" >"$d/.hf_metadata/fqn_to_dtype_mapping.json"
refused bad-dtypes mapping_invalid "$GATE" "$d"

d=$(damaged unmapped tiny-r3)
python3 - "$d/.hf_metadata/fqn_to_file_index_mapping.json" "$GATE" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
del m[sys.argv[2]]
open(sys.argv[1], "w").write(json.dumps(m, indent=2, sort_keys=True))
PYEOF
refused unmapped tensor_not_mapped "$GATE" "$d"

# A mapped tensor no shard holds (the rank that saved it whole, as the
# router bias is saved, is missing): refused, unless gaps are allowed.
d=$(damaged mapped-nowhere tiny-r3)
python3 - "$d/.hf_metadata/fqn_to_file_index_mapping.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["model.layers.1.mlp.gate.extra_bias"] = 1
open(sys.argv[1], "w").write(json.dumps(m, indent=2, sort_keys=True))
PYEOF
refused mapped-nowhere shard_missing \
	"'model.layers.1.mlp.gate.extra_bias' is mapped to model-00001-of-00005.safetensors by .hf_metadata/fqn_to_file_index_mapping.json but no shard holds it: shard-00004-model-00001-of-00001.safetensors (or a later one) is missing" \
	"$d"
if expect_ok "mapped-nowhere --allow-gaps: converts, dropping it as Automodel does" \
	"$CKPTCONV" convert --to hf --allow-gaps "$d" "$T/dst-mapped-nowhere-allowed"; then
	# Only the mapping file is different: the output is Automodel's.
	same_files "mapped-nowhere --allow-gaps: identical to Automodel's output" \
		"$C/outputs/tiny-r3" "$T/dst-mapped-nowhere-allowed"
fi

# Tied embeddings: lm_head.weight may be mapped and in no shard (the tied
# alias is not saved); without tie_word_embeddings it is a missing shard.
d=$(damaged tied tiny-r3)
python3 - "$d" <<'PYEOF'
import json, os, struct, sys
d = sys.argv[1]
for f in sorted(os.listdir(d)):
    if not f.endswith(".safetensors"):
        continue
    b = open(os.path.join(d, f), "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h, data = json.loads(b[8:8 + n]), b[8 + n:]
    info = json.loads(h["__metadata__"]["DCP_SHARDING_INFO"])
    del info["lm_head.weight"]
    h["__metadata__"]["DCP_SHARDING_INFO"] = json.dumps(info)
    out, pos = {}, 0
    for k, v in h.items():
        if k in ("lm_head.weight", "__metadata__"):
            continue
        s, e = v["data_offsets"]
        out[k] = dict(v, data_offsets=[pos, pos + e - s])
        pos += e - s
    out["__metadata__"] = h["__metadata__"]
    new = b"".join(data[v["data_offsets"][0]:v["data_offsets"][1]]
                   for k, v in h.items() if k not in ("lm_head.weight", "__metadata__"))
    j = json.dumps(out, separators=(",", ":")).encode()
    j += b" " * (-len(j) % 8)
    open(os.path.join(d, f), "wb").write(struct.pack("<Q", len(j)) + j + new)
PYEOF
refused untied-lm-head-absent shard_missing "'lm_head.weight' is mapped to" "$d"
python3 - "$d/.hf_metadata/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["tie_word_embeddings"] = True
open(sys.argv[1], "w").write(json.dumps(c, indent=2, sort_keys=True) + "\n")
PYEOF
if expect_ok "tied lm_head.weight absent from the shards: converts" "$CKPTCONV" convert --to hf \
	"$d" "$T/tied"; then
	if python3 - "$T/tied" "$C/outputs/tiny-r3" <<'PYEOF'; then
import json, os, struct, sys
def load(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            b = open(os.path.join(d, f), "rb").read()
            n = struct.unpack("<Q", b[:8])[0]
            for k, v in json.loads(b[8:8 + n]).items():
                s, e = v["data_offsets"]
                out[k] = (f, v["dtype"], v["shape"], b[8 + n + s:8 + n + e])
    return out
a, g = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == g.keys() - {"lm_head.weight"}, a.keys() ^ g.keys()
assert all(a[k] == g[k] for k in a), [k for k in a if a[k] != g[k]]
idx = json.load(open(os.path.join(sys.argv[1], "model.safetensors.index.json")))
assert "lm_head.weight" not in idx["weight_map"] and len(idx["weight_map"]) == len(a)
PYEOF
		pass "tied lm_head.weight: left out, every other tensor Automodel's"
	else
		fail "tied lm_head.weight: left out, every other tensor Automodel's"
	fi
fi

d=$(damaged truncated tiny-r3)
truncate -s 1000 "$d/shard-00002-model-00001-of-00001.safetensors"
refused truncated header_out_of_bounds "shard-00002" "$d"

# A failure in the middle of a run (the destination cannot take a file)
# leaves nothing that looks finished.
mkdir -p "$T/dst-blocked/model.safetensors.index.json"
expect_fail "index cannot be written: convert fails" destination_not_empty "" "$CKPTCONV" \
	convert --to hf "$C/inputs/tiny-r3/model" "$T/dst-blocked"

finish
