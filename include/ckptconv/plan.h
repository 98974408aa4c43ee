/* SPDX-License-Identifier: MIT */
/*
 * plan: what a conversion will write, decided before any data moves.  Pure
 * data, deterministic: output tensors in natural name order, assigned to
 * shards, with their header bytes and offsets; each output tensor is built
 * from pieces (contiguous destination byte ranges), each piece from ops on
 * source tensor regions.  Built by a model adapter, executed by exec.
 *
 * An op reads a rows x cols matrix of src_dtype elements starting at
 * src_offset bytes into source tensor `src` (row stride src_stride bytes)
 * and writes it to the piece's buffer at dst_offset bytes from the start of
 * the piece: transposed or not, cast to dst_dtype or not, dst_stride bytes
 * between destination rows.  A plain copy is rows = 1.
 */
#ifndef CKPTCONV_PLAN_H
#define CKPTCONV_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ckptconv/dtype.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/util.h"

struct err;
struct ckpt;

/* Limits that keep memory bounded: a piece is at most this many bytes of
 * output, and an op reads at most PLAN_WINDOW_MAX bytes of source. */
#define PLAN_PIECE_MAX (16ULL << 20)
#define PLAN_WINDOW_MAX (64ULL << 20)

enum layout { LAYOUT_UNKNOWN = 0, LAYOUT_HF, LAYOUT_NATIVE };
/* The largest shard's tensor data unless asked otherwise (HF's 5GB). */
#define PLAN_MAX_SHARD_SIZE_DEFAULT 5000000000ULL
const char *layout_name(enum layout l);   /* "hf", "native" */

struct plan_op {
	uint32_t src;               /* index into the source ckpt's tensors */
	bool transpose;
	enum dtype src_dtype, dst_dtype;
	uint64_t rows, cols;        /* of the source matrix, in elements */
	uint64_t src_offset;        /* bytes from the source tensor's start */
	uint64_t src_stride;        /* bytes between source rows */
	uint64_t dst_offset;        /* bytes from the piece's start */
	uint64_t dst_stride;        /* bytes between destination rows */
};

struct plan_piece {
	uint64_t offset;            /* bytes from the output tensor's start */
	uint64_t nbytes;
	uint32_t first_op, nops;    /* into the tensor's ops */
	bool zero_fill;             /* starts as zeros, the ops write over it:
				     * bytes no op writes are zeros */
};

struct plan_tensor {
	char *name;
	enum dtype dtype;
	int ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t nbytes;
	uint32_t file;              /* index into plan.files */
	uint64_t offset;            /* absolute offset in the output file */
	struct plan_piece *pieces;
	uint32_t npieces;
	struct plan_op *ops;
	uint32_t nops;
	uint32_t *sources;          /* source tensor indices, for reports */
	uint32_t nsources;
};

struct plan_file {
	char *name;                 /* "model.safetensors" or "model-0000i-of-0000N.safetensors" */
	uint64_t size;              /* header + data */
	char *header;               /* complete header bytes (prefix + JSON) */
	size_t header_len;
	uint32_t first_tensor, ntensors;
};

/* A file the conversion writes from memory beside the shards, before them
 * (a consolidation's metadata files, taken from the source's .hf_metadata/
 * and possibly rewritten). */
struct plan_put {
	char *name;                 /* relative to the destination */
	char *data;                 /* owned */
	size_t len;
};

struct plan_options {
	uint64_t max_shard_size;    /* 0 = PLAN_MAX_SHARD_SIZE_DEFAULT */
	const char *exclude;        /* POSIX ERE or NULL */
	bool tensors_only;          /* sort and check the tensors, but assign
				     * no shards and build no headers: for a
				     * plan that is read, never executed */
};

struct plan {
	enum layout from, to;
	size_t ntensors;
	struct plan_tensor *tensors; /* output order */
	size_t nfiles;
	struct plan_file *files;
	char *index_json;           /* NULL when the output is one model.safetensors */
	uint64_t total_bytes;       /* tensor data bytes */
	uint64_t total_file_bytes;  /* every output file, headers included */
	uint64_t source_bytes;      /* source bytes the ops read */
	size_t npieces;
	size_t nexcluded;           /* tensors the exclude pattern dropped */
	struct strvec copy_files;   /* files to copy from the source unchanged */
	struct strvec warnings;
	struct plan_put *puts;      /* written besides copy_files */
	size_t nputs;
	const struct ckpt *src;     /* not owned */
	bool finished;              /* plan_finish succeeded: sorted, sharded */
	bool laid_out;              /* finished by plan_finish_laid_out: the
				     * builder's order, files and headers */
};

struct plan *plan_new(const struct ckpt *src, enum layout from, enum layout to);
void plan_free(struct plan *p);

