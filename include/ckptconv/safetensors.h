/* SPDX-License-Identifier: MIT */
/*
 * safetensors: strict parsing and validation of a safetensors header, and
 * building the header of a file we write (SPEC.md, "safetensors rules").
 * Pure functions over bytes: no I/O, so the same code serves local files and
 * object-store ranges.
 */
#ifndef CKPTCONV_SAFETENSORS_H
#define CKPTCONV_SAFETENSORS_H

#include <stdint.h>
#include <stddef.h>

#include <jansson.h>

#include "ckptconv/dtype.h"

struct err;

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_LEN 100000000ULL
#define ST_PREFIX_LEN 8

struct st_tensor {
	char *name; /* owned */
	enum dtype dtype;
	int ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t begin, end; /* data_offsets, relative to the data area */
};

struct st_header {
	uint64_t header_len; /* N, the JSON length from the prefix */
	uint64_t data_start; /* 8 + N: where the data area starts */
	uint64_t file_size;
	size_t ntensors;
	struct st_tensor *tensors; /* in data order (sorted by begin) */
};

/* Validates the 8-byte prefix: N <= ST_MAX_HEADER_LEN and 8 + N <= file_size.
 * `path` names the file in errors.  Codes: file_truncated, header_too_large,
 * header_out_of_bounds. */
int st_prefix_parse(const char *path, const unsigned char prefix[ST_PREFIX_LEN], uint64_t file_size,
		    uint64_t *header_len, struct err *e);

/* Parses and validates the JSON header (json/len = the N bytes after the
 * prefix) of a file of `file_size` bytes, filling `out` (st_header_fini
 * releases it).  Every rule of SPEC.md is checked: object, no duplicate
 * keys, known dtypes, shapes, offsets = shape x size, exact coverage of the
 * data area, no trailing bytes, __metadata__ string->string.  Codes:
 * header_not_object, header_invalid_json, duplicate_tensor, unknown_dtype,
 * invalid_shape, invalid_offsets, offsets_mismatch, overlapping_tensors,
 * data_hole, offsets_out_of_bounds, trailing_bytes, invalid_metadata. */
int st_header_parse(const char *path, const char *json, size_t len, uint64_t header_len,
		    uint64_t file_size, struct st_header *out, struct err *e);
/* st_header_parse, also handing over the parsed JSON object (*root_out,
 * owned by the caller: json_decref) for what st_header drops, the header's
 * key order and __metadata__; *root_out is untouched on failure.  The
 * header is validated member by member (so memory stays per member); for
 * callers asking for the tree, readers of a few shards' metadata (an
 * Automodel checkpoint), the members' values are gathered into it as
 * they are parsed, in header order (the text is parsed once). */
int st_header_parse_root(const char *path, const char *json, size_t len, uint64_t header_len,
			 uint64_t file_size, struct st_header *out, json_t **root_out,
			 struct err *e);
void st_header_fini(struct st_header *h);

uint64_t st_tensor_nbytes(const struct st_tensor *t);

/* Builds a complete header for tensors stored contiguously in the given
 * order (their begin/end are ignored and computed): the 8-byte prefix plus
 * the JSON with __metadata__ {"format":"pt"}, padded with spaces to a
 * multiple of 8.  *out is malloc'd; *out_len includes the prefix. */
int st_header_build(const struct st_tensor *tensors, size_t n, char **out, size_t *out_len,
		    struct err *e);

#endif
