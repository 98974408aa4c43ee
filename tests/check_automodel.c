/* SPDX-License-Identifier: MIT */
/*
 * check_automodel: Python's JSON spelling (pyjson), the parsers of a NeMo
 * Automodel sharded checkpoint (a shard header with its
 * DCP_SHARDING_INFO, the .hf_metadata mappings), and opening a golden
 * sharded checkpoint: its full tensors and chunks.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/automodel.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/pyjson.h"
#include "testutil.h"

/* ---- pyjson ---- */

static char *real_text(double v)
{
	static char buf[64];
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	pyjson_real(f, v);
	fclose(f);
	snprintf(buf, sizeof(buf), "%s", text);
	free(text);
	return buf;
}

START_TEST(python_float_repr)
{
	ck_assert_str_eq(real_text(1e-06), "1e-06");
	ck_assert_str_eq(real_text(1e-05), "1e-05");
	ck_assert_str_eq(real_text(0.0001), "0.0001");
	ck_assert_str_eq(real_text(1e16), "1e+16");
	ck_assert_str_eq(real_text(1e15), "1000000000000000.0");
	ck_assert_str_eq(real_text(5e-324), "5e-324");
	ck_assert_str_eq(real_text(-0.0), "-0.0");
	ck_assert_str_eq(real_text(600000.0), "600000.0");
	ck_assert_str_eq(real_text(0.02), "0.02");
	ck_assert_str_eq(real_text(2.5), "2.5");
	ck_assert_str_eq(real_text(1.5e-07), "1.5e-07");
	ck_assert_str_eq(real_text(1e100), "1e+100");
	ck_assert_str_eq(real_text(0.1 + 0.2), "0.30000000000000004");
	ck_assert_str_eq(real_text(123456789.125), "123456789.125");
	ck_assert_str_eq(real_text(1.0 / 0.0), "Infinity");
	ck_assert_str_eq(real_text(-1.0 / 0.0), "-Infinity");
	ck_assert_str_eq(real_text(0.0 / 0.0), "NaN");
}
END_TEST

static char *dumped(const json_t *v, int indent)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	pyjson_dump(f, v, indent);
	fclose(f);
	return text;
}

START_TEST(python_strings_and_layout)
{
	json_t *v = json_pack("{s:s, s:[i, f, b, n], s:{}, s:[]}", "k\xc3\xbc\"\\\x7f\t",
			      "\xf0\x9d\x94\xb5/", "a", 1, 2.5, 1, "e", "f");
	char *one = dumped(v, -1), *two = dumped(v, 2);

	ck_assert_str_eq(one, "{\"k\\u00fc\\\"\\\\\\u007f\\t\": \"\\ud835\\udd35/\", "
			      "\"a\": [1, 2.5, true, null], \"e\": {}, \"f\": []}");
	ck_assert_str_eq(two, "{\n  \"k\\u00fc\\\"\\\\\\u007f\\t\": \"\\ud835\\udd35/\",\n"
			      "  \"a\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n"
			      "  \"e\": {},\n  \"f\": []\n}");
	free(one);
	free(two);
	json_decref(v);
}
END_TEST

/* ---- shard headers ---- */

/* Parses `json` as the header of a file with `data` bytes of data. */
static int parse_shard(const char *json, uint64_t data, struct automodel_shard *s, struct err *e)
{
	size_t len = strlen(json);

	return automodel_shard_parse("t/shard-00001-model-00001-of-00001.safetensors", json, len,
				     len, 8 + len + data, s, e);
}

#define TWO_CHUNKS                                                            \
	"{\"b\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]},"  \
	"\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]}," \
	"\"__metadata__\":{\"DCP_SHARDING_INFO\":\"%s\",\"DCP_VERSION\":\"1.0\",\"format\":\"pt\"}}"

static int parse_with_info(const char *info, struct automodel_shard *s, struct err *e)
{
	char json[1024];

	snprintf(json, sizeof(json), TWO_CHUNKS, info);
	return parse_shard(json, 12, s, e);
}

