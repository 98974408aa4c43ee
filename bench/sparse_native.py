#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# bench/sparse_native.py PLAN SRC OUT: writes, into OUT, the checkpoint that
# `ckptconv convert --dry-run --json` planned (PLAN, its JSON output; SRC,
# the source it planned from) with every tensor's data left as a file hole:
# the same files, names, dtypes and shapes the conversion would write, all
# values zero, taking no disk.  bench/scale.sh uses it for the native
# source of the --to hf runs, so that neither direction's source costs disk
# or a full conversion to prepare.  Needs a filesystem with sparse files.
import json, os, shutil, struct, sys

plan_path, src, out = sys.argv[1:4]
with open(plan_path) as f:
    plan = json.load(f)
os.makedirs(out)
by_file = {}
for t in plan["tensors"]:
    by_file.setdefault(t["file"], []).append(t)
weight_map, total = {}, 0
for entry in plan["files"]:
    name = entry["name"]
    tensors = sorted(by_file.get(name, []), key=lambda t: t["offset"])
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for t in tensors:
        header[t["name"]] = {"dtype": t["dtype"], "shape": t["shape"],
                             "data_offsets": [offset, offset + t["nbytes"]]}
        offset += t["nbytes"]
        weight_map[t["name"]] = name
        total += t["nbytes"]
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)
if plan.get("index"):
    with open(os.path.join(out, plan["index"]), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
for name in os.listdir(src):
    path = os.path.join(src, name)
    if os.path.isfile(path) and not name.endswith(".safetensors") and \
            name != "model.safetensors.index.json":
        shutil.copyfile(path, os.path.join(out, name))