/* Building (adapter side).  Returns the new tensor's index, or -1 with e set. */
long plan_add_tensor(struct plan *p, const char *name, enum dtype dtype, int ndim,
		     const uint64_t *shape, struct err *e);
/* Adds a piece to tensor t, filled by the given ops (copied).  The pieces
 * of a tensor must tile it exactly (checked by plan_finish). */
int plan_add_piece(struct plan *p, long t, uint64_t offset, uint64_t nbytes,
		   const struct plan_op *ops, size_t nops, struct err *e);
/* Marks the last piece added to tensor t zero-filled: bytes of it that no
 * op writes are written as zeros (a consolidation whose chunks leave gaps,
 * when allowed).  Codes: plan_invalid (no such tensor, or no piece yet). */
int plan_zero_fill_last_piece(struct plan *p, long t, struct err *e);
/* Convenience: contiguous copy or cast of nelems elements from src (at
 * src_offset bytes) into tensor t at dst_offset, split into pieces of at
 * most PLAN_PIECE_MAX. */
int plan_add_contiguous(struct plan *p, long t, uint32_t src, uint64_t src_offset,
			uint64_t dst_offset, uint64_t nelems, enum dtype src_dtype,
			enum dtype dst_dtype, struct err *e);
/* A matrix of a source tensor, read by column: element (r, c) is
 * r * stride + c * element size bytes after `offset` bytes into source
 * tensor src, and columns col, col + 1, ... are read. */
struct plan_block {
	uint32_t src;               /* index into the source ckpt's tensors */
	uint64_t offset;            /* bytes from the source tensor's start */
	uint64_t stride;            /* bytes between rows */
	uint64_t rows;
	uint64_t col;               /* the first column read */
};
/* Writes nrows rows of tensor t, starting `offset` bytes into it, with the
 * transposes of the blocks side by side: destination row j holds column
 * col + j of each block in turn (rows[0] elements of blocks[0], then
 * rows[1] of blocks[1], ...; a row is every block's rows together, in t's
 * dtype).  Each block's elements are cast from its source tensor's dtype
 * to t's.  The rows go into pieces of as many whole rows as fit in
 * PLAN_PIECE_MAX bytes (at least one), and each op reads a window of at
 * most PLAN_WINDOW_MAX bytes.  Codes: plan_invalid (a bad tensor or
 * source index, a row of no bytes). */
int plan_add_transposed(struct plan *p, long t, uint64_t offset, uint64_t nrows,
			const struct plan_block *blocks, size_t nblocks, struct err *e);
/* Records that tensor t is made from source tensor src (once; pieces
 * record their ops' sources themselves).  -1 for a bad index. */
int plan_add_source(struct plan *p, long t, uint32_t src);

/* Drops tensors matching the exclude pattern, sorts naturally, checks that
 * pieces tile their tensors and ops stay inside their sources, assigns
 * shards, builds headers and the index (the last three not when
 * o->tensors_only).  Codes: invalid_exclude, duplicate_tensor (two outputs
 * with one name), plan_invalid. */
int plan_finish(struct plan *p, const struct plan_options *o, struct err *e);

/* Adds a file to write from memory; takes `data` (malloc'd, len bytes). */
void plan_add_put(struct plan *p, const char *name, char *data, size_t len);

/* Adds an output file whose header bytes (prefix + JSON, `header` taken,
 * malloc'd) the builder made; its tensors are the ntensors added last,
 * starting at first_tensor, whose `file` and absolute `offset` the builder
 * set too.  Returns the file's index. */
size_t plan_add_file(struct plan *p, const char *name, char *header, size_t header_len,
		     uint32_t first_tensor, uint32_t ntensors);

/* Finishes a plan whose builder laid out the output itself (tensor order,
 * files, header bytes, offsets, index_json: a format ckptconv reproduces
 * rather than chooses, as a consolidation): checks pieces and ops as
 * plan_finish does, that each file's tensors follow its header back to back
 * and end at its size, and counts the totals.  No exclusion, no sorting;
 * plan_find searches linearly.  Codes: plan_invalid, duplicate_tensor. */
int plan_finish_laid_out(struct plan *p, struct err *e);

/* Human-readable (one line per file and tensor) or JSON description. */
void plan_print(const struct plan *p, FILE *out, bool json);

/* Index of the output tensor named `name`, or -1. */
long plan_find(const struct plan *p, const char *name);

/* Hex SHA-256 of what the plan writes: file names, header bytes and every
 * op (with its source tensor's name).  Equal digests mean two processes
 * computed the same plan (partitioned conversions check this). */
void plan_digest(const struct plan *p, char out[65]);

#endif
