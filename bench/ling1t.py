#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# bench/ling1t.py ROOT [hf|native...]: sparse checkpoints of Ling-1T's shape
# (80 layers, 256 experts, H 8192, I 2048: about 62,000 tensors and 2 TB),
# headers only, written as ROOT/hf and ROOT/native (both by default).  Each
# shard is a sparse file of its full size, so planning sees the real
# checkpoint's headers and nothing reads 2 TB.  For bench/plan.sh and
# bench/queued.sh; needs a filesystem with sparse files (ext4, xfs).
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


for layout in sys.argv[2:] or ["hf", "native"]:
    write(os.path.join(root, layout), layout == "native")
