#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_dtypes: the dtypes of the safetensors format that are not whole bytes
# wide (F4, F6_E2M3, F6_E3M2) or not one number (C64).  A checkpoint whose
# non-expert tensors hold them converts to native and back: those tensors
# are copied byte for byte (whole, or as the rows of a query_key_value
# split), and `inspect` lists them.  A routed expert of F4 is refused with
# quantized_input naming it and its dtype, and nothing is written; a
# sub-byte tensor that is not whole bytes is invalid_tensor.

. "$(dirname "$0")/lib.sh"
need_binary

G=$GOLDEN_DIR/tiny
T=$TEST_TMP
S1=model-00001-of-00005.safetensors
S3=model-00003-of-00005.safetensors
EMB=model.word_embeddings.weight
NORM=model.norm.weight
QKV0=model.layers.0.attention.query_key_value.weight
EXPERT=model.layers.1.mlp.experts.0.gate_proj.weight

# retype DIR FILE NAME=DTYPE...: gives tensors of FILE in DIR a new dtype,
# their shape kept and their bytes a pattern that differs from tensor to
# tensor (a sub-byte dtype holds fewer bytes than before).
retype() {
	local dir=$1 file=$2
	shift 2
	(cd "$dir" && st_py - "$file" "$@" <<'PYEOF'
import sys
from st import *
path, changes = sys.argv[1], dict(a.split("=") for a in sys.argv[2:])
header, data = read(path)
meta = header.pop("__metadata__", None)
out, blob = {}, bytearray()
for k, (name, t) in enumerate(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])):
    b, e = t["data_offsets"]
    dt = changes.get(name, t["dtype"])
    n = nbytes(dt, t["shape"])
    chunk = data[b:e] if dt == t["dtype"] else bytes((i * 31 + 17 * k) & 0xFF for i in range(n))
    out[name] = {"dtype": dt, "shape": t["shape"], "data_offsets": [len(blob), len(blob) + n]}
    blob += chunk
if meta is not None:
    out["__metadata__"] = meta
write(path, out, bytes(blob))
PYEOF
	)
}

# by_dtype DIR: "name dtype shape sha256" of each tensor that is not of
# BF16, F32 or F16, sorted.
by_dtype() {
	st_py "$ST_PY" digest "$1" | grep -v -E '^[^ ]+ (BF16|F32|F16) '
}

# Non-expert tensors of C64, F4 and F6_E2M3 (the fused query_key_value of
# layer 0, which the conversion to native splits by rows into q, k and v).
copy_dir "$G/hf" "$T/hf"
retype "$T/hf" "$S1" "$EMB=C64" "$NORM=F4" "$QKV0=F6_E2M3"
expect_ok "inspect --tensors a checkpoint holding C64, F4 and F6_E2M3" \
	"$CKPTCONV" inspect --tensors "$T/hf"
for want in "$EMB C64" "$NORM F4" "$QKV0 F6_E2M3"; do
	if grep -F "${want% *}" "$T/run.out" | grep -q -w -F "${want#* }"; then
		pass "inspect lists ${want% *} as ${want#* }"
	else
		fail "inspect lists ${want% *} as ${want#* }" "$(grep -F "${want% *}" "$T/run.out")"
	fi
done
expect_ok "inspect --json" "$CKPTCONV" inspect --json "$T/hf"
cp "$T/run.out" "$T/inspect.json"
assert_eq "inspect --json: bytes by dtype count the C64, F4 and F6_E2M3 tensors" \
	"$(st_py - "$T/hf" <<'PYEOF'
import sys
from st import *
want = {}
for name, (path, dtype, shape, off, n) in tensors(sys.argv[1]).items():
    if dtype in ("C64", "F4", "F6_E2M3"):
        want[dtype] = want.get(dtype, 0) + n
