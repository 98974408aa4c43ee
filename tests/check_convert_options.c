/* SPDX-License-Identifier: MIT */
/*
 * check_convert_options: the options of a conversion.  The rules between
 * them (each named by its member, the same for every caller), the JSON form
 * written and read back, the older encodings still read (sizes as "5GB"
 * strings, a manifest's max_shard_size 0), and each member's refusals with
 * the field at fault.
 */
#include <check.h>
#include <jansson.h>
#include <string.h>

#include "ckptconv/convert_options.h"
#include "ckptconv/err.h"
#include "ckptconv/partition.h"
#include "testutil.h"

#define ALL (CONVERT_JSON_TO | CONVERT_JSON_PLAN | CONVERT_JSON_RUN)

static struct convert_options native(void)
{
	struct convert_options o;

	convert_options_init(&o);
	o.to = LAYOUT_NATIVE;
	return o;
}

static void expect_rule(const struct convert_options *o, const char *code, const char *field)
{
	const char *at = NULL;
	struct err e = {0};

	ck_assert_int_eq(convert_options_check(o, &at, &e), -1);
	ck_assert_str_eq(err_name(e.code), code);
	ck_assert_str_eq(at, field);
}

START_TEST(test_rules)
{
	struct convert_options o = native();
	struct err e = {0};

	ck_assert_int_eq(convert_options_check(&o, NULL, &e), 0);
	o.resume = true;
	ck_assert_int_eq(convert_options_check(&o, NULL, &e), 0);
	o.overwrite = true;
	expect_rule(&o, "invalid_option", "resume");
	o.resume = false;
	ck_assert_int_eq(convert_options_check(&o, NULL, &e), 0);
	o.overwrite = false;
	o.ep_size = 4;
	o.ep_rank = 3;
	o.dtype = DTYPE_CHOICE_BF16;
	o.partition_index = 1;
	o.partition_count = 2;
	ck_assert_int_eq(convert_options_check(&o, NULL, &e), 0);

	o = native();
	o.to = LAYOUT_UNKNOWN;
	expect_rule(&o, "invalid_option", "to");
	o = native();
	o.to = LAYOUT_HF;
	o.ep_size = 2;
	expect_rule(&o, "invalid_option", "expert_parallel");
	/* With to hf a dtype is for the source to take (a consolidation does,
	 * a model adapter refuses it: check_adapter's test_options_to_hf). */
	o = native();
	o.to = LAYOUT_HF;
	o.dtype = DTYPE_CHOICE_KEEP;
	ck_assert_int_eq(convert_options_check(&o, NULL, &e), 0);
	o = native();
	o.ep_rank = 1;
	expect_rule(&o, "invalid_option", "expert_parallel.size");
	o = native();
	o.ep_size = ADAPTER_EP_SIZE_MAX + 1;
	expect_rule(&o, "invalid_option", "expert_parallel.size");
	o = native();
	o.ep_size = 2;
	o.ep_rank = 2;
	expect_rule(&o, "invalid_option", "expert_parallel.rank");
	o = native();
	o.partition_index = 3;
	o.partition_count = 3;
	expect_rule(&o, "invalid_partition", "partition");
}
END_TEST

