/* SPDX-License-Identifier: MIT */
/*
 * check_plan: natural ordering, shard assignment and naming, headers that
 * parse back, the index, the exclude pattern, validation of pieces and ops,
 * the printed forms, determinism and the digest.  Plans are built over an
 * in-memory source checkpoint: plan never reads data.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/plan.h"
#include "ckptconv/safetensors.h"
#include "testutil.h"

/* A source checkpoint of 1-D tensors, described by name, dtype and
 * element count. */
struct fake_src {
	struct ckpt c;
	struct ckpt_tensor t[16];
};

static void fake_add(struct fake_src *f, const char *name, enum dtype dtype, uint64_t nelems)
{
	struct ckpt_tensor *t = &f->t[f->c.ntensors++];

	ck_assert_uint_le(f->c.ntensors, 16);
	t->name = name;
	t->dtype = dtype;
	t->ndim = 1;
	t->shape[0] = nelems;
	ck_assert(dtype_bytes(dtype, nelems, &t->nbytes));
	f->c.tensors = f->t;
}

/* Output tensor `name` = a copy of source tensor src. */
static long copy_of(struct plan *p, struct fake_src *f, const char *name, uint32_t src)
{
	struct err e = {0};
	long t = plan_add_tensor(p, name, f->t[src].dtype, 1, f->t[src].shape, &e);

	ck_assert_msg(t >= 0, "%s", e.msg);
	ck_assert_msg(plan_add_contiguous(p, t, src, 0, 0, f->t[src].shape[0], f->t[src].dtype,
					  f->t[src].dtype, &e) == 0,
		      "%s", e.msg);
	return t;
}

static struct plan *finished(struct plan *p, uint64_t max_shard, const char *exclude)
{
	struct plan_options o = {.max_shard_size = max_shard, .exclude = exclude};
	struct err e = {0};

	ck_assert_msg(plan_finish(p, &o, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	return p;
}

static void expect_finish_error(struct plan *p, const struct plan_options *o, const char *code,
				const char *tensor)
{
	struct err e = {0};

	ck_assert_int_eq(plan_finish(p, o, &e), -1);
	ck_assert_str_eq(err_name(e.code), code);
	if (tensor) {
		ck_assert_str_eq(e.tensor, tensor);
		ck_assert_msg(strstr(e.msg, tensor), "message does not name %s: %s", tensor, e.msg);
	}
}

/* The header bytes parse back to the plan's tensors at the plan's offsets. */
static void check_header(const struct plan *p, size_t fi)
{
	static const char metadata[] = "\"__metadata__\":{\"format\":\"pt\"}";
	const struct plan_file *f = &p->files[fi];
	struct st_header h = {0};
	struct err e = {0};
	uint64_t n;
	size_t i;

	ck_assert_uint_eq(f->header_len % 8, 0);
	ck_assert_int_eq(
		st_prefix_parse(f->name, (const unsigned char *)f->header, f->size, &n, &e), 0);
	ck_assert_uint_eq(n + 8, f->header_len);
	ck_assert_msg(st_header_parse(f->name, f->header + 8, n, n, f->size, &h, &e) == 0, "%s: %s",
		      err_name(e.code), e.msg);
	ck_assert_uint_eq(h.ntensors, f->ntensors);
	for (i = 0; i < h.ntensors; i++) {
		const struct plan_tensor *t = &p->tensors[f->first_tensor + i];

		ck_assert_str_eq(h.tensors[i].name, t->name);
		ck_assert_int_eq(h.tensors[i].dtype, t->dtype);
		ck_assert_uint_eq(h.tensors[i].shape[0], t->shape[0]);
		ck_assert_uint_eq(h.data_start + h.tensors[i].begin, t->offset);
		ck_assert_uint_eq(t->file, fi);
	}
	ck_assert_ptr_nonnull(memmem(f->header + 8, f->header_len - 8, metadata, strlen(metadata)));
	st_header_fini(&h);
}

START_TEST(test_natural_order)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);

