/* SPDX-License-Identifier: MIT */
/*
 * fixture: deterministic synthetic Ling 2.0 checkpoints in HF layout, for
 * tests, benchmarks and demos.  "tiny" has the dimensions of the golden
 * checkpoint; "mini" those of Ling-mini-2.0 with fewer layers and a small
 * vocabulary.  Same options = byte-identical files.
 */
#ifndef CKPTCONV_FIXTURE_H
#define CKPTCONV_FIXTURE_H

#include <stdint.h>

#include "ckptconv/dtype.h"

struct err;

enum fixture_preset { FIXTURE_TINY, FIXTURE_MINI };

struct fixture_options {
	enum fixture_preset preset;
	uint32_t layers;             /* 0 = preset default (2) */
	enum dtype dtype;            /* DTYPE_BF16 (default) or DTYPE_F32 */
	uint64_t seed;
	uint64_t max_shard_size;     /* 0 = preset default */
};

/* Writes config.json, the shards and the index into dir (created if
 * needed; must not hold a checkpoint). */
int fixture_write(const char *dir, const struct fixture_options *o, struct err *e);

#endif
