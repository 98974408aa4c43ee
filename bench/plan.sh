#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/plan.sh: how long planning takes for a checkpoint of Ling-1T's shape
# (80 layers, 256 experts, H 8192, I 2048: about 62,000 tensors and 2 TB),
# in both directions.  The checkpoints are written as headers only, in
# sparse files of the full size, so nothing but planning runs: `convert
# --dry-run` opens the source, validates every header, builds the plan and
# checks that its output converts back, then prints the plan and exits.
# Reports the median wall time of RUNS runs and the peak RSS of each
# direction; with CKPTCONV_BASE set, the same for that binary, and the ratio
# (what the checks added).  Prints figures only; never fails on time.
#
# Usage: bench/plan.sh [RUNS]   (default 5)
# Environment: CKPTCONV (default build/ckptconv), CKPTCONV_BASE (another
# build to compare with), BENCH_DIR (default /var/tmp; needs a filesystem
# with sparse files of 2 TB, such as ext4 or xfs).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
BASE=${CKPTCONV_BASE:-}
RUNS=${1:-5}
TIME=/usr/bin/time

for tool in "$TIME" python3; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench-plan.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Sparse checkpoints of Ling-1T's shape, HF and native, headers only.
python3 - "$WORK" <<'PYEOF'
import json, os, struct, sys

root = sys.argv[1]
H, NH, NKV, D, INTER, I, E, LAYERS, DENSE, VOCAB = 8192, 64, 8, 128, 18432, 2048, 256, 80, 4, 157184
SIZE = {"BF16": 2, "F32": 4}
config = {"architectures": ["BailingMoeV2ForCausalLM"], "model_type": "bailing_moe",
          "dtype": "bfloat16", "hidden_size": H, "num_attention_heads": NH,
          "num_key_value_heads": NKV, "head_dim": D, "intermediate_size": INTER,
          "moe_intermediate_size": I, "num_experts": E, "num_hidden_layers": LAYERS,
          "first_k_dense_replace": DENSE, "vocab_size": VOCAB}


def tensors(native):
    yield ("model.embed_tokens.weight" if native else "model.word_embeddings.weight"), "BF16", [VOCAB, H]
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        if native:
            yield p + "self_attn.q_proj.weight", "BF16", [NH * D, H]
            yield p + "self_attn.k_proj.weight", "BF16", [NKV * D, H]
            yield p + "self_attn.v_proj.weight", "BF16", [NKV * D, H]
            yield p + "self_attn.o_proj.weight", "BF16", [H, NH * D]
            yield p + "self_attn.q_norm.weight", "BF16", [D]
            yield p + "self_attn.k_norm.weight", "BF16", [D]
        else:
            yield p + "attention.query_key_value.weight", "BF16", [(NH + 2 * NKV) * D, H]
            yield p + "attention.dense.weight", "BF16", [H, NH * D]
            yield p + "attention.query_layernorm.weight", "BF16", [D]
            yield p + "attention.key_layernorm.weight", "BF16", [D]
        yield p + "input_layernorm.weight", "BF16", [H]
        yield p + "post_attention_layernorm.weight", "BF16", [H]
        if l < DENSE:
            for proj, shape in (("gate_proj", [INTER, H]), ("up_proj", [INTER, H]), ("down_proj", [H, INTER])):
                yield p + "mlp.%s.weight" % proj, "BF16", shape
            continue
        yield p + "mlp.gate.weight", "F32", [E, H]
        yield p + ("mlp.gate.e_score_correction_bias" if native else "mlp.gate.expert_bias"), "F32", [E]
        for proj, shape in (("gate_proj", [I, H]), ("up_proj", [I, H]), ("down_proj", [H, I])):
            yield p + "mlp.shared_experts.%s.weight" % proj, "BF16", shape
        if native:
            yield p + "mlp.experts.gate_and_up_projs", "BF16", [E, H, 2 * I]
            yield p + "mlp.experts.down_projs", "BF16", [E, I, H]
        else:
            for e in range(E):
                for proj, shape in (("gate_proj", [I, H]), ("up_proj", [I, H]), ("down_proj", [H, I])):
                    yield p + "mlp.experts.%d.%s.weight" % (e, proj), "BF16", shape
    yield "model.norm.weight", "BF16", [H]
    yield "lm_head.weight", "BF16", [VOCAB, H]


def write(directory, native, shard_max=5 * 10**9):
    os.makedirs(directory)
    shards, current, used = [], [], 0
    for name, dtype, shape in tensors(native):
        n = SIZE[dtype]
        for d in shape:
            n *= d
        if current and used + n > shard_max:
            shards.append(current)
            current, used = [], 0
        current.append((name, dtype, shape, n))
        used += n
    shards.append(current)
    weight_map, total, count = {}, 0, 0
    for i, shard in enumerate(shards):
        file = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, dtype, shape, n in shard:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = file
            count += 1
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(directory, file), "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)
        total += offset
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    print("%s: %d tensors, %.2f TB in %d sparse files" % (os.path.basename(directory), count, total / 1e12, len(shards)))


write(os.path.join(root, "hf"), False)
write(os.path.join(root, "native"), True)
PYEOF

# plan BINARY TO SRC: median wall seconds of RUNS dry runs, and peak RSS (KB).
plan() {
	local bin=$1 to=$2 src=$3 i
	for i in $(seq "$RUNS"); do
		"$TIME" -f '%e %M' -o "$WORK/time" "$bin" convert --dry-run --to "$to" "$src" "$WORK/out" >/dev/null 2>&1
		cat "$WORK/time"
	done | sort -n | awk -v n="$RUNS" '{ t[NR] = $1; if ($2 > m) m = $2 }
		END { printf "%.2f %d\n", t[int((n + 1) / 2)], m }'
}

printf '%-22s %-10s %10s %14s\n' binary direction "median s" "peak RSS MB"
for to in native hf; do
	src=$WORK/hf
	[ "$to" = hf ] && src=$WORK/native
	read -r t m < <(plan "$CKPTCONV" "$to" "$src")
	printf '%-22s %-10s %10s %14d\n' ckptconv "to $to" "$t" $((m / 1024))
	if [ -n "$BASE" ]; then
		read -r bt bm < <(plan "$BASE" "$to" "$src")
		printf '%-22s %-10s %10s %14d\n' base "to $to" "$bt" $((bm / 1024))
		awk -v a="$t" -v b="$bt" 'BEGIN { if (b > 0) printf "%-22s %-10s %10.2f\n", "ratio", "", a / b }'
	fi
done
