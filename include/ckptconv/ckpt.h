/* SPDX-License-Identifier: MIT */
/*
 * ckpt: a checkpoint opened for reading: a directory or prefix holding
 * model.safetensors.index.json and its shards, or a single *.safetensors
 * file (or a directory with exactly one), plus config.json.  Every header is
 * validated on open; the index's weight_map must agree with the files.
 * Tensors are listed in natural name order.
 */
#ifndef CKPTCONV_CKPT_H
#define CKPTCONV_CKPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/dtype.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/util.h"

struct err;
struct store_config;
struct store;

/* The file names of a checkpoint in the HF layout (SPEC.md), for every
 * module that reads, writes or replaces one: the index, the single file of
 * an unsharded checkpoint, the shards (a printf format taking the shard
 * number from 1 and the count, as size_t; and its fnmatch pattern). */
#define CKPT_INDEX_NAME "model.safetensors.index.json"
#define CKPT_SINGLE_NAME "model.safetensors"
#define CKPT_SHARD_FORMAT "model-%05zu-of-%05zu.safetensors"
#define CKPT_SHARD_PATTERN "model-*-of-*.safetensors"

struct ckpt_file {
	char *name;                 /* relative to the checkpoint's location */
	uint64_t size;
	struct st_header header;
};

struct ckpt_tensor {
	const char *name;           /* points into the file's header */
	enum dtype dtype;
	int ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint32_t file;              /* index into ckpt.files */
	uint64_t offset;            /* absolute byte offset in the file */
	uint64_t nbytes;
};

struct ckpt {
	struct store *store;        /* owned */
	bool has_index;
	size_t nfiles;
	struct ckpt_file *files;
	size_t ntensors;
	struct ckpt_tensor *tensors; /* natural order by name */
	json_t *config;             /* config.json; NULL when opened without it */
	struct strvec copy_files;   /* top-level files copied unchanged to output */
	struct strvec warnings;     /* skipped: weights in other formats, subdirectories,
				     * files leading outside the allowed roots */
	uint64_t total_bytes;       /* sum of tensor bytes */
};

enum ckpt_open_flags {
	CKPT_REQUIRE_CONFIG = 1 << 0,
};

/* Opens and validates the checkpoint at `location` (local path or s3://).
 * The local store's temporary files are never part of it (store.h).
 * Codes: source_not_found, not_a_checkpoint (also for a location naming a
 * temporary file), index_invalid, index_missing_file, weight_map_mismatch,
 * missing_config, config_invalid, duplicate_tensor (across files),
 * lfs_pointer (a weight file, the index or config.json is a git-lfs pointer
 * file), forbidden_path (confined: the index, a weight file or config.json
 * leads outside the allowed roots, named), and every safetensors code. */
int ckpt_open(const char *location, unsigned flags, struct ckpt **out, struct err *e);
/* ckpt_open with the stores opened with `cfg` (store_open_config; NULL:
 * the environment's settings). */
int ckpt_open_config(const char *location, unsigned flags, const struct store_config *cfg,
		     struct ckpt **out, struct err *e);
void ckpt_free(struct ckpt *c);

/* Parses the `len` bytes of a model.safetensors.index.json (HF's index of
 * a sharded checkpoint; need not be NUL-terminated): a JSON object, no
 * duplicate keys, whose "weight_map" object maps every tensor name (at
 * least one) to the shard file holding it, a file beside the index (no
 * '/').  Its other
 * members (metadata.total_size) are not used.  `where` names the file in
 * errors.  On success *weight_map is a new reference (json_decref it); on
 * failure NULL.  No I/O; any thread.  Code: index_invalid (with the tensor
 * when one weight_map entry is at fault). */
int ckpt_index_parse(const char *where, const char *text, size_t len, json_t **weight_map,
		     struct err *e);

/* Parses the `len` bytes of a config.json (need not be NUL-terminated):
 * one JSON object.  `where` names the file in errors.  On success *config
 * is a new reference (json_decref it); on failure NULL.  The adapters read
 * the keys they need (adapter.h).  No I/O; any thread.  Code:
 * config_invalid. */
int ckpt_config_parse(const char *where, const char *text, size_t len, json_t **config,
		      struct err *e);

/* Index of the tensor named `name`, or -1. O(log n). */
long ckpt_find(const struct ckpt *c, const char *name);

/* config.json helpers: integer/string keys; "missing_config_key" names the
 * key when required and absent. */
int ckpt_config_int(const struct ckpt *c, const char *key, int64_t *out, struct err *e);
const char *ckpt_config_string(const struct ckpt *c, const char *key);
/* The config.json key that holds the model's dtype, read as transformers'
 * PretrainedConfig reads it: "dtype" (what transformers writes since 4.56,
 * and the one it uses when both are set), else "torch_dtype"; a key set to
 * null counts as absent.  NULL when neither is set.  The value may still be
 * anything: the caller checks it. */
const char *ckpt_config_dtype_key(const struct ckpt *c);

#endif