START_TEST(test_round_trip)
{
	struct convert_options o = native(), back;
	char field[CONVERT_FIELD_MAX];
	struct err e = {0};
	json_t *j;

	o.dtype = DTYPE_CHOICE_F16;
	o.ep_size = 8;
	o.ep_rank = 5;
	o.max_shard_size = 123456789;
	o.exclude = "^lm_head\\.";
	o.max_bytes_per_second = 1000;
	o.overwrite = true;
	o.allow_gaps = true;
	o.partition_index = 2;
	o.partition_count = 4;
	o.io = CONVERT_IO_MMAP;
	j = convert_options_to_json(&o, ALL);
	ck_assert_str_eq(json_string_value(json_object_get(j, "io")), "mmap");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "max_shard_size")), 123456789);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "max_bytes_per_second")), 1000);
	ck_assert_str_eq(json_string_value(json_object_get(j, "to")), "native");
	convert_options_init(&back);
	ck_assert_int_eq(convert_options_from_json(j, ALL, "", &back, field, &e), 0);
	ck_assert_int_eq(back.to, LAYOUT_NATIVE);
	ck_assert_int_eq(back.dtype, DTYPE_CHOICE_F16);
	ck_assert_uint_eq(back.ep_size, 8);
	ck_assert_uint_eq(back.ep_rank, 5);
	ck_assert_uint_eq(back.max_shard_size, 123456789);
	ck_assert_str_eq(back.exclude, "^lm_head\\.");
	ck_assert_uint_eq(back.max_bytes_per_second, 1000);
	ck_assert(back.overwrite);
	ck_assert(back.allow_gaps);
	ck_assert_uint_eq(back.partition_index, 2);
	ck_assert_uint_eq(back.partition_count, 4);
	ck_assert_int_eq(back.io, CONVERT_IO_MMAP);
	json_decref(j);

	o.io = CONVERT_IO_PREAD;
	j = convert_options_to_json(&o, CONVERT_JSON_RUN);
	ck_assert_str_eq(json_string_value(json_object_get(j, "io")), "pread");
	convert_options_init(&back);
	ck_assert_int_eq(convert_options_from_json(j, CONVERT_JSON_RUN, "", &back, field, &e), 0);
	ck_assert_int_eq(back.io, CONVERT_IO_PREAD);
	json_decref(j);

	/* Only the members asked for; the default shard size written out. */
	o = native();
	j = convert_options_to_json(&o, CONVERT_JSON_PLAN);
	ck_assert_ptr_null(json_object_get(j, "to"));
	ck_assert_ptr_null(json_object_get(j, "overwrite"));
	/* allow_gaps only when asked for: records without it stay as they were. */
	ck_assert_ptr_null(json_object_get(j, "allow_gaps"));
	ck_assert_int_eq(json_integer_value(json_object_get(j, "max_shard_size")),
			 (json_int_t)PLAN_MAX_SHARD_SIZE_DEFAULT);
	ck_assert(json_is_null(json_object_get(j, "expert_parallel")));
	ck_assert(json_is_null(json_object_get(j, "exclude")));
	json_decref(j);
	/* io likewise: auto is not written. */
	j = convert_options_to_json(&o, CONVERT_JSON_RUN);
	ck_assert_ptr_null(json_object_get(j, "io"));
	json_decref(j);
}
END_TEST

/* What earlier versions wrote: a job record's options with sizes spelled
 * as the client gave them, a manifest's integers with 0 for the default. */
