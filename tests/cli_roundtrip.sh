#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_roundtrip: conversions of synthetic checkpoints.  HF -> native -> HF
# is bit-identical on a Ling-mini-sized fixture (256 experts) and, with
# --dtype keep, on an F32 fixture; the cast path (--dtype bf16 and f16 on an
# F32 fixture) matches a naive reference cast computed here in Python; and
# output is deterministic: two runs, with 1 thread and with 2, give
# byte-identical files.

. "$(dirname "$0")/lib.sh"
need_binary

T=$TEST_TMP

# Mini: Ling-mini-2.0's dimensions, 2 layers (about 1.7 GB).
expect_ok "fixture --preset mini --layers 2" "$CKPTCONV" fixture --preset mini --layers 2 "$T/mini"
expect_ok "fixture is deterministic (tiny, same seed)" "$CKPTCONV" fixture --preset tiny --seed 7 "$T/tiny-a"
expect_ok "fixture tiny again" "$CKPTCONV" fixture --preset tiny --seed 7 "$T/tiny-b"
same_files "same fixture options give byte-identical files" "$T/tiny-a" "$T/tiny-b"
expect_ok "fixture with another seed" "$CKPTCONV" fixture --preset tiny --seed 8 "$T/tiny-c"
if ! diff -r -q "$T/tiny-a" "$T/tiny-c" >/dev/null 2>&1; then pass "another seed gives other weights"; else
	fail "another seed gives other weights"; fi

expect_ok "mini hf -> native (2 threads)" "$CKPTCONV" convert --to native --no-fsync --threads 2 \
	"$T/mini" "$T/mini-native"
expect_ok "mini native -> hf" "$CKPTCONV" convert --to hf --no-fsync "$T/mini-native" "$T/mini-back"
expect_ok "mini round trip verifies" "$CKPTCONV" verify "$T/mini" "$T/mini-back"
same_tensors "mini round trip is bit-identical (python digest)" "$T/mini" "$T/mini-back"
expect_ok "mini hf -> native --io mmap" "$CKPTCONV" convert --io mmap --to native --no-fsync \
	"$T/mini" "$T/mini-native-mmap"
same_files "mini to native: --io mmap writes what pread bands write" "$T/mini-native" \
	"$T/mini-native-mmap"
rm -rf "$T/mini-native-mmap"
expect_ok "inspect mini native" "$CKPTCONV" inspect --json "$T/mini-native"
assert_eq "inspect sees 256 experts in the native layout" "native 256" \
	"$(run_out | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["layout"], d["experts"])' 2>&1)"
assert_eq "mini native grouped tensor shape [E, H, 2I]" "[256, 2048, 1024]" \
	"$(st_py - "$T/mini-native" <<'PYEOF'
import sys
from st import tensors
print(next(t[2] for n, t in tensors(sys.argv[1]).items()
           if n.endswith("layers.1.mlp.experts.gate_and_up_projs")))
PYEOF
)"

# Determinism: a second run, with 1 thread instead of 2, is byte for byte
# the same.
rm -rf "$T/mini-back"
expect_ok "mini hf -> native again, with 1 thread" "$CKPTCONV" convert --to native --no-fsync \
	--threads 1 "$T/mini" "$T/mini-native-t1"
same_files "two conversions, 1 thread and 2 threads, give byte-identical files" \
	"$T/mini-native" "$T/mini-native-t1"
rm -rf "$T/mini" "$T/mini-native" "$T/mini-native-t1"

# F32 fixture: --dtype keep round trip.
expect_ok "fixture --dtype f32" "$CKPTCONV" fixture --preset tiny --dtype f32 "$T/f32"
expect_ok "f32 hf -> native --dtype keep" "$CKPTCONV" convert --to native --dtype keep "$T/f32" "$T/f32-native"
expect_ok "f32 native -> hf" "$CKPTCONV" convert --to hf "$T/f32-native" "$T/f32-back"
expect_ok "f32 keep round trip verifies" "$CKPTCONV" verify "$T/f32" "$T/f32-back"
same_tensors "f32 keep round trip is bit-identical (python digest)" "$T/f32" "$T/f32-back"

