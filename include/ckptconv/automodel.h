/* SPDX-License-Identifier: MIT */
/*
 * automodel: NeMo Automodel's sharded training checkpoints, and their
 * consolidation into a HF checkpoint.
 *
 * With `model_save_format: safetensors` an Automodel save writes, in its
 * `model/` folder, one `shard-<rank+1>-model-00001-of-00001.safetensors` per
 * rank holding that rank's chunk of each tensor (FSDP2 / tensor / expert
 * parallel), the chunk offsets in the header's
 * __metadata__.DCP_SHARDING_INFO (a JSON document stored as a string:
 * {name: {"saved_offsets": [...]}}), and `.hf_metadata/` with the original
 * config.json, fqn_to_file_index_mapping.json (name -> 1-based output file)
 * and, when not empty, fqn_to_dtype_mapping.json (name -> original dtype).
 * Automodel's consolidation (tools/offline_hf_consolidation.py, commit
 * 36044ad3) turns it into HF shards; every rule is in docs/consolidation.md and
 * this module reproduces its output byte for byte, as a plan (plan.h) whose
 * ops copy N-dimensional chunk boxes into the full tensors, so exec writes
 * it like any conversion.  Unlike Automodel it refuses what it would
 * silently get wrong: overlapping chunks, gaps (zero-filled by Automodel),
 * chunks disagreeing in dtype or number of dimensions, tensors no output
 * file takes.
 *
 * Threads: any thread, one object per thread; no shared state.
 */
#ifndef CKPTCONV_AUTOMODEL_H
#define CKPTCONV_AUTOMODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/adapter.h"
#include "ckptconv/dtype.h"
#include "ckptconv/safetensors.h"

struct err;
struct ckpt;
struct plan;

#define AUTOMODEL_METADATA_DIR ".hf_metadata"
#define AUTOMODEL_FILE_MAPPING "fqn_to_file_index_mapping.json"
#define AUTOMODEL_DTYPE_MAPPING "fqn_to_dtype_mapping.json"

/* One tensor chunk of one shard: a box of the full tensor. */
struct automodel_chunk {
	const char *name; /* points into the shard's parse */
	enum dtype dtype;
	int ndim;
	uint64_t shape[ST_MAX_DIMS];   /* the chunk's sizes */
	uint64_t offsets[ST_MAX_DIMS]; /* saved_offsets: its first element's index per dim */
	uint64_t begin, end;	       /* data_offsets, relative to the data area */
};

/* One shard's header as Automodel wrote it: its chunks in header order. */
struct automodel_shard {
	struct st_header header; /* validated as any safetensors header */
	size_t nchunks;
	struct automodel_chunk *chunks;
};

/* Parses and validates one shard header (json/len = the header_len bytes
 * after the 8-byte prefix of a file of file_size bytes; `where` names it in
 * errors): every safetensors rule (st_header_parse), then
 * __metadata__.DCP_SHARDING_INFO: a JSON object with exactly one entry
 * {"saved_offsets": [n, ...]} per tensor of the header, with one offset
 * per dimension, offset + size not overflowing.  Fills `out`
 * (automodel_shard_fini releases it).  No I/O.  Codes: the safetensors
 * ones, sharding_info_missing, sharding_info_invalid (with the tensor when
 * one entry is at fault). */
int automodel_shard_parse(const char *where, const char *json, size_t len, uint64_t header_len,
			  uint64_t file_size, struct automodel_shard *out, struct err *e);
void automodel_shard_fini(struct automodel_shard *s);

/* Parses fqn_to_file_index_mapping.json (want_dtypes false: a JSON object
 * of names to integers >= 1) or fqn_to_dtype_mapping.json (true: names to
 * safetensors dtype strings), no duplicate keys.  *out is a new reference
 * keeping the file's order.  No I/O.  Code: mapping_invalid. */
int automodel_mapping_parse(const char *where, const char *text, size_t len, bool want_dtypes,
			    json_t **out, struct err *e);

struct automodel;
struct store_config;

/* Opens `location` (local directory or s3:// prefix; its stores opened with
 * `cfg`, borrowed until automodel_free, NULL: the environment's settings)
 * if it is an Automodel
 * sharded checkpoint: a `shard-*-model-*.safetensors` file in it.  Returns
 * 1 when it is not one (nothing opened, *am and *ckpt NULL), 0 when it is
 * and every check passed, -1 with e set when it is one but broken.  On 0,
 * *ckpt is a checkpoint whose files are the shards in name order and whose
 * tensors are the chunks (one ckpt_tensor per chunk, names not unique, not
 * sorted: ckpt_find does not apply), config the metadata's config.json;
 * *am describes the full tensors.  Free *ckpt before *am (the chunk names
 * belong to *am).  Codes: the store's, the shard parse's, hf_metadata_missing,
 * mapping_invalid, config_invalid, chunk_overlap, chunk_gap,
 * chunk_dtype_mismatch, chunk_ndim_mismatch, chunk_out_of_bounds,
 * tensor_not_mapped, shard_missing (each with the tensor; shard_missing
 * when a fqn_to_file_index_mapping.json name but a tied lm_head.weight is
 * in no shard, or a tensor is smaller than config.json says; the message
 * names the shard file).  allow_gaps:
 * chunks that leave elements of a full tensor uncovered are taken, the
 * tensor marked to be written with zeros there, as Automodel's tool does
 * (docs/consolidation.md §5.8), and a warning names tensor and element,
 * and mapped names no shard holds are left out as Automodel leaves them
 * out (§5.6); false refuses them (chunk_gap, shard_missing). */
int automodel_open(const char *location, const struct store_config *cfg, bool allow_gaps,
		   struct ckpt **ckpt, struct automodel **am, struct err *e);
void automodel_free(struct automodel *am);

/* Builds into `p` (fresh, plan_new(ckpt, LAYOUT_HF, LAYOUT_HF)) the
 * consolidation: files, tensors, header bytes and index exactly as
 * Automodel writes them, the metadata files to put beside, then
 * plan_finish_laid_out.  dtype: AUTO = Automodel's default (restore the
 * original dtypes), KEEP = the saved dtypes, BF16/F16/F32/F64 = its
 * CAST_DTYPE.  Codes: plan_invalid, unsupported_cast, and the store's for
 * the metadata files. */
int automodel_build_plan(const struct automodel *am, const struct ckpt *ckpt,
			 enum dtype_choice dtype, struct plan *p, struct err *e);

struct plan_options;

/* Consolidation and conversion to native in one pass: the adapter that
 * recognises the metadata's config.json plans from the consolidated
 * tensors (their full shapes, the dtypes a consolidation restores, or the
 * saved ones for KEEP), then every op is rewritten to read the chunks
 * holding its elements (tensors of at most 2 dimensions, as HF weights
 * are), and the plan finished and checked as any conversion's.  *out is
 * a new plan whose src is `chunks`.  Codes: missing_config, the adapter's
 * (unsupported_model, unknown_layout, ...), plan_finish's, the store's for
 * the metadata files. */
int automodel_build_native_plan(const struct automodel *am, const struct ckpt *chunks,
				const struct adapter_options *ao, const struct plan_options *po,
				struct plan **out, struct err *e);

/* The description `inspect` shows: ranks, chunks per tensor, full shapes,
 * output files.  A new reference. */
json_t *automodel_describe(const struct automodel *am, const struct ckpt *ckpt);

#endif
