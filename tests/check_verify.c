/* SPDX-License-Identifier: MIT */
/*
 * check_verify: the tensor-by-tensor comparison.  Golden checkpoints that
 * must agree (hf and hf-from-native) and must not (native and an EP rank);
 * each kind of difference with its exact report line; a difference past the
 * first windows; the line limit; an unreadable side.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/verify.h"
#include "testutil.h"

static char *tmp;

static void setup(void)
{
	tmp = test_mkdtemp();
}

static void teardown(void)
{
	test_rmtree(tmp);
	free(tmp);
	tmp = NULL;
}

static char *golden(const char *name)
{
	char *sub, *path;

	if (asprintf(&sub, "tiny/%s", name) < 0)
		abort();
	path = test_path(test_golden_dir(), sub);
	free(sub);
	return path;
}

/* Runs verify, returning its printed lines in *text (caller frees). */
static int run_verify(const char *a, const char *b, size_t max_lines, struct verify_report *r,
		      struct err *e, char **text)
{
	size_t len;
	FILE *out = open_memstream(text, &len);
	int rc = verify_checkpoints(a, b, NULL, out, max_lines, r, e);

	fclose(out);
	return rc;
}

START_TEST(golden_round_trip_is_equal)
{
	char *a = golden("hf"), *b = golden("hf-from-native"), *text;
	struct verify_report r;
	struct err e = {0};

	ck_assert_int_eq(run_verify(a, b, 100, &r, &e, &text), 0);
	ck_assert_uint_eq(r.differences, 0);
	ck_assert_uint_eq(r.tensors_compared, 35);
	ck_assert(!r.layouts_differ);
	ck_assert_str_eq(text, "");
	free(text);
	free(a);
	free(b);
}
END_TEST

START_TEST(golden_ep_rank_differs_in_shape)
{
	char *a = golden("native"), *b = golden("native-ep2-rank0"), *text;
	struct verify_report r;
	struct err e = {0};

	ck_assert_int_eq(run_verify(a, b, 100, &r, &e, &text), 0);
	ck_assert_uint_eq(r.differences, 2);
	ck_assert_uint_eq(r.shape_mismatch, 2);
	ck_assert_uint_eq(r.tensors_compared, 29);
	ck_assert_str_eq(
		text,
		"shape differs: model.layers.1.mlp.experts.down_projs: [4, 32, 64] vs [2, 32, 64]\n"
		"shape differs: model.layers.1.mlp.experts.gate_and_up_projs: [4, 64, 64] vs [2, 64, 64]\n");
	free(text);
	free(a);
	free(b);
}
END_TEST

START_TEST(names_only_on_one_side)
{
	char *a = golden("hf"), *b = golden("native"), *text;
	struct verify_report r;
	struct err e = {0};

	ck_assert_int_eq(run_verify(a, b, 1000, &r, &e, &text), 0);
	/* hf has 22 names native lacks (qkv, renamed, 12 experts); native 16 */
	ck_assert_uint_eq(r.only_expected, 22);
	ck_assert_uint_eq(r.only_actual, 16);
	ck_assert_uint_eq(r.tensors_compared, 13);
	ck_assert_uint_eq(r.differences, 38);
	ck_assert(r.layouts_differ);
	ck_assert_ptr_nonnull(strstr(text, "only in expected: model.word_embeddings.weight\n"));
	ck_assert_ptr_nonnull(strstr(text, "only in actual: model.embed_tokens.weight\n"));
	free(text);
	/* at most max_lines lines, every difference still counted */
	ck_assert_int_eq(run_verify(a, b, 3, &r, &e, &text), 0);
	ck_assert_uint_eq(r.differences, 38);
	ck_assert_str_eq(text, "note: expected is in the hf layout and actual in the native one; "
			       "verify compares tensors by name: convert one side first\n"
			       "only in actual: model.embed_tokens.weight\n"
			       "only in expected: model.layers.0.attention.dense.weight\n"
			       "only in expected: model.layers.0.attention.key_layernorm.weight\n");
	free(text);
	free(a);
	free(b);
}
END_TEST

struct spec {
	const char *name;
	enum dtype dtype;
	int ndim;
	uint64_t shape[2];
};

/* A one-file checkpoint; tensor i's bytes are all `fill`, except byte
 * `flip_at` of tensor `flip` (-1: none), which is inverted. */
