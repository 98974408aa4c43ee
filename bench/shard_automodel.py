#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes an HF checkpoint as a NeMo Automodel sharded training checkpoint.

Usage: shard_automodel.py HF_DIR RANKS OUT_DIR

Every tensor of HF_DIR is cut on dim 0 the torch.chunk way into RANKS
chunks (FSDP2's Shard(0); trailing ranks may get empty chunks, recorded at
offset = the dimension's size), and rank r's chunks go to
OUT_DIR/shard-<r+1>-model-00001-of-00001.safetensors with their offsets in
__metadata__.DCP_SHARDING_INFO, in the writer's ascending-size order.
OUT_DIR/.hf_metadata/ gets config.json and fqn_to_file_index_mapping.json
(the HF index's file of each tensor).  Chunk bytes are copied by ranges
(os.copy_file_range), never held whole in memory.  Standard library only;
docs/consolidation.md describes the format.
"""
import json
import os
import struct
import sys

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def main():
    src, ranks, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    index = json.load(open(os.path.join(src, "model.safetensors.index.json")))["weight_map"]
    files = sorted(set(index.values()))
    file_index = {name: i + 1 for i, name in enumerate(files)}
    plans = [[] for _ in range(ranks)]  # (name, dtype, shape, offsets, path, begin, nbytes)
    for fname in files:
        path = os.path.join(src, fname)
        header, start = read_header(path)
        for name, t in header.items():
            shape, dtype = t["shape"], t["dtype"]
            row = SIZES[dtype]
            for d in shape[1:]:
                row *= d
            length = shape[0] if shape else 1
            step = -(-length // ranks) if shape else 1
            for r in range(ranks):
                if not shape:
                    if r == 0:
                        plans[0].append((name, dtype, [], [], path, start + t["data_offsets"][0], row))
                    continue
                lo, hi = min(length, step * r), min(length, step * (r + 1))
                offsets = [lo if hi > lo else length] + [0] * (len(shape) - 1)
                plans[r].append((name, dtype, [hi - lo] + shape[1:], offsets, path,
                                 start + t["data_offsets"][0] + lo * row, (hi - lo) * row))
    os.makedirs(os.path.join(out, ".hf_metadata"), exist_ok=True)
    for r, plan in enumerate(plans):
        plan.sort(key=lambda c: c[6])
        header, info, pos = {}, {}, 0
        for name, dtype, shape, offsets, _, _, nbytes in plan:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + nbytes]}
            info[name] = {"saved_offsets": offsets}
            pos += nbytes
        header["__metadata__"] = {"DCP_SHARDING_INFO": json.dumps(info), "DCP_VERSION": "1.0",
                                  "format": "pt"}
        j = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        j += b" " * ((8 - len(j) % 8) % 8)
        name = "shard-%s-model-00001-of-00001.safetensors" % str(r + 1).zfill(5)
        with open(os.path.join(out, name), "wb") as f:
            f.write(struct.pack("<Q", len(j)) + j)
            f.flush()
            for _, _, _, _, path, begin, nbytes in plan:
                with open(path, "rb") as s:
                    done = 0
                    while done < nbytes:
                        done += os.copy_file_range(s.fileno(), f.fileno(), nbytes - done,
                                                   begin + done)
    mapping = {name: file_index[f] for name, f in index.items()}
    with open(os.path.join(out, ".hf_metadata", "fqn_to_file_index_mapping.json"), "w") as f:
        json.dump(mapping, f, indent=2, sort_keys=True)
    with open(os.path.join(src, "config.json"), "rb") as s, \
            open(os.path.join(out, ".hf_metadata", "config.json"), "wb") as f:
        f.write(s.read())


if __name__ == "__main__":
    main()