START_TEST(shard_header_order_and_offsets)
{
	struct automodel_shard s = {0};
	struct err e = {0};

	ck_assert_int_eq(parse_with_info("{\\\"b\\\": {\\\"saved_offsets\\\": [6, 0]}, "
					 "\\\"a\\\": {\\\"saved_offsets\\\": [2, 1]}}",
					 &s, &e),
			 0);
	ck_assert_uint_eq(s.nchunks, 2);
	ck_assert_str_eq(s.chunks[0].name, "b"); /* header order, not data order */
	ck_assert_uint_eq(s.chunks[0].offsets[0], 6);
	ck_assert_uint_eq(s.chunks[0].shape[0], 0);
	ck_assert_str_eq(s.chunks[1].name, "a");
	ck_assert_int_eq(s.chunks[1].dtype, DTYPE_BF16);
	ck_assert_uint_eq(s.chunks[1].offsets[0], 2);
	ck_assert_uint_eq(s.chunks[1].offsets[1], 1);
	ck_assert_uint_eq(s.chunks[1].end, 12);
	automodel_shard_fini(&s);
}
END_TEST

static void expect_shard_error(const char *info, const char *code, const char *tensor)
{
	struct automodel_shard s = {0};
	struct err e = {0};

	ck_assert_int_eq(parse_with_info(info, &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), code);
	ck_assert_str_eq(e.tensor, tensor);
	ck_assert_ptr_null(s.chunks);
}