	fake_add(&f, "w", DTYPE_BF16, 4);
	copy_of(p, &f, "model.layers.10.w", 0);
	copy_of(p, &f, "model.layers.2.w", 0);
	copy_of(p, &f, "lm_head.weight", 0);
	copy_of(p, &f, "model.layers.1.w", 0);
	finished(p, 0, NULL);
	ck_assert_uint_eq(p->ntensors, 4);
	ck_assert_str_eq(p->tensors[0].name, "lm_head.weight");
	ck_assert_str_eq(p->tensors[1].name, "model.layers.1.w");
	ck_assert_str_eq(p->tensors[2].name, "model.layers.2.w");
	ck_assert_str_eq(p->tensors[3].name, "model.layers.10.w");
	ck_assert_int_eq(plan_find(p, "model.layers.10.w"), 3);
	ck_assert_int_eq(plan_find(p, "model.layers.2.w"), 2);
	ck_assert_int_eq(plan_find(p, "model.layers.3.w"), -1);
	plan_free(p);
}
END_TEST

START_TEST(test_single_file)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);

	fake_add(&f, "a", DTYPE_BF16, 10);
	fake_add(&f, "b", DTYPE_F32, 3);
	copy_of(p, &f, "a", 0);
	copy_of(p, &f, "b", 1);
	finished(p, 0, NULL);
	ck_assert_uint_eq(p->nfiles, 1);
	ck_assert_str_eq(p->files[0].name, "model.safetensors");
	ck_assert_ptr_null(p->index_json);
	ck_assert_uint_eq(p->total_bytes, 32);
	ck_assert_uint_eq(p->files[0].size, p->files[0].header_len + 32);
	ck_assert_uint_eq(p->total_file_bytes, p->files[0].size);
	ck_assert_uint_eq(p->source_bytes, 32);
	ck_assert_uint_eq(p->npieces, 2);
	ck_assert_uint_eq(p->tensors[0].offset, p->files[0].header_len);
	ck_assert_uint_eq(p->tensors[1].offset, p->files[0].header_len + 20);
	check_header(p, 0);
	plan_free(p);
}
END_TEST

static struct plan *sharded_plan(struct fake_src *f, uint64_t max)
{
	struct plan *p = plan_new(&f->c, LAYOUT_HF, LAYOUT_NATIVE);

	fake_add(f, "s400", DTYPE_U8, 400);
	fake_add(f, "s1500", DTYPE_U8, 1500);
	fake_add(f, "s100", DTYPE_U8, 100);
	copy_of(p, f, "t.1", 0);
	copy_of(p, f, "t.2", 0);
	copy_of(p, f, "t.3", 0);
	copy_of(p, f, "t.4", 1);
	copy_of(p, f, "t.5", 2);
	return finished(p, max, NULL);
}

START_TEST(test_shards)
{
	static const unsigned expect_file[] = {0, 0, 1, 2, 3};
	struct fake_src f = {0};
	struct plan *p = sharded_plan(&f, 1000);
	json_t *index, *map, *v;
	json_error_t jerr;
	const char *key;
	size_t i;

	/* 400+400 fill shard 1; 400 starts shard 2; 1500 is larger than the
	 * maximum and gets shard 3 alone; 100 follows in shard 4. */
	ck_assert_uint_eq(p->nfiles, 4);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(p->tensors[i].file, expect_file[i]);
	ck_assert_str_eq(p->files[0].name, "model-00001-of-00004.safetensors");
	ck_assert_str_eq(p->files[3].name, "model-00004-of-00004.safetensors");
	ck_assert_uint_eq(p->files[0].ntensors, 2);
	ck_assert_uint_eq(p->files[2].first_tensor, 3);
	for (i = 0; i < p->nfiles; i++)
		check_header(p, i);
	ck_assert_uint_eq(p->total_bytes, 2800);
	ck_assert_uint_eq(p->total_file_bytes,
			  2800 + p->files[0].header_len + p->files[1].header_len +
				  p->files[2].header_len + p->files[3].header_len);

	ck_assert_ptr_nonnull(p->index_json);
	ck_assert_int_eq(p->index_json[strlen(p->index_json) - 1], '\n');
	ck_assert_ptr_nonnull(
		strstr(p->index_json, "{\n  \"metadata\": {\n    \"total_size\": 2800\n  },"));
	index = json_loads(p->index_json, 0, &jerr);
	ck_assert_ptr_nonnull(index);
	ck_assert_int_eq(json_integer_value(
				 json_object_get(json_object_get(index, "metadata"), "total_size")),
			 2800);
	map = json_object_get(index, "weight_map");
	ck_assert_uint_eq(json_object_size(map), 5);
	i = 0;
	json_object_foreach(map, key, v) {
		ck_assert_str_eq(key, p->tensors[i].name);
		ck_assert_str_eq(json_string_value(v), p->files[expect_file[i]].name);
		i++;
	}
	json_decref(index);
	plan_free(p);
}
END_TEST