static char *write_ckpt(const char *name, const struct spec *specs, size_t n, unsigned char fill,
			long flip, uint64_t flip_at)
{
	struct st_tensor t[8];
	char *dir = test_path(tmp, name), *path, *header;
	unsigned char *chunk = malloc(1 << 20);
	size_t header_len, i;
	struct err e = {0};
	FILE *f;

	ck_assert_uint_le(n, 8);
	memset(t, 0, sizeof(t));
	for (i = 0; i < n; i++) {
		t[i].name = (char *)specs[i].name;
		t[i].dtype = specs[i].dtype;
		t[i].ndim = specs[i].ndim;
		memcpy(t[i].shape, specs[i].shape, sizeof(specs[i].shape));
	}
	ck_assert_int_eq(st_header_build(t, n, &header, &header_len, &e), 0);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	path = test_path(dir, "model.safetensors");
	f = fopen(path, "wb");
	ck_assert(f && fwrite(header, 1, header_len, f) == header_len);
	memset(chunk, fill, 1 << 20);
	for (i = 0; i < n; i++) {
		uint64_t left = dtype_size(t[i].dtype), done = 0, len;
		int d;

		for (d = 0; d < t[i].ndim; d++)
			left *= t[i].shape[d];
		for (; left > 0; left -= len, done += len) {
			len = left < (1 << 20) ? left : (1 << 20);
			if ((long)i == flip && flip_at >= done && flip_at < done + len)
				chunk[flip_at - done] ^= 0xff;
			ck_assert(fwrite(chunk, 1, len, f) == len);
			memset(chunk, fill, 1 << 20);
		}
	}
	ck_assert_int_eq(fclose(f), 0);
	free(header);
	free(path);
	free(chunk);
	return dir;
}

START_TEST(each_kind_of_difference)
{
	const struct spec x[] = {
		{"a.weight", DTYPE_F32, 1, {4, 0}},
		{"b.weight", DTYPE_BF16, 2, {4, 8}},
		{"c.weight", DTYPE_BF16, 2, {300, 9}},
		{"d.weight", DTYPE_BF16, 1, {5, 0}},
	};
	const struct spec y[] = {
		{"a.weight", DTYPE_I32, 1, {4, 0}},
		{"b.weight", DTYPE_BF16, 2, {8, 4}},
		{"c.weight", DTYPE_BF16, 2, {300, 9}},
		{"e.weight", DTYPE_BF16, 1, {5, 0}},
	};
	char *a = write_ckpt("x", x, 4, 0x3c, -1, 0), *b = write_ckpt("y", y, 4, 0x3c, 2, 1234);
	char *text;
	struct verify_report r;
	struct err e = {0};

	ck_assert_int_eq(run_verify(a, b, 100, &r, &e, &text), 0);
	ck_assert_str_eq(text, "dtype differs: a.weight: F32 vs I32\n"
			       "shape differs: b.weight: [4, 8] vs [8, 4]\n"
			       "bytes differ: c.weight (first difference at byte 1234)\n"
			       "only in expected: d.weight\n"
			       "only in actual: e.weight\n");
	ck_assert_uint_eq(r.differences, 5);
	ck_assert_uint_eq(r.dtype_mismatch, 1);
	ck_assert_uint_eq(r.shape_mismatch, 1);
	ck_assert_uint_eq(r.bytes_mismatch, 1);
	ck_assert_uint_eq(r.only_expected, 1);
	ck_assert_uint_eq(r.only_actual, 1);
	ck_assert_uint_eq(r.tensors_compared, 3);
	free(text);
	/* a checkpoint against itself */
	ck_assert_int_eq(run_verify(b, b, 100, &r, &e, &text), 0);
	ck_assert_uint_eq(r.differences, 0);
	ck_assert_uint_eq(r.tensors_compared, 4);
	free(text);
	free(a);
	free(b);
}
END_TEST

/* A tensor spanning several comparison windows, differing only past its
 * first 64 MiB. */
START_TEST(difference_past_first_window)
{
	const uint64_t at = (64ULL << 20) + 4242;
	const struct spec x[] = {{"big", DTYPE_U8, 1, {(64ULL << 20) + 100000, 0}}};
	char *a = write_ckpt("x", x, 1, 7, -1, 0), *b = write_ckpt("y", x, 1, 7, 0, at);
	char *c = write_ckpt("z", x, 1, 7, -1, 0), *text, want[128];
	struct verify_report r;
	struct err e = {0};

	ck_assert_int_eq(run_verify(a, b, 100, &r, &e, &text), 0);
	snprintf(want, sizeof(want), "bytes differ: big (first difference at byte %llu)\n",
		 (unsigned long long)at);
	ck_assert_str_eq(text, want);
	free(text);
	ck_assert_int_eq(run_verify(a, c, 100, &r, &e, &text), 0);
	ck_assert_uint_eq(r.differences, 0);
	free(text);
	free(a);
	free(b);
	free(c);
}
END_TEST

START_TEST(unreadable_side_is_an_error)
{
	char *a = golden("hf"), *missing = test_path(tmp, "nothing-here"), *text;
	struct verify_report r;
	struct err e = {0};

	ck_assert_int_eq(run_verify(a, missing, 100, &r, &e, &text), -1);
	ck_assert_int_ne(e.code, ERR_NONE);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	free(text);
	err_clear(&e);
	ck_assert_int_eq(run_verify(missing, a, 100, &r, &e, &text), -1);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	free(text);
	free(a);
	free(missing);
}
END_TEST

static Suite *verify_suite(void)
{
	Suite *s = suite_create("verify");
	TCase *tc = tcase_create("verify");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, golden_round_trip_is_equal);
	tcase_add_test(tc, golden_ep_rank_differs_in_shape);
	tcase_add_test(tc, names_only_on_one_side);
	tcase_add_test(tc, each_kind_of_difference);
	tcase_add_test(tc, difference_past_first_window);
	tcase_add_test(tc, unreadable_side_is_an_error);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(verify_suite());
}