START_TEST(shard_header_refusals)
{
	struct automodel_shard s = {0};
	struct err e = {0};

	expect_shard_error("{", "sharding_info_invalid", "");
	expect_shard_error("[1]", "sharding_info_invalid", "");
	expect_shard_error("{\\\"b\\\": {\\\"saved_offsets\\\": [6, 0]}}", "sharding_info_invalid",
			   "a");
	expect_shard_error("{\\\"b\\\": {\\\"saved_offsets\\\": [6, 0]}, "
			   "\\\"a\\\": {\\\"saved_offsets\\\": [2, 1]}, "
			   "\\\"c\\\": {\\\"saved_offsets\\\": [0]}}",
			   "sharding_info_invalid", "c");
	expect_shard_error("{\\\"b\\\": {\\\"saved_offsets\\\": [6]}, "
			   "\\\"a\\\": {\\\"saved_offsets\\\": [2, 1]}}",
			   "sharding_info_invalid", "b");
	expect_shard_error("{\\\"b\\\": {\\\"saved_offsets\\\": [6, -1]}, "
			   "\\\"a\\\": {\\\"saved_offsets\\\": [2, 1]}}",
			   "sharding_info_invalid", "b");
	/* an offset past what JSON integers hold: the document does not parse */
	expect_shard_error("{\\\"b\\\": {\\\"saved_offsets\\\": [6, 0]}, "
			   "\\\"a\\\": {\\\"saved_offsets\\\": [18446744073709551615, 1]}}",
			   "sharding_info_invalid", "");
	ck_assert_int_eq(parse_shard("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
				     "\"data_offsets\":[0,4]}}",
				     4, &s, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "sharding_info_missing");
	err_clear(&e);
	/* the safetensors rules come first */
	ck_assert_int_eq(parse_shard("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
				     "\"data_offsets\":[0,4]}}",
				     4, &s, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "offsets_mismatch");
}
END_TEST

/* ---- mappings ---- */

static void expect_mapping(const char *text, bool dtypes, const char *code)
{
	struct err e = {0};
	json_t *map = NULL;
	int rc = automodel_mapping_parse("m.json", text, strlen(text), dtypes, &map, &e);

	if (!code) {
		ck_assert_msg(rc == 0, "%s: %s", text, e.msg);
		ck_assert_ptr_nonnull(map);
		json_decref(map);
		return;
	}
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err_name(e.code), code);
	ck_assert_ptr_null(map);
}

START_TEST(mappings)
{
	struct err e = {0};
	json_t *map = NULL;
	const char *key;
	json_t *v;
	int i = 0;

	expect_mapping("{\"z\": 2, \"a\": 1}", false, NULL);
	expect_mapping("{}", false, NULL);
	expect_mapping("{\"a\": 0}", false, "mapping_invalid");
	expect_mapping("{\"a\": 100000}", false, "mapping_invalid");
	expect_mapping("{\"a\": \"1\"}", false, "mapping_invalid");
	expect_mapping("{\"a\": 1, \"a\": 2}", false, "mapping_invalid");
	expect_mapping("[1]", false, "mapping_invalid");
	expect_mapping("{\"a\": 1", false, "mapping_invalid");
	expect_mapping("{\"a\": \"BF16\", \"b\": \"F8_E4M3\"}", true, NULL);
	expect_mapping("{\"a\": \"bfloat16\"}", true, "mapping_invalid");
	expect_mapping("{\"a\": 1}", true, "mapping_invalid");
	/* the file's order is kept */
	ck_assert_int_eq(automodel_mapping_parse("m.json", "{\"z\": 2, \"a\": 1}",
						 strlen("{\"z\": 2, \"a\": 1}"), false, &map, &e),
			 0);
	json_object_foreach(map, key, v)
		ck_assert_str_eq(key, i++ ? "a" : "z");
	json_decref(map);
}
END_TEST

/* ---- a golden sharded checkpoint ---- */

START_TEST(open_golden)
{
	char *path = test_path(test_golden_dir(), "consolidate/inputs/tiny-r3/model");
	struct automodel *am = NULL;
	struct ckpt *c = NULL;
	struct err e = {0};
	json_t *d, *t, *gate = NULL;
	size_t i;

	ck_assert_msg(automodel_open(path, NULL, false, &c, &am, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(c->nfiles, 3);
	ck_assert_uint_eq(c->ntensors, 103);
	ck_assert_ptr_nonnull(c->config);
	d = automodel_describe(am, c);
	ck_assert_uint_eq(json_array_size(json_object_get(d, "ranks")), 3);
	ck_assert_uint_eq(json_array_size(json_object_get(d, "tensors")), 35);
	ck_assert_uint_eq(json_array_size(json_object_get(d, "output_files")), 5);
	json_array_foreach(json_object_get(d, "tensors"), i, t)
		if (strcmp(json_string_value(json_object_get(t, "name")),
			   "model.layers.1.mlp.gate.weight") == 0)
			gate = t;
	ck_assert_ptr_nonnull(gate);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(gate, "shape"), 0)), 4);
	ck_assert_uint_eq(json_array_size(json_object_get(gate, "chunks")), 3);
	json_decref(d);
	ckpt_free(c);
	automodel_free(am);
	/* an ordinary checkpoint is not one */
	free(path);
	path = test_path(test_golden_dir(), "tiny/hf");
	ck_assert_int_eq(automodel_open(path, NULL, false, &c, &am, &e), 1);
	ck_assert_ptr_null(c);
	ck_assert_ptr_null(am);
	free(path);
}
END_TEST

static Suite *automodel_suite(void)
{
	Suite *s = suite_create("automodel");
	TCase *json = tcase_create("pyjson"), *parse = tcase_create("parsers");
	TCase *open = tcase_create("open");

	tcase_add_test(json, python_float_repr);
	tcase_add_test(json, python_strings_and_layout);
	tcase_add_test(parse, shard_header_order_and_offsets);
	tcase_add_test(parse, shard_header_refusals);
	tcase_add_test(parse, mappings);
	tcase_add_test(open, open_golden);
	suite_add_tcase(s, json);
	suite_add_tcase(s, parse);
	suite_add_tcase(s, open);
	return s;
}

int main(void)
{
	return test_run_suite(automodel_suite());
}