START_TEST(test_shard_exactly_full)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);

	fake_add(&f, "half", DTYPE_U8, 500);
	copy_of(p, &f, "a", 0);
	copy_of(p, &f, "b", 0);
	copy_of(p, &f, "c", 0);
	finished(p, 1000, NULL);
	ck_assert_uint_eq(p->nfiles, 2);
	ck_assert_uint_eq(p->tensors[1].file, 0);
	ck_assert_uint_eq(p->tensors[2].file, 1);
	plan_free(p);
}
END_TEST

START_TEST(test_default_shard_size)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);

	/* 3 x 2e9 bytes: two fit the default 5GB, the third starts shard 2. */
	fake_add(&f, "big", DTYPE_U8, 2000000000ULL);
	copy_of(p, &f, "a", 0);
	copy_of(p, &f, "b", 0);
	copy_of(p, &f, "c", 0);
	finished(p, 0, NULL);
	ck_assert_uint_eq(p->nfiles, 2);
	ck_assert_uint_eq(p->tensors[1].file, 0);
	ck_assert_uint_eq(p->tensors[2].file, 1);
	ck_assert_uint_le(p->tensors[0].pieces[0].nbytes, PLAN_PIECE_MAX);
	ck_assert_uint_eq(p->tensors[0].npieces,
			  (2000000000ULL + PLAN_PIECE_MAX - 1) / PLAN_PIECE_MAX);
	plan_free(p);
}
END_TEST

START_TEST(test_contiguous_pieces)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	struct err e = {0};
	uint64_t shape[1] = {10 << 20};
	const struct plan_tensor *t;
	long ti;
	uint32_t i;

	/* 10 Mi F32 elements cast to BF16: 20 MiB out, pieces of 8 Mi
	 * elements (16 MiB out, 32 MiB read). */
	fake_add(&f, "f32", DTYPE_F32, 10 << 20);
	ti = plan_add_tensor(p, "bf16", DTYPE_BF16, 1, shape, &e);
	ck_assert_int_eq(plan_add_contiguous(p, ti, 0, 0, 0, 10 << 20, DTYPE_F32, DTYPE_BF16, &e),
			 0);
	finished(p, 0, NULL);
	t = &p->tensors[0];
	ck_assert_uint_eq(t->npieces, 2);
	ck_assert_uint_eq(t->pieces[0].nbytes, PLAN_PIECE_MAX);
	ck_assert_uint_eq(t->pieces[1].offset, PLAN_PIECE_MAX);
	ck_assert_uint_eq(t->pieces[1].nbytes, 4 << 20);
	for (i = 0; i < t->nops; i++) {
		ck_assert_uint_eq(t->ops[i].rows, 1);
		ck_assert_int_eq(t->ops[i].src_dtype, DTYPE_F32);
		ck_assert_int_eq(t->ops[i].dst_dtype, DTYPE_BF16);
		ck_assert_uint_eq(t->ops[i].dst_offset, 0);
	}
	ck_assert_uint_eq(t->ops[1].src_offset, 2 * PLAN_PIECE_MAX);
	ck_assert_uint_eq(t->ops[1].cols, 2 << 20);
	ck_assert_uint_eq(p->source_bytes, 40 << 20);
	ck_assert_uint_eq(t->nsources, 1);
	plan_free(p);
}
END_TEST