# The cast path against a naive reference cast of every grouped tensor.
cast_check() { # cast_check DTYPE_OPTION SAFETENSORS_DTYPE
	expect_ok "f32 hf -> native --dtype $1" "$CKPTCONV" convert --to native --dtype "$1" \
		"$T/f32" "$T/f32-$1" || return
	run st_py - "$T/f32" "$T/f32-$1" "$2" <<'PYEOF'
import re
import struct
import sys
from st import tensors, tensor_bytes

src_dir, out_dir, want = sys.argv[1], sys.argv[2], sys.argv[3]
src, out = tensors(src_dir), tensors(out_dir)


def bf16(bits):
    """float32 bits -> bfloat16 bits, round to nearest even, NaN kept."""
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x7FFFFF:
        return (bits >> 16) | 0x40
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def cast(words):
    if want == "BF16":
        return struct.pack("<%dH" % len(words), *(bf16(w) for w in words))
    floats = struct.unpack("<%df" % len(words), struct.pack("<%dI" % len(words), *words))
    return b"".join(struct.pack("<e", f) for f in floats)   # round half to even


def f32_words(name):
    raw = tensor_bytes(src[name])
    return struct.unpack("<%dI" % (len(raw) // 4), raw)


checked = 0
for name in sorted(out):
    m = re.match(r"(.*layers\.(\d+)\.mlp\.experts)\.(gate_and_up_projs|down_projs)$", name)
    if not m:
        # Everything else keeps its source dtype and bytes.
        if name in src and out[name][1] != src[name][1]:
            sys.exit(f"{name}: dtype changed to {out[name][1]}")
        continue
    prefix, kind = m.group(1), m.group(3)
    _, dtype, shape, _, _ = out[name]
    if dtype != want:
        sys.exit(f"{name}: dtype {dtype}, expected {want}")
    experts = shape[0]
    ref = []
    for e in range(experts):
        if kind == "gate_and_up_projs":
            gate = f32_words(f"{prefix}.{e}.gate_proj.weight")   # [I, H]
            up = f32_words(f"{prefix}.{e}.up_proj.weight")
            inter, hidden = src[f"{prefix}.{e}.gate_proj.weight"][2]
            for h in range(hidden):
                ref.append(cast([gate[i * hidden + h] for i in range(inter)]))
                ref.append(cast([up[i * hidden + h] for i in range(inter)]))
        else:
            down = f32_words(f"{prefix}.{e}.down_proj.weight")   # [H, I]
            hidden, inter = src[f"{prefix}.{e}.down_proj.weight"][2]
            for i in range(inter):
                ref.append(cast([down[h * inter + i] for h in range(hidden)]))
    if b"".join(ref) != tensor_bytes(out[name]):
        sys.exit(f"{name}: bytes differ from the reference cast")
    checked += 1
if checked == 0:
    sys.exit("no grouped tensor found")
print(f"{checked} grouped tensors match the reference cast")
PYEOF
	if [ "$RUN_RC" -eq 0 ]; then
		pass "--dtype $1: grouped tensors equal a naive $2 cast ($(run_out))"
	else
		fail "--dtype $1: grouped tensors equal a naive $2 cast"
		show_run
	fi
}
cast_check bf16 BF16
cast_check f16 F16

# --io: mapped views and pread bands read the same bytes, both directions;
# a mode that does not exist is a usage error naming the choices.
for io in auto mmap pread; do
	expect_ok "tiny hf -> native --io $io" "$CKPTCONV" convert --io "$io" --to native --no-fsync \
		"$T/tiny-a" "$T/tiny-io-$io"
	expect_ok "tiny native -> hf --io $io" "$CKPTCONV" convert --io "$io" --to hf --no-fsync \
		"$T/tiny-io-$io" "$T/tiny-io-back-$io"
done
for io in mmap pread; do
	same_files "--io $io writes what --io auto writes (to native)" "$T/tiny-io-auto" "$T/tiny-io-$io"
	same_files "--io $io writes what --io auto writes (to hf)" "$T/tiny-io-back-auto" \
		"$T/tiny-io-back-$io"
done
expect_exit "--io direct is refused (exit 2)" 2 \
	"$CKPTCONV" convert --io direct --to native "$T/tiny-a" "$T/tiny-io-bad"
assert_eq "--io direct: usage_error naming the choices" \
	"ckptconv: usage_error: --io wants auto, mmap or pread, not 'direct' (see 'ckptconv convert --help')" \
	"$(error_line "$TEST_TMP/run.err")"
if [ ! -e "$T/tiny-io-bad" ]; then pass "--io direct wrote nothing"; else
	fail "--io direct wrote nothing"; fi

finish