print(" ".join(f"{k}={want[k]}" for k in sorted(want)))
PYEOF
)" "$(python3 -c 'import json, sys
b = json.load(open(sys.argv[1]))["bytes_by_dtype"]
print(" ".join(f"{k}={b[k]}" for k in sorted(b) if k in ("C64", "F4", "F6_E2M3")))' "$T/inspect.json")"

expect_ok "hf -> native with C64, F4 and F6_E2M3 non-expert tensors" \
	"$CKPTCONV" convert --to native --no-fsync "$T/hf" "$T/native"
# Each tensor of those dtypes in the output: its bytes are the source's,
# byte for byte (q, k and v: the rows of the source's query_key_value).
assert_eq "the C64 and F4 tensors and q, k, v of F6_E2M3 are copied byte for byte" "ok" \
	"$(st_py - "$T/hf" "$T/native" <<'PYEOF'
import sys
from st import *
src, out = tensors(sys.argv[1]), tensors(sys.argv[2])
bad = []
odd = {n: e for n, e in out.items() if e[1] not in ("BF16", "F32", "F16")}
emb = [n for n, e in odd.items() if e[1] == "C64"]
norm = [n for n, e in odd.items() if e[1] == "F4"]
qkv = sorted((n for n, e in odd.items() if e[1] == "F6_E2M3"), key=lambda n: ("q_proj" not in n, "k_proj" not in n))
if len(emb) != 1 or len(norm) != 1 or len(qkv) != 3:
    bad.append(f"dtypes in the output: {sorted((n, e[1]) for n, e in odd.items())}")
else:
    if tensor_bytes(out[emb[0]]) != tensor_bytes(src["model.word_embeddings.weight"]) or out[emb[0]][2] != src["model.word_embeddings.weight"][2]:
        bad.append("C64 differs")
    if tensor_bytes(out[norm[0]]) != tensor_bytes(src["model.norm.weight"]) or out[norm[0]][2] != src["model.norm.weight"][2]:
        bad.append("F4 differs")
    joined = b"".join(tensor_bytes(out[n]) for n in qkv)
    if joined != tensor_bytes(src["model.layers.0.attention.query_key_value.weight"]):
        bad.append("q, k, v differ from the rows of query_key_value: " + " ".join(qkv))
print("; ".join(bad) or "ok")
PYEOF
)"
expect_ok "native -> hf" "$CKPTCONV" convert --to hf --no-fsync "$T/native" "$T/back"
same_tensors "hf -> native -> hf is bit-identical, C64, F4 and F6_E2M3 included" "$T/hf" "$T/back"
expect_ok "verify the round trip" "$CKPTCONV" verify "$T/hf" "$T/back"

# A routed expert of F4: the conversion to native would transpose it.
copy_dir "$G/hf" "$T/expert"
retype "$T/expert" "$S3" "$EXPERT=F4"
expect_fail "a routed expert of F4: refused" quantized_input \
	"$EXPERT: dtype F4 is only ever copied byte for byte, and a routed expert's weights are transposed into the layer's grouped tensors" \
	"$CKPTCONV" convert --to native "$T/expert" "$T/out-expert"
expect_empty "a routed expert of F4: nothing written" "$T/out-expert"
expect_fail "a routed expert of F4, --dtype bf16: refused" quantized_input "$EXPERT: dtype F4" \
	"$CKPTCONV" convert --to native --dtype bf16 "$T/expert" "$T/out-expert2"
expect_empty "a routed expert of F4, --dtype bf16: nothing written" "$T/out-expert2"

# Grouped experts of C64 in a native checkpoint: back to HF they would be
# transposed.
copy_dir "$G/native" "$T/native-c64"
GROUPED=$(st_py - "$T/native-c64" <<'PYEOF'
import sys
from st import *
print(sorted(n for n in tensors(sys.argv[1]) if n.endswith("down_projs"))[0])
PYEOF
)
GROUPED_FILE=$(st_py - "$T/native-c64" "$GROUPED" <<'PYEOF'
import os, sys
from st import *
print(os.path.basename(tensors(sys.argv[1])[sys.argv[2]][0]))
PYEOF
)
retype "$T/native-c64" "$GROUPED_FILE" "$GROUPED=C64"
expect_fail "grouped experts of C64, native -> hf: refused" quantized_input \
	"$GROUPED: dtype C64 is only ever copied byte for byte, and this conversion transposes it" \
	"$CKPTCONV" convert --to hf "$T/native-c64" "$T/out-native-c64"
expect_empty "grouped experts of C64: nothing written" "$T/out-native-c64"

# An F4 tensor of an odd element count is not whole bytes.
copy_dir "$G/hf" "$T/odd"
st_py - "$T/odd/$S1" "$NORM" <<'PYEOF'
import sys
from st import *
path, name = sys.argv[1], sys.argv[2]
header, data = read(path)
t = header[name]
b = t["data_offsets"][0]
header[name] = {"dtype": "F4", "shape": [3], "data_offsets": [b, b + 2]}
# The rest of its old bytes become a tensor of their own (no hole).
header["pad.weight"] = {"dtype": "U8", "shape": [t["data_offsets"][1] - b - 2],
                        "data_offsets": [b + 2, t["data_offsets"][1]]}
write(path, header, data)
PYEOF
expect_fail "an F4 tensor of 3 elements: invalid_tensor" invalid_tensor \
	"tensor '$NORM' holds 3 elements of F4 (4 bits each), 12 bits, not a whole number of bytes" \
	"$CKPTCONV" convert --to native "$T/odd" "$T/out-odd"
expect_empty "an F4 tensor of 3 elements: nothing written" "$T/out-odd"
finish