START_TEST(test_exclude)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	struct plan_options bad = {.exclude = "layers.(1"};

	fake_add(&f, "w", DTYPE_BF16, 4);
	copy_of(p, &f, "model.layers.1.mlp.w", 0);
	copy_of(p, &f, "model.layers.11.mlp.w", 0);
	copy_of(p, &f, "model.layers.2.attn.w", 0);
	copy_of(p, &f, "lm_head.weight", 0);
	/* Unanchored: matches inside names; `\.` keeps layers.11 out. */
	finished(p, 0, "layers\\.1\\.|^lm_");
	ck_assert_uint_eq(p->ntensors, 2);
	ck_assert_uint_eq(p->nexcluded, 2);
	ck_assert_str_eq(p->tensors[0].name, "model.layers.2.attn.w");
	ck_assert_str_eq(p->tensors[1].name, "model.layers.11.mlp.w");
	plan_free(p);

	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	copy_of(p, &f, "a", 0);
	expect_finish_error(p, &bad, "invalid_exclude", NULL);
	plan_free(p);
}
END_TEST

/* A plan that is only read: sorted and checked, no shards or headers. */
START_TEST(test_tensors_only)
{
	struct plan_options o = {.tensors_only = true};
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	struct err e = {0};

	fake_add(&f, "w", DTYPE_BF16, 4);
	copy_of(p, &f, "model.layers.10.w", 0);
	copy_of(p, &f, "model.layers.9.w", 0);
	ck_assert_msg(plan_finish(p, &o, &e) == 0, "%s", e.msg);
	ck_assert(p->finished);
	ck_assert_uint_eq(p->nfiles, 0);
	ck_assert_ptr_null(p->files);
	ck_assert_ptr_null(p->index_json);
	ck_assert_str_eq(p->tensors[0].name, "model.layers.9.w");
	ck_assert_int_eq(plan_find(p, "model.layers.10.w"), 1);
	plan_free(p);

	/* Still checked: two outputs of one name, an op past its source. */
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	copy_of(p, &f, "a", 0);
	copy_of(p, &f, "a", 0);
	expect_finish_error(p, &o, "duplicate_tensor", "a");
	plan_free(p);
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	ck_assert_int_eq(plan_add_tensor(p, "b", DTYPE_BF16, 1, (const uint64_t[]){8}, &e), 0);
	ck_assert_int_eq(plan_add_contiguous(p, 0, 0, 0, 0, 8, DTYPE_BF16, DTYPE_BF16, &e), 0);
	expect_finish_error(p, &o, "plan_invalid", "b");
	plan_free(p);
}
END_TEST

START_TEST(test_duplicate_output)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);

	fake_add(&f, "w", DTYPE_BF16, 4);
	copy_of(p, &f, "model.norm.weight", 0);
	copy_of(p, &f, "a", 0);
	copy_of(p, &f, "model.norm.weight", 0);
	expect_finish_error(p, NULL, "duplicate_tensor", "model.norm.weight");
	plan_free(p);
}
END_TEST

/* A 4 x 6 BF16 source transposed into a 6 x 4 output, with one op
 * changed by `spoil` before the plan is finished. */
static void expect_invalid(void (*spoil)(struct plan_op *op, struct plan_piece *piece))
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_NATIVE, LAYOUT_HF);
	struct plan_op op = {.src = 0,
			     .transpose = true,
			     .src_dtype = DTYPE_BF16,
			     .dst_dtype = DTYPE_BF16,
			     .rows = 4,
			     .cols = 6,
			     .src_stride = 12,
			     .dst_stride = 8};
	uint64_t shape[2] = {6, 4};
	struct err e = {0};
	long t;

	fake_add(&f, "src", DTYPE_BF16, 24);
	copy_of(p, &f, "fine", 0);
	t = plan_add_tensor(p, "bad", DTYPE_BF16, 2, shape, &e);
	ck_assert_int_eq(plan_add_piece(p, t, 0, 48, &op, 1, &e), 0);
	spoil(&p->tensors[t].ops[0], &p->tensors[t].pieces[0]);
	expect_finish_error(p, NULL, "plan_invalid", "bad");
	plan_free(p);
}

static void spoil_gap(struct plan_op *op, struct plan_piece *piece)
{
	(void)op;
	piece->offset = 2;
}

static void spoil_short_piece(struct plan_op *op, struct plan_piece *piece)
{
	(void)op;
	piece->nbytes = 40;
}

static void spoil_read_past_source(struct plan_op *op, struct plan_piece *piece)
{
	(void)piece;
	op->src_offset = 2;
}

static void spoil_write_past_piece(struct plan_op *op, struct plan_piece *piece)
{
	(void)piece;
	op->dst_offset = 2;
}

