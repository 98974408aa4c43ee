/* SPDX-License-Identifier: MIT */
/*
 * testckpt: small synthetic safetensors checkpoints for the test suites.
 * A test lists tensors (name, dtype, shape), optionally starts from the
 * tensors of a tiny Ling 2.0 model in either layout and edits them, and
 * writes config.json, one or more shards and the index into a directory.
 * Tensor bytes are a deterministic function of the tensor's name, so tests
 * can compute what a conversion must produce; float tensors hold finite
 * normal values.  Failures abort: these are test fixtures.
 */
#ifndef CKPTCONV_TESTCKPT_H
#define CKPTCONV_TESTCKPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/dtype.h"
#include "ckptconv/safetensors.h"

struct testckpt_tensor {
	char *name;
	enum dtype dtype;
	int ndim;
	uint64_t shape[ST_MAX_DIMS];
};

struct testckpt {
	json_t *config; /* written as config.json unless NULL; owned */
	struct testckpt_tensor *tensors;
	size_t ntensors;
	unsigned nfiles; /* shards; 1 = model.safetensors (default) */
	bool index;	 /* write the index even for one shard */
};

/* Shape literal: TC_SHAPE(32, 64). */
#define TC_SHAPE(...) ((const uint64_t[]){__VA_ARGS__})

/* Starts with the config of tests/golden/tiny (H 64, 4 heads, 2 KV
 * heads, head_dim 16, 4 experts, I 32, 2 layers, layer 0 dense). */
struct testckpt *testckpt_new(void);
void testckpt_free(struct testckpt *tc);
json_t *testckpt_tiny_config(void);

void testckpt_add(struct testckpt *tc, const char *name, enum dtype dtype, int ndim,
		  const uint64_t *shape);
struct testckpt_tensor *testckpt_find(struct testckpt *tc, const char *name);
/* Removes the tensor; false when there is none of that name. */
bool testckpt_remove(struct testckpt *tc, const char *name);

/* The tensors of a Ling 2.0 model with tc->config's dimensions, BF16 with
 * an F32 router weight and expert bias, in the HF or the native layout. */
void testckpt_add_ling_hf(struct testckpt *tc);
void testckpt_add_ling_native(struct testckpt *tc);

/* Writes the checkpoint into the existing directory dir. */
void testckpt_write(const struct testckpt *tc, const char *dir);

/* The bytes testckpt_write stores for a tensor of this name and dtype. */
void testckpt_fill(const char *name, enum dtype dtype, void *buf, size_t len);
uint64_t testckpt_nbytes(const struct testckpt_tensor *t);

#endif
