/* SPDX-License-Identifier: MIT */
/*
 * check_api_query: the listings' query parameters: defaults, the ranges of
 * limit, cursor and offset, state names, label filters, repeated names
 * (the first counts) and names without a value.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/api_query.h"
#include "ckptconv/exec.h"
#include "ckptconv/job.h"
#include "testutil.h"

#define N(args) (sizeof(args) / sizeof(args[0]))

/* api_jobs_query_parse fails naming `field`. */
static void jobs_refused(const struct api_query_arg *args, size_t n, const char *field)
{
	struct job_error je = {0};
	struct api_jobs_query q;

	ck_assert_int_eq(api_jobs_query_parse(args, n, &q, &je), -1);
	ck_assert_str_eq(err_name(je.err.code), "invalid_field");
	ck_assert_str_eq(je.field, field);
	api_jobs_query_fini(&q);
}

static void tensors_refused(const struct api_query_arg *args, size_t n, const char *field)
{
	struct job_error je = {0};
	struct api_tensors_query q;

	ck_assert_int_eq(api_tensors_query_parse(args, n, &q, &je), -1);
	ck_assert_str_eq(err_name(je.err.code), "invalid_field");
	ck_assert_str_eq(je.field, field);
}

START_TEST(jobs_defaults)
{
	struct job_error je = {0};
	struct api_jobs_query q;

	ck_assert_int_eq(api_jobs_query_parse(NULL, 0, &q, &je), 0);
	ck_assert_int_eq(q.state, -1);
	ck_assert_uint_eq(q.limit, API_LIST_LIMIT_DEFAULT);
	ck_assert_uint_eq(q.cursor, 0);
	ck_assert_uint_eq(q.nlabels, 0);
	api_jobs_query_fini(&q);
}
END_TEST

START_TEST(jobs_all_parameters)
{
	const struct api_query_arg args[] = {
		{"state", "failed"},   {"limit", "1000"},    {"cursor", "18446744073709551615"},
		{"label", "team:nlp"}, {"label", "url:a:b"}, {"label", "empty:"},
		{"other", "ignored"},
	};
	struct job_error je = {0};
	struct api_jobs_query q;

	ck_assert_int_eq(api_jobs_query_parse(args, N(args), &q, &je), 0);
	ck_assert_int_eq(q.state, JOB_FAILED);
	ck_assert_uint_eq(q.limit, 1000);
	ck_assert_uint_eq(q.cursor, UINT64_MAX);
	ck_assert_uint_eq(q.nlabels, 3);
	ck_assert_str_eq(q.label_keys[0], "team");
	ck_assert_str_eq(q.label_values[0], "nlp");
	ck_assert_str_eq(q.label_keys[1], "url");
	ck_assert_str_eq(q.label_values[1], "a:b");
	ck_assert_str_eq(q.label_keys[2], "empty");
	ck_assert_str_eq(q.label_values[2], "");
	api_jobs_query_fini(&q);
}
END_TEST

START_TEST(jobs_first_name_counts)
{
	const struct api_query_arg args[] = {
		{"limit", "7"}, {"limit", "x"}, {"state", NULL}, {"state", "bogus"}};
	struct job_error je = {0};
	struct api_jobs_query q;

	/* The first state has no value: as if absent. */
	ck_assert_int_eq(api_jobs_query_parse(args, N(args), &q, &je), 0);
	ck_assert_uint_eq(q.limit, 7);
	ck_assert_int_eq(q.state, -1);
	api_jobs_query_fini(&q);
}
END_TEST

START_TEST(jobs_refused_values)
{
	static const char *const limits[] = {
		"0", "1001", "", "+5", " 5", "5 ", "0x10", "-1", "18446744073709551616"};
	static const char *const cursors[] = {"0", "-1", "1.5", "18446744073709551616"};
	static const char *const labels[] = {"nocolon", ":value"};
	struct api_query_arg arg;
	size_t i;

	for (i = 0; i < N(limits); i++) {
		arg = (struct api_query_arg){"limit", limits[i]};
		jobs_refused(&arg, 1, "limit");
	}
	for (i = 0; i < N(cursors); i++) {
		arg = (struct api_query_arg){"cursor", cursors[i]};
		jobs_refused(&arg, 1, "cursor");
	}
	for (i = 0; i < N(labels); i++) {
		arg = (struct api_query_arg){"label", labels[i]};
		jobs_refused(&arg, 1, "label");
	}
	arg = (struct api_query_arg){"label", NULL};
	jobs_refused(&arg, 1, "label");
	arg = (struct api_query_arg){"state", "done"};
	jobs_refused(&arg, 1, "state");
}
END_TEST

START_TEST(jobs_label_count)
{
	struct api_query_arg args[JOB_LABELS_MAX + 1];
	struct job_error je = {0};
	struct api_jobs_query q;
	size_t i;

	for (i = 0; i < N(args); i++)
		args[i] = (struct api_query_arg){"label", "k:v"};
	ck_assert_int_eq(api_jobs_query_parse(args, JOB_LABELS_MAX, &q, &je), 0);
	ck_assert_uint_eq(q.nlabels, JOB_LABELS_MAX);
	api_jobs_query_fini(&q);
	jobs_refused(args, N(args), "label");
}
END_TEST

START_TEST(tensors_parameters)
{
	const struct api_query_arg args[] = {
		{"state", "running"}, {"offset", "4294967295"}, {"limit", "10000"}};
	struct job_error je = {0};
	struct api_tensors_query q;

	ck_assert_int_eq(api_tensors_query_parse(NULL, 0, &q, &je), 0);
	ck_assert_int_eq(q.state, -1);
	ck_assert_uint_eq(q.offset, 0);
	ck_assert_uint_eq(q.limit, API_TENSORS_LIMIT_DEFAULT);
	ck_assert_int_eq(api_tensors_query_parse(args, N(args), &q, &je), 0);
	ck_assert_int_eq(q.state, TENSOR_RUNNING);
	ck_assert_uint_eq(q.offset, UINT32_MAX);
	ck_assert_uint_eq(q.limit, 10000);
}
END_TEST

START_TEST(tensors_refused_values)
{
	struct api_query_arg arg;

	arg = (struct api_query_arg){"offset", "4294967296"};
	tensors_refused(&arg, 1, "offset");
	arg = (struct api_query_arg){"offset", "-0"};
	tensors_refused(&arg, 1, "offset");
	arg = (struct api_query_arg){"limit", "10001"};
	tensors_refused(&arg, 1, "limit");
	arg = (struct api_query_arg){"limit", "0"};
	tensors_refused(&arg, 1, "limit");
	arg = (struct api_query_arg){"state", "queued"};
	tensors_refused(&arg, 1, "state");
}
END_TEST

static Suite *api_query_suite(void)
{
	Suite *s = suite_create("api_query");
	TCase *tc = tcase_create("query");

	tcase_add_test(tc, jobs_defaults);
	tcase_add_test(tc, jobs_all_parameters);
	tcase_add_test(tc, jobs_first_name_counts);
	tcase_add_test(tc, jobs_refused_values);
	tcase_add_test(tc, jobs_label_count);
	tcase_add_test(tc, tensors_parameters);
	tcase_add_test(tc, tensors_refused_values);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(api_query_suite());
}