static void spoil_dtype(struct plan_op *op, struct plan_piece *piece)
{
	(void)piece;
	op->src_dtype = DTYPE_F16;
}

static void spoil_source_index(struct plan_op *op, struct plan_piece *piece)
{
	(void)piece;
	op->src = 7;
}

static void spoil_overlapping_rows(struct plan_op *op, struct plan_piece *piece)
{
	(void)piece;
	op->src_stride = 6;
}

START_TEST(test_validation)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_NATIVE, LAYOUT_HF);
	struct plan_op op = {.src = 0,
			     .transpose = true,
			     .src_dtype = DTYPE_BF16,
			     .dst_dtype = DTYPE_BF16,
			     .rows = 4,
			     .cols = 6,
			     .src_stride = 12,
			     .dst_stride = 8};
	uint64_t shape[2] = {6, 4};
	struct err e = {0};
	long t;

	/* The unspoilt op is valid. */
	fake_add(&f, "src", DTYPE_BF16, 24);
	t = plan_add_tensor(p, "good", DTYPE_BF16, 2, shape, &e);
	ck_assert_int_eq(plan_add_piece(p, t, 0, 48, &op, 1, &e), 0);
	finished(p, 0, NULL);
	plan_free(p);

	expect_invalid(spoil_gap);
	expect_invalid(spoil_short_piece);
	expect_invalid(spoil_read_past_source);
	expect_invalid(spoil_write_past_piece);
	expect_invalid(spoil_dtype);
	expect_invalid(spoil_source_index);
	expect_invalid(spoil_overlapping_rows);
}
END_TEST

/* F4 and C64 are copied (F4 as bytes, U8 ops) but never transposed or
 * cast: the planner refuses with quantized_input naming tensor and dtype. */
START_TEST(test_copy_only_dtypes)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	uint64_t shape2[2] = {2, 4}, f4_shape[1] = {8};
	struct plan_block block = {.src = 1, .stride = 32, .rows = 4};
	struct plan_op op = {.src = 0,
			     .src_dtype = DTYPE_F4,
			     .dst_dtype = DTYPE_F4,
			     .rows = 1,
			     .cols = 4,
			     .src_stride = 4,
			     .dst_stride = 4};
	struct err e = {0};
	long t;

	fake_add(&f, "packed", DTYPE_F4, 8); /* 4 bytes */
	fake_add(&f, "complex", DTYPE_C64, 8);
	t = plan_add_tensor(p, "out.packed", DTYPE_F4, 1, f4_shape, &e);
	ck_assert_int_ge(t, 0);
	ck_assert_uint_eq(p->tensors[t].nbytes, 4);
	/* moved as 4 U8 elements */
	ck_assert_int_eq(plan_add_contiguous(p, t, 0, 0, 0, 4, DTYPE_U8, DTYPE_U8, &e), 0);
	copy_of(p, &f, "out.complex", 1);
	/* no cast */
	t = plan_add_tensor(p, "out.cast", DTYPE_F32, 1, f.t[1].shape, &e);
	ck_assert_int_eq(plan_add_contiguous(p, t, 1, 0, 0, 8, DTYPE_C64, DTYPE_F32, &e), -1);
	ck_assert_str_eq(err_name(e.code), "quantized_input");
	ck_assert_msg(strstr(e.msg, "C64"), "%s", e.msg);
	/* no transpose: the source's name and dtype in the message */
	memset(&e, 0, sizeof(e));
	t = plan_add_tensor(p, "out.t", DTYPE_C64, 2, shape2, &e);
	ck_assert_int_eq(plan_add_transposed(p, t, 0, 4, &block, 1, &e), -1);
	ck_assert_str_eq(err_name(e.code), "quantized_input");
	ck_assert_str_eq(e.tensor, "complex");
	ck_assert_msg(strstr(e.msg, "complex: dtype C64 is only ever copied byte for byte"), "%s",
		      e.msg);
	plan_free(p);

	/* the two that were copied make a valid plan */
	memset(&e, 0, sizeof(e));
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	t = plan_add_tensor(p, "out.packed", DTYPE_F4, 1, f4_shape, &e);
	ck_assert_int_eq(plan_add_contiguous(p, t, 0, 0, 0, 4, DTYPE_U8, DTYPE_U8, &e), 0);
	copy_of(p, &f, "out.complex", 1);
	finished(p, 0, NULL);
	ck_assert_uint_eq(p->total_bytes, 4 + 64);
	plan_free(p);

	/* an op that moves F4 as F4 (no whole bytes per element) is invalid */
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	t = plan_add_tensor(p, "out.packed", DTYPE_F4, 1, f4_shape, &e);
	ck_assert_int_eq(plan_add_piece(p, t, 0, 4, &op, 1, &e), 0);
	expect_finish_error(p, &(struct plan_options){0}, "plan_invalid", NULL);
	plan_free(p);

	/* an output tensor of F4 that is not whole bytes */
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	f4_shape[0] = 3;
	memset(&e, 0, sizeof(e));
	ck_assert_int_eq(plan_add_tensor(p, "odd", DTYPE_F4, 1, f4_shape, &e), -1);
	ck_assert_str_eq(err_name(e.code), "plan_invalid");
	plan_free(p);
}
END_TEST

