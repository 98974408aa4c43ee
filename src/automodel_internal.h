/* SPDX-License-Identifier: MIT */
/*
 * What automodel.c (opening, checking) and automodel_plan.c (the
 * consolidation plan) share: the opened sharded checkpoint.
 */
#ifndef CKPTCONV_AUTOMODEL_INTERNAL_H
#define CKPTCONV_AUTOMODEL_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "ckptconv/automodel.h"
#include "ckptconv/util.h"

/* A full tensor: its chunks across the shards. */
struct automodel_tensor {
	const char *name;
	enum dtype dtype;               /* the saved dtype (every chunk's) */
	int ndim;
	uint64_t shape[ST_MAX_DIMS];    /* per dimension the largest offset + size */
	uint32_t *chunks;               /* indices into automodel.chunks, shard order */
	uint32_t nchunks;
	uint32_t file_index;            /* fqn_to_file_index_mapping value */
	enum dtype mapped_dtype;        /* fqn_to_dtype_mapping value, or INVALID */
	bool zero_fill;                 /* chunks leave gaps: written as zeros */
};

struct automodel {
	char *location;                 /* the store's, for messages */
	const struct store_config *cfg; /* borrowed from automodel_open's caller */
	bool allow_gaps;                /* automodel_open's: missing data is zeros or dropped */
	size_t nshards;
	struct automodel_shard *shards; /* in name order, as ckpt.files */
	const char **files;             /* shard file names (ckpt's) */
	uint32_t *shard_index;          /* the number in each shard's name: rank + 1 */
	size_t nchunks;
	struct automodel_chunk *chunks; /* = ckpt.tensors, same indices */
	uint32_t *chunk_file;           /* shard of each chunk */
	size_t ntensors;
	struct automodel_tensor *tensors; /* first appearance over the shards */
	json_t *mapping;                /* name -> file index, the file's order */
	json_t *dtypes;                 /* name -> dtype string, or NULL */
	uint32_t max_index;             /* largest file index of the whole mapping */
	struct strvec metadata_files;   /* .hf_metadata files copied to the output */
};

struct plan;
struct ckpt;

/* True for a name fqn_to_file_index_mapping.json may hold that no shard
 * holds: lm_head.weight when config.json ties the embeddings. */
bool automodel_tied_alias(const struct ckpt *c, const char *name);

/* The dtype a consolidation writes tensor t in (docs/consolidation.md
 * §5.4): KEEP the saved one, AUTO the original one restored, BF16/F16/F32
 * Automodel's CAST_DTYPE. */
enum dtype automodel_output_dtype(const struct automodel_tensor *t, enum dtype_choice choice);

/* Adds the .hf_metadata files but the two mappings to p as files written
 * from memory; with a cast (not INVALID) config.json rewritten as Python
 * does, with torch_dtype.  Codes: the store's. */
int automodel_add_metadata(struct plan *p, const struct automodel *am, const struct ckpt *c,
			   enum dtype cast, struct err *e);

#endif
