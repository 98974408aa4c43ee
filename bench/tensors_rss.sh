#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/tensors_rss.sh: peak memory (RSS) against the number of tensors.
# For each count (default 1k, 10k, 62k -- Ling-1T's checkpoint -- and
# 160k) it writes a Ling 2.0 checkpoint in the HF layout holding that many
# tensors in ONE shard (64 experts per layer, tiny dimensions, data left as
# file holes), then measures the peak RSS of `inspect`, of `convert --to
# native` and of converting that output back (`--to hf`), each the median
# of RUNS runs, alternated with a baseline (`ckptconv inspect` of the
# smallest checkpoint: the process's own constant).  Prints, per count, the
# RSS in MiB and the bytes per tensor above the baseline; README's memory
# statement is checked against these figures.  Never fails on a figure.
#
# Usage: bench/tensors_rss.sh [RUNS] [COUNTS...]   (default 3; 1000 10000 62000 160000)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default /var/tmp).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
RUNS=${1:-3}
shift || true
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000 62000 160000)

command -v python3 >/dev/null || { echo "bench: python3 is missing" >&2; exit 1; }
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench-rss.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# gen DIR N: a checkpoint of about N tensors in one model.safetensors;
# prints the exact count.
gen() {
	python3 - "$1" "$2" <<'PYEOF'
import json, os, struct, sys
d, want = sys.argv[1], int(sys.argv[2])
E, H, I, DI = 64, 16, 8, 32
per_moe = 3 * E + 11
layers = max(2, 1 + round((want - 12) / per_moe))
cfg = {"architectures": ["BailingMoeV2ForCausalLM"], "model_type": "bailing_moe",
       "torch_dtype": "bfloat16", "hidden_size": H, "intermediate_size": DI,
       "moe_intermediate_size": I, "num_hidden_layers": layers, "num_attention_heads": 2,
       "num_key_value_heads": 1, "head_dim": 8, "num_experts": E,
       "first_k_dense_replace": 1, "vocab_size": 32}
os.makedirs(d)
with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(cfg, f)
names = [("model.word_embeddings.weight", [32, H]), ("model.norm.weight", [H]),
         ("lm_head.weight", [32, H])]
for layer in range(layers):
    p = f"model.layers.{layer}."
    names += [(p + "attention.query_key_value.weight", [32, H]),
              (p + "attention.dense.weight", [H, 16]), (p + "input_layernorm.weight", [H]),
              (p + "post_attention_layernorm.weight", [H]),
              (p + "attention.query_layernorm.weight", [8]),
              (p + "attention.key_layernorm.weight", [8])]
    if layer == 0:
        names += [(p + "mlp.gate_proj.weight", [DI, H]), (p + "mlp.up_proj.weight", [DI, H]),
                  (p + "mlp.down_proj.weight", [H, DI])]
        continue
    names += [(p + "mlp.gate.weight", [E, H]), (p + "mlp.gate.expert_bias", [E]),
              (p + "mlp.shared_experts.gate_proj.weight", [I, H]),
              (p + "mlp.shared_experts.up_proj.weight", [I, H]),
              (p + "mlp.shared_experts.down_proj.weight", [H, I])]
    for x in range(E):
        names += [(p + f"mlp.experts.{x}.gate_proj.weight", [I, H]),
                  (p + f"mlp.experts.{x}.up_proj.weight", [I, H]),
                  (p + f"mlp.experts.{x}.down_proj.weight", [H, I])]
header, offset = {"__metadata__": {"format": "pt"}}, 0
for name, shape in names:
    n = 2
    for v in shape:
        n *= v
    header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
    offset += n
raw = json.dumps(header, separators=(",", ":")).encode()
raw += b" " * (-len(raw) % 8)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    f.truncate(8 + len(raw) + offset)
print(len(names))
PYEOF
}

# rss CMD...: the peak RSS of CMD in KiB (it must succeed).
rss() {
	python3 - "$@" <<'PYEOF'
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if r.returncode != 0:
    sys.exit("bench: %s failed: %s" % (" ".join(sys.argv[1:]), r.stderr.decode()[-300:]))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PYEOF
}

# median: of integers, the lower middle one for an even count (not
# bench/lib.sh's mean of the two: its result feeds shell arithmetic).
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

declare -A NT
for n in "${COUNTS[@]}"; do
	NT[$n]=$(gen "$WORK/hf-$n" "$n")
done
SMALL=${COUNTS[0]}

echo "ckptconv: $CKPTCONV"
echo "command:  bench/tensors_rss.sh $RUNS ${COUNTS[*]}  (median of $RUNS runs, peak RSS)"
printf '%-8s %-9s %12s %12s %12s %12s %10s\n' "target" "tensors" "baseline" "inspect" "to native" \
	"to hf" "B/tensor"
for n in "${COUNTS[@]}"; do
	: >"$WORK/base" && : >"$WORK/inspect" && : >"$WORK/native" && : >"$WORK/hf"
	for _ in $(seq "$RUNS"); do
		rss "$CKPTCONV" inspect "$WORK/hf-$SMALL" >>"$WORK/base"
		rss "$CKPTCONV" inspect "$WORK/hf-$n" >>"$WORK/inspect"
		rm -rf "$WORK/native-$n" "$WORK/back-$n"
		rss "$CKPTCONV" convert --to native --no-fsync "$WORK/hf-$n" "$WORK/native-$n" \
			>>"$WORK/native"
		rss "$CKPTCONV" convert --to hf --no-fsync "$WORK/native-$n" "$WORK/back-$n" >>"$WORK/hf"
	done
	base=$(median <"$WORK/base")
	inspect=$(median <"$WORK/inspect")
	native=$(median <"$WORK/native")
	hf=$(median <"$WORK/hf")
	worst=$((native > hf ? native : hf))
	per=$(((worst - base) * 1024 / ${NT[$n]}))
	awk -v n="$n" -v t="${NT[$n]}" -v b="$base" -v i="$inspect" -v a="$native" -v h="$hf" \
		-v p="$per" 'BEGIN { printf "%-8s %-9d %9.1f MiB %8.1f MiB %8.1f MiB %8.1f MiB %10d\n",
			n, t, b / 1024, i / 1024, a / 1024, h / 1024, p }'
	rm -rf "$WORK/native-$n" "$WORK/back-$n"
done