START_TEST(test_validation_limits)
{
	struct fake_src f = {0};
	struct plan *p;
	struct plan_op op = {.src = 0, .src_dtype = DTYPE_U8, .dst_dtype = DTYPE_U8, .rows = 1};
	uint64_t shape[1] = {PLAN_PIECE_MAX + 1};
	struct err e = {0};
	long t;

	fake_add(&f, "huge", DTYPE_U8, 2 * PLAN_WINDOW_MAX);
	fake_add(&f, "ints", DTYPE_I32, 4);

	/* A piece over PLAN_PIECE_MAX. */
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	op.cols = PLAN_PIECE_MAX + 1;
	op.src_stride = op.dst_stride = op.cols;
	t = plan_add_tensor(p, "big_piece", DTYPE_U8, 1, shape, &e);
	ck_assert_int_eq(plan_add_piece(p, t, 0, PLAN_PIECE_MAX + 1, &op, 1, &e), 0);
	expect_finish_error(p, NULL, "plan_invalid", "big_piece");
	plan_free(p);

	/* A window over PLAN_WINDOW_MAX: two bytes a whole window apart. */
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	op.rows = 2;
	op.cols = 1;
	op.src_stride = PLAN_WINDOW_MAX;
	op.dst_stride = 1;
	shape[0] = 2;
	t = plan_add_tensor(p, "wide_window", DTYPE_U8, 1, shape, &e);
	ck_assert_int_eq(plan_add_piece(p, t, 0, 2, &op, 1, &e), 0);
	expect_finish_error(p, NULL, "plan_invalid", "wide_window");
	plan_free(p);

	/* A cast the kernels cannot do. */
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	shape[0] = 4;
	t = plan_add_tensor(p, "int_to_bf16", DTYPE_BF16, 1, shape, &e);
	ck_assert_int_eq(plan_add_contiguous(p, t, 1, 0, 0, 4, DTYPE_I32, DTYPE_BF16, &e), 0);
	expect_finish_error(p, NULL, "plan_invalid", "int_to_bf16");
	plan_free(p);
}
END_TEST

static char *printed(const struct plan *p, bool json)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	ck_assert_ptr_nonnull(out);
	plan_print(p, out, json);
	fclose(out);
	return text;
}

START_TEST(test_print)
{
	struct fake_src f = {0};
	struct plan *p = sharded_plan(&f, 1000);
	char *text = printed(p, false), *js = printed(p, true);
	json_t *root, *tensors, *op;
	json_error_t jerr;

	ck_assert_ptr_nonnull(strstr(text, "file model-00003-of-00004.safetensors"));
	ck_assert_ptr_nonnull(strstr(
		text,
		"tensor t.4 U8 [1500] 1500 model-00003-of-00004.safetensors: COPY from s1500"));
	root = json_loads(js, 0, &jerr);
	ck_assert_msg(root != NULL, "plan JSON does not parse: %s (line %d)", jerr.text, jerr.line);
	ck_assert_str_eq(json_string_value(json_object_get(root, "from")), "hf");
	ck_assert_uint_eq(json_array_size(json_object_get(root, "files")), 4);
	tensors = json_object_get(root, "tensors");
	ck_assert_uint_eq(json_array_size(tensors), 5);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(tensors, 3), "name")),
			 "t.4");
	op = json_array_get(
		json_object_get(
			json_array_get(json_object_get(json_array_get(tensors, 3), "pieces"), 0),
			"ops"),
		0);
	ck_assert_str_eq(json_string_value(json_object_get(op, "kind")), "copy");
	ck_assert_str_eq(json_string_value(json_object_get(op, "src")), "s1500");
	ck_assert_int_eq(json_integer_value(json_object_get(op, "cols")), 1500);
	json_decref(root);
	free(text);
	free(js);
	plan_free(p);
}
END_TEST