START_TEST(test_older_encodings)
{
	struct convert_options o;
	char field[CONVERT_FIELD_MAX];
	struct err e = {0};
	json_t *record =
		json_loads("{\"dtype\": \"auto\", \"max_shard_size\": \"5GB\","
			   " \"exclude\": null, \"expert_parallel\": null,"
			   " \"max_bytes_per_second\": \"250MB\", \"overwrite\": false,"
			   " \"dry_run\": false, \"partition\": null, \"finalize\": false}",
			   0, NULL);
	json_t *manifest = json_loads("{\"to\": \"hf\", \"dtype\": \"auto\", \"expert_parallel\":"
				      " null, \"max_shard_size\": 0, \"exclude\": null}",
				      0, NULL);

	convert_options_init(&o);
	ck_assert_int_eq(convert_options_from_json(record, CONVERT_JSON_PLAN | CONVERT_JSON_RUN,
						   "options.", &o, field, &e),
			 0);
	ck_assert_uint_eq(o.max_shard_size, 5000000000ULL);
	ck_assert_uint_eq(o.max_bytes_per_second, 250000000ULL);
	convert_options_init(&o);
	ck_assert_int_eq(convert_options_from_json(manifest,
						   CONVERT_JSON_TO | CONVERT_JSON_PLAN |
							   CONVERT_JSON_STORED,
						   "options.", &o, field, &e),
			 0);
	ck_assert_int_eq(o.to, LAYOUT_HF);
	ck_assert_uint_eq(o.max_shard_size, 0);
	/* A request may not ask for a shard size of 0. */
	convert_options_init(&o);
	ck_assert_int_eq(convert_options_from_json(manifest, CONVERT_JSON_TO | CONVERT_JSON_PLAN,
						   "options.", &o, field, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "invalid_field");
	ck_assert_str_eq(field, "options.max_shard_size");
	json_decref(record);
	json_decref(manifest);
}
END_TEST

static void expect_refused(const char *text, const char *code, const char *field_at)
{
	struct convert_options o;
	char field[CONVERT_FIELD_MAX];
	struct err e = {0};
	json_t *j = json_loads(text, 0, NULL);

	ck_assert_msg(j != NULL, "%s", text);
	convert_options_init(&o);
	ck_assert_msg(convert_options_from_json(j, ALL, "options.", &o, field, &e) == -1, "%s",
		      text);
	ck_assert_msg(strcmp(err_name(e.code), code) == 0, "%s: %s", text, err_name(e.code));
	ck_assert_msg(strcmp(field, field_at) == 0, "%s: %s", text, field);
	json_decref(j);
}

START_TEST(test_member_refusals)
{
	expect_refused("{\"dtype\": \"auto\"}", "missing_field", "options.to");
	expect_refused("{\"to\": \"sideways\"}", "invalid_field", "options.to");
	expect_refused("{\"to\": \"native\", \"dtype\": \"fp8\"}", "invalid_field",
		       "options.dtype");
	expect_refused("{\"to\": \"native\", \"max_shard_size\": \"5XB\"}", "invalid_size",
		       "options.max_shard_size");
	expect_refused("{\"to\": \"native\", \"max_shard_size\": -1}", "invalid_field",
		       "options.max_shard_size");
	expect_refused("{\"to\": \"native\", \"max_bytes_per_second\": true}", "invalid_field",
		       "options.max_bytes_per_second");
	expect_refused("{\"to\": \"native\", \"exclude\": 7}", "invalid_field", "options.exclude");
	expect_refused("{\"to\": \"native\", \"exclude\": \"(a)\\\\1\"}", "invalid_exclude",
		       "options.exclude");
	expect_refused("{\"to\": \"native\", \"expert_parallel\": 2}", "invalid_field",
		       "options.expert_parallel");
	expect_refused("{\"to\": \"native\", \"expert_parallel\": {\"size\": 2, \"rank\": 0,"
		       " \"x\": 1}}",
		       "unknown_field", "options.expert_parallel.x");
	expect_refused("{\"to\": \"native\", \"expert_parallel\": {\"rank\": 0}}", "missing_field",
		       "options.expert_parallel.size");
	expect_refused("{\"to\": \"native\", \"expert_parallel\": {\"size\": 0, \"rank\": 0}}",
		       "invalid_field", "options.expert_parallel.size");
	expect_refused("{\"to\": \"native\", \"overwrite\": \"yes\"}", "invalid_field",
		       "options.overwrite");
	expect_refused("{\"to\": \"hf\", \"allow_gaps\": 1}", "invalid_field",
		       "options.allow_gaps");
	expect_refused("{\"to\": \"hf\", \"io\": \"direct\"}", "invalid_field", "options.io");
	expect_refused("{\"to\": \"hf\", \"io\": 1}", "invalid_field", "options.io");
	expect_refused("{\"to\": \"native\", \"partition\": {\"index\": 0, \"count\": 0}}",
		       "invalid_partition", "options.partition");
	expect_refused("{\"to\": \"native\", \"partition\": {\"index\": 0}}", "missing_field",
		       "options.partition.count");
}
END_TEST

static Suite *convert_options_suite(void)
{
	Suite *s = suite_create("convert_options");
	TCase *tc = tcase_create("options");

	tcase_add_test(tc, test_rules);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_older_encodings);
	tcase_add_test(tc, test_member_refusals);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(convert_options_suite());
}