START_TEST(test_deterministic_digest)
{
	struct fake_src f1 = {0}, f2 = {0}, f3 = {0}, f4 = {0};
	struct plan *a = sharded_plan(&f1, 1000), *b = sharded_plan(&f2, 1000);
	struct plan *c = sharded_plan(&f3, 2000), *d;
	char da[65], db[65], dc[65], dd[65], *ta, *tb;
	size_t i;

	plan_digest(a, da);
	plan_digest(b, db);
	plan_digest(c, dc);
	ck_assert_uint_eq(strlen(da), 64);
	ck_assert_str_eq(da, db);
	ck_assert_str_ne(da, dc);
	ck_assert_uint_eq(a->nfiles, b->nfiles);
	for (i = 0; i < a->nfiles; i++) {
		ck_assert_uint_eq(a->files[i].header_len, b->files[i].header_len);
		ck_assert_int_eq(
			memcmp(a->files[i].header, b->files[i].header, a->files[i].header_len), 0);
	}
	ck_assert_str_eq(a->index_json, b->index_json);
	ta = printed(a, true);
	tb = printed(b, true);
	ck_assert_str_eq(ta, tb);
	free(ta);
	free(tb);

	/* Excluding a tensor changes the digest too. */
	d = plan_new(&f4.c, LAYOUT_HF, LAYOUT_NATIVE);
	fake_add(&f4, "s400", DTYPE_U8, 400);
	fake_add(&f4, "s1500", DTYPE_U8, 1500);
	fake_add(&f4, "s100", DTYPE_U8, 100);
	copy_of(d, &f4, "t.1", 0);
	copy_of(d, &f4, "t.2", 0);
	copy_of(d, &f4, "t.3", 0);
	copy_of(d, &f4, "t.4", 1);
	copy_of(d, &f4, "t.5", 2);
	finished(d, 1000, "^t\\.5$");
	plan_digest(d, dd);
	ck_assert_str_ne(da, dd);
	plan_free(a);
	plan_free(b);
	plan_free(c);
	plan_free(d);
}
END_TEST

START_TEST(test_empty_plan)
{
	struct fake_src f = {0};
	struct plan *p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);

	fake_add(&f, "w", DTYPE_BF16, 4);
	copy_of(p, &f, "only", 0);
	finished(p, 0, "only");
	ck_assert_uint_eq(p->ntensors, 0);
	ck_assert_uint_eq(p->nfiles, 1);
	ck_assert_str_eq(p->files[0].name, "model.safetensors");
	check_header(p, 0);
	plan_free(p);
}
END_TEST

static Suite *plan_suite(void)
{
	Suite *s = suite_create("plan");
	TCase *layout = tcase_create("layout");
	TCase *checks = tcase_create("checks");

	tcase_add_test(layout, test_natural_order);
	tcase_add_test(layout, test_single_file);
	tcase_add_test(layout, test_shards);
	tcase_add_test(layout, test_shard_exactly_full);
	tcase_add_test(layout, test_default_shard_size);
	tcase_add_test(layout, test_contiguous_pieces);
	tcase_add_test(layout, test_exclude);
	tcase_add_test(layout, test_empty_plan);
	tcase_add_test(checks, test_duplicate_output);
	tcase_add_test(checks, test_copy_only_dtypes);
	tcase_add_test(checks, test_tensors_only);
	tcase_add_test(checks, test_validation);
	tcase_add_test(checks, test_validation_limits);
	tcase_add_test(checks, test_print);
	tcase_add_test(checks, test_deterministic_digest);
	suite_add_tcase(s, layout);
	suite_add_tcase(s, checks);
	return s;
}

int main(void)
{
	return test_run_suite(plan_suite());
}
