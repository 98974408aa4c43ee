/* SPDX-License-Identifier: MIT */
/*
 * check_job: job requests (validation with the field at fault, normalised
 * options), location policy, the per-tensor listing file, records
 * (round trip, atomic writes), durations, and the registry without runners:
 * FIFO queue, limits, idempotency keys, destination conflicts, listing with
 * filters and cursors, cancel and delete, and what a restart makes of the
 * records it finds.
 */
#include <check.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/api.h"
#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "ckptconv/job_record.h"
#include "ckptconv/job_tensors.h"
#include "ckptconv/log.h"
#include "ckptconv/registry.h"
#include "ckptconv/util.h"
#include "testutil.h"

static char *tmp;
static struct strvec roots;
static struct strvec s3_prefixes;
static struct job_policy policy;

static void setup(void)
{
	char *dir = test_mkdtemp();
	char buf[PATH_MAX];

	ck_assert_ptr_nonnull(realpath(dir, buf));
	free(dir);
	tmp = xstrdup(buf);
	memset(&roots, 0, sizeof(roots));
	memset(&s3_prefixes, 0, sizeof(s3_prefixes));
	strvec_push(&roots, tmp);
	ck_assert_ptr_nonnull(realpath(test_golden_dir(), buf));
	strvec_push(&roots, buf);
	strvec_push(&s3_prefixes, "s3://models/in");
	memset(&policy, 0, sizeof(policy));
	policy.allow_roots = &roots;
	policy.allow_s3 = &s3_prefixes;
}

static void teardown(void)
{
	test_rmtree(tmp);
	free(tmp);
	strvec_fini(&roots);
	strvec_fini(&s3_prefixes);
}

static json_t *parse(const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);

	ck_assert_msg(v != NULL, "bad test JSON: %s", jerr.text);
	return v;
}

/* Parses a request; returns the error code (NULL if valid), the field in
 * *field. */
static const char *spec_error(const char *text, char *field, size_t len)
{
	static struct job_error je;
	struct job_spec spec;
	json_t *body = parse(text);
	int rc;

	memset(&je, 0, sizeof(je));
	rc = job_spec_parse(body, &spec, &je);
	json_decref(body);
	if (rc == 0)
		job_spec_fini(&spec);
	snprintf(field, len, "%s", je.field);
	return rc == 0 ? NULL : err_name(je.err.code);
}

#define ASSERT_SPEC_ERROR(text, code, want_field)                  \
	do {                                                       \
		char f_[JOB_FIELD_MAX];                            \
		const char *c_ = spec_error(text, f_, sizeof(f_)); \
		ck_assert_ptr_nonnull(c_);                         \
		ck_assert_str_eq(c_, code);                        \
		ck_assert_str_eq(f_, want_field);                  \
	} while (0)

START_TEST(spec_valid_and_normalised)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_t *body = parse("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			     " \"options\": {\"dtype\": \"bf16\", \"max_shard_size\": \"1GB\","
			     " \"expert_parallel\": {\"size\": 4, \"rank\": 3},"
			     " \"max_bytes_per_second\": \"200MB\", \"exclude\": \"lm_head\"},"
			     " \"labels\": {\"team\": \"nlp\"}}");
	json_t *shown;

	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	ck_assert_int_eq(spec.to, LAYOUT_NATIVE);
	ck_assert_int_eq(spec.convert.dtype, DTYPE_CHOICE_BF16);
	ck_assert_uint_eq(spec.convert.max_shard_size, 1000000000ULL);
	ck_assert_uint_eq(spec.convert.ep_size, 4);
	ck_assert_uint_eq(spec.convert.ep_rank, 3);
	ck_assert_uint_eq(spec.convert.max_bytes_per_second, 200000000ULL);
	ck_assert_str_eq(spec.convert.exclude, "lm_head");
	ck_assert(!spec.convert.overwrite);
	ck_assert(!spec.dry_run);
	shown = job_spec_json(&spec, false);
	ck_assert_str_eq(
		json_string_value(json_object_get(json_object_get(shown, "options"), "dtype")),
		"bf16");
	ck_assert(json_is_false(json_object_get(json_object_get(shown, "options"), "overwrite")));
	ck_assert_str_eq(
		json_string_value(json_object_get(json_object_get(shown, "labels"), "team")),
		"nlp");
	json_decref(shown);
	job_spec_fini(&spec);
	json_decref(body);
}
END_TEST

START_TEST(spec_defaults)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_t *body = parse("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"hf\"}");
	json_t *opts;

	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	ck_assert_int_eq(spec.to, LAYOUT_HF);
	opts = spec.options;
	ck_assert_str_eq(json_string_value(json_object_get(opts, "dtype")), "auto");
	ck_assert_str_eq(json_string_value(json_object_get(opts, "max_shard_size")), "5GB");
	ck_assert(json_is_null(json_object_get(opts, "exclude")));
	ck_assert(json_is_null(json_object_get(opts, "expert_parallel")));
	ck_assert_ptr_null(spec.convert.exclude);
	ck_assert_uint_eq(spec.convert.ep_size, 0);
	ck_assert_uint_eq(json_object_size(spec.labels), 0);
	job_spec_fini(&spec);
	json_decref(body);
}
END_TEST

START_TEST(spec_errors_name_the_field)
{
	ASSERT_SPEC_ERROR("[1]", "invalid_json", "");
	ASSERT_SPEC_ERROR(
		"{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"hf\", \"colour\": 1}",
		"unknown_field", "colour");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"fast\": true}}",
			  "unknown_field", "options.fast");
	ASSERT_SPEC_ERROR(
		"{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
		" \"options\": {\"expert_parallel\": {\"size\": 2, \"rank\": 0, \"x\": 1}}}",
		"unknown_field", "options.expert_parallel.x");
	ASSERT_SPEC_ERROR("{\"destination\": \"/b\", \"to\": \"hf\"}", "missing_field", "source");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"to\": \"hf\"}", "missing_field", "destination");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\"}", "missing_field", "to");
	ASSERT_SPEC_ERROR("{\"source\": 5, \"destination\": \"/b\", \"to\": \"hf\"}",
			  "invalid_field", "source");
	ASSERT_SPEC_ERROR("{\"source\": \"\", \"destination\": \"/b\", \"to\": \"hf\"}",
			  "invalid_field", "source");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"gguf\"}",
			  "invalid_field", "to");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"dtype\": \"fp8\"}}",
			  "invalid_field", "options.dtype");
	{
		/* A dtype with "to": "hf" is for a consolidation, which only
		 * the source tells: conversion_prepare refuses it elsewhere. */
		char f_[JOB_FIELD_MAX];

		ck_assert_ptr_null(spec_error("{\"source\": \"/a\", \"destination\": \"/b\","
					      " \"to\": \"hf\", \"options\": {\"dtype\": \"bf16\"}}",
					      f_, sizeof(f_)));
	}
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"hf\","
			  " \"options\": {\"expert_parallel\": {\"size\": 2, \"rank\": 0}}}",
			  "invalid_field", "options.expert_parallel");
	/* resume keeps an interrupted run's files, overwrite removes them. */
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"hf\","
			  " \"options\": {\"resume\": true, \"overwrite\": true}}",
			  "invalid_field", "options.resume");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"expert_parallel\": {\"size\": 2, \"rank\": 2}}}",
			  "invalid_field", "options.expert_parallel.rank");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"expert_parallel\": {\"rank\": 0}}}",
			  "missing_field", "options.expert_parallel.size");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"max_shard_size\": \"5 parsecs\"}}",
			  "invalid_size", "options.max_shard_size");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"max_shard_size\": 0}}",
			  "invalid_field", "options.max_shard_size");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"overwrite\": \"yes\"}}",
			  "invalid_field", "options.overwrite");
	/* The exclude pattern's bounds are checked while parsing, before any
	 * thread compiles it. */
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"exclude\": \"((a{1,100}){1,100}){1,100}\"}}",
			  "invalid_exclude", "options.exclude");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"exclude\": \"(a)\\\\1\"}}",
			  "invalid_exclude", "options.exclude");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"options\": {\"exclude\": 7}}",
			  "invalid_field", "options.exclude");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"labels\": {\"bad key\": \"v\"}}",
			  "invalid_field", "labels.bad key");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
			  " \"labels\": {\"team\": 3}}",
			  "invalid_field", "labels.team");
	ASSERT_SPEC_ERROR("{\"source\": \"/a\\u0000b\", \"destination\": \"/b\", \"to\": \"hf\"}",
			  "invalid_field", "source");
}
END_TEST

/* job_spec_check of a request naming src and dst. */
static const char *location_error(const char *src, const char *dst, char *field, size_t len)
{
	static struct job_error je;
	struct job_spec spec;
	json_t *body =
		json_pack("{s:s, s:s, s:s}", "source", src, "destination", dst, "to", "native");
	char *rs = NULL, *rd = NULL;
	int rc;

	memset(&je, 0, sizeof(je));
	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	rc = job_spec_check(&spec, &policy, &rs, &rd, &je);
	job_spec_fini(&spec);
	json_decref(body);
	free(rs);
	free(rd);
	snprintf(field, len, "%s", je.field);
	return rc == 0 ? NULL : err_name(je.err.code);
}

START_TEST(locations_checked)
{
	char field[JOB_FIELD_MAX];
	char *in = test_path(tmp, "in"), *out = test_path(tmp, "out/x");
	char *escape = test_path(tmp, "../elsewhere");
	char *inner = test_path(tmp, "in/inner");

	ck_assert_ptr_null(location_error(in, out, field, sizeof(field)));
	ck_assert_str_eq(location_error("/etc", out, field, sizeof(field)), "forbidden_path");
	ck_assert_str_eq(field, "source");
	ck_assert_str_eq(location_error(in, escape, field, sizeof(field)), "forbidden_path");
	ck_assert_str_eq(field, "destination");
	ck_assert_str_eq(location_error(in, "relative", field, sizeof(field)), "invalid_field");
	ck_assert_str_eq(location_error(in, inner, field, sizeof(field)), "invalid_field");
	ck_assert_str_eq(field, "destination");
	ck_assert_str_eq(location_error("s3://models/other/x", out, field, sizeof(field)),
			 "forbidden_s3_location");
	ck_assert_str_eq(field, "source");
	ck_assert_str_eq(location_error("s3://models/input", out, field, sizeof(field)),
			 "forbidden_s3_location");
	ck_assert_ptr_null(location_error("s3://models/in/ling", out, field, sizeof(field)));
	ck_assert_str_eq(location_error("s3://models/in/../x", out, field, sizeof(field)),
			 "invalid_location");
	policy.state_dir = tmp;
	ck_assert_str_eq(location_error(in, out, field, sizeof(field)), "forbidden_path");
	policy.state_dir = NULL;
	free(in);
	free(out);
	free(escape);
	free(inner);
}
END_TEST

START_TEST(s3_options_need_the_hook)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_t *body =
		parse("{\"source\": \"s3://models/in/a\", \"destination\": \"s3://models/in/b\","
		      " \"to\": \"native\", \"options\": {\"s3\": {\"region\": \"eu-west-1\"}}}");
	char *rs = NULL, *rd = NULL;
	json_t *shown;

	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	shown = job_spec_json(&spec, false);
	ck_assert_ptr_null(json_object_get(json_object_get(shown, "options"), "s3"));
	json_decref(shown);
	shown = job_spec_json(&spec, true);
	ck_assert_ptr_nonnull(json_object_get(json_object_get(shown, "options"), "s3"));
	json_decref(shown);
	ck_assert_int_eq(job_spec_check(&spec, &policy, &rs, &rd, &je), -1);
	ck_assert_str_eq(err_name(je.err.code), "forbidden_s3_endpoint");
	ck_assert_str_eq(je.field, "options.s3");
	job_spec_fini(&spec);
	json_decref(body);
}
END_TEST

START_TEST(durations)
{
	struct err e = {0};
	int64_t ms;

	ck_assert_int_eq(job_parse_duration("7d", &ms, &e), 0);
	ck_assert_int_eq(ms, 7LL * 86400 * 1000);
	ck_assert_int_eq(job_parse_duration("90", &ms, &e), 0);
	ck_assert_int_eq(ms, 90000);
	ck_assert_int_eq(job_parse_duration("30m", &ms, &e), 0);
	ck_assert_int_eq(ms, 1800000);
	ck_assert_int_eq(job_parse_duration("2w", &ms, &e), 0);
	ck_assert_int_eq(ms, 14LL * 86400 * 1000);
	ck_assert_int_eq(job_parse_duration("0", &ms, &e), 0);
	ck_assert_int_eq(ms, 0);
	ck_assert_int_eq(job_parse_duration("5y", &ms, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_option");
	err_clear(&e);
	ck_assert_int_eq(job_parse_duration("-1h", &ms, &e), -1);
	err_clear(&e);
	ck_assert_int_eq(job_parse_duration("99999999999999999999d", &ms, &e), -1);
}
END_TEST

START_TEST(json_strings_escaped)
{
	struct buf b = {0};
	json_t *v;

	buf_json_string(&b, "a\"b\\c\nd\x01");
	v = json_loads(b.data, JSON_DECODE_ANY, NULL);
	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(json_string_value(v), "a\"b\\c\nd\x01");
	json_decref(v);
	buf_fini(&b);
}
END_TEST

START_TEST(times_are_rfc3339)
{
	char buf[40];

	job_format_time(1700000000123LL, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2023-11-14T22:13:20.123Z");
}
END_TEST

START_TEST(token_compare)
{
	ck_assert(api_token_matches("Bearer s3cret", "s3cret"));
	ck_assert(api_token_matches("bearer s3cret", "s3cret"));
	ck_assert(!api_token_matches("Bearer s3cre", "s3cret"));
	ck_assert(!api_token_matches("Bearer s3cretX", "s3cret"));
	ck_assert(!api_token_matches("Basic s3cret", "s3cret"));
	ck_assert(!api_token_matches(NULL, "s3cret"));
}
END_TEST

/* ---- tensor listings and records ---------------------------------------- */

static char *golden_hf(void)
{
	return test_path(test_golden_dir(), "tiny/hf");
}

START_TEST(tensor_listing_round_trip)
{
	struct convert_options o;
	struct conversion *conv = NULL;
	struct job_tensors *t = NULL;
	struct err e = {0};
	char *src = golden_hf(), *dst = test_path(tmp, "out");
	char *path = test_path(tmp, "listing");
	const struct plan *plan;
	size_t i;

	convert_options_init(&o);
	o.to = LAYOUT_NATIVE;
	ck_assert_msg(conversion_prepare(src, dst, &o, &conv, &e) == 0, "%s", e.msg);
	plan = conversion_plan(conv);
	ck_assert_int_eq(job_tensors_write(plan, path, false, &e), 0);
	ck_assert_int_eq(job_tensors_open(path, &t, &e), 0);
	ck_assert_uint_eq(job_tensors_count(t), plan->ntensors);
	for (i = 0; i < plan->ntensors; i++) {
		const char *frag;
		size_t len;
		char *text;
		json_t *v;

		job_tensors_fragment(t, i, &frag, &len);
		ck_assert_int_ne(asprintf(&text, "%.*sdone\"}", (int)len, frag), -1);
		v = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
		ck_assert_msg(v != NULL, "fragment %zu is not JSON: %s", i, text);
		ck_assert_str_eq(json_string_value(json_object_get(v, "name")),
				 plan->tensors[i].name);
		ck_assert_str_eq(json_string_value(json_object_get(v, "file")),
				 plan->files[plan->tensors[i].file].name);
		ck_assert_int_eq(json_integer_value(json_object_get(v, "bytes")),
				 (json_int_t)plan->tensors[i].nbytes);
		ck_assert_uint_eq(json_array_size(json_object_get(v, "sources")),
				  plan->tensors[i].nsources);
		ck_assert_uint_eq(json_array_size(json_object_get(v, "shape")),
				  (size_t)plan->tensors[i].ndim);
		json_decref(v);
		free(text);
	}
	job_tensors_unref(t);
	conversion_free(conv);
	free(src);
	free(dst);
	free(path);
}
END_TEST

START_TEST(tensor_listing_rejects_garbage)
{
	struct job_tensors *t = NULL;
	struct err e = {0};
	char *path = test_path(tmp, "garbage");

	test_write_file(path, "CKTLIST1\xff\xff\xff\xff\xff\xff\xff\x7f", 16);
	ck_assert_int_eq(job_tensors_open(path, &t, &e), -1);
	ck_assert_str_eq(err_name(e.code), "io_error");
	ck_assert_ptr_null(t);
	free(path);
}
END_TEST

START_TEST(record_round_trip)
{
	struct job_error je = {0};
	struct job_spec spec;
	struct job *j, *back = NULL;
	struct err e = {0};
	json_t *body =
		parse("{\"source\": \"/a\", \"destination\": \"/b\", \"to\": \"native\","
		      " \"labels\": {\"team\": \"nlp\"}, \"options\": {\"overwrite\": true}}");
	json_t *rec, *api1, *api2;

	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	j = job_new(&spec, 42);
	j->state = JOB_FAILED;
	j->started_ms = 1700000000000LL;
	j->finished_ms = 1700000005000LL;
	j->claimed = true;
	j->restarts = 2;
	j->resolved_source = xstrdup("/a");
	j->resolved_destination = xstrdup("/b");
	j->progress.tensors_total = 10;
	j->progress.tensors_done = 4;
	err_set(&j->error, ERR_SOURCE_TRUNCATED, "model.safetensors shrank");
	err_set_tensor(&j->error, "model.norm.weight");
	rec = job_record_json(j);
	ck_assert_int_eq(job_from_record(rec, &back, &e), 0);
	ck_assert_str_eq(back->id, j->id);
	ck_assert_uint_eq(back->seq, 42);
	ck_assert_int_eq(back->state, JOB_FAILED);
	ck_assert(back->claimed);
	ck_assert_uint_eq(back->restarts, 2);
	ck_assert_str_eq(err_name(back->error.code), "source_truncated");
	ck_assert_str_eq(back->error.tensor, "model.norm.weight");
	ck_assert(back->spec.convert.overwrite);
	api1 = job_to_json(j);
	api2 = job_to_json(back);
	ck_assert(json_equal(api1, api2));
	json_decref(api1);
	json_decref(api2);
	json_object_set_new(rec, "state", json_string("exploded"));
	job_unref(back);
	back = NULL;
	err_clear(&e);
	ck_assert_int_eq(job_from_record(rec, &back, &e), -1);
	ck_assert_ptr_null(back);
	json_decref(rec);
	json_decref(body);
	job_unref(j);
}
END_TEST

START_TEST(atomic_write_replaces)
{
	struct err e = {0};
	char *path = test_path(tmp, "rec.json"), *tmpname = test_path(tmp, ".rec.json.tmp");
	char buf[16] = {0};
	FILE *f;

	ck_assert_int_eq(job_write_atomic(tmp, "rec.json", "first", 5, true, &e), 0);
	ck_assert_int_eq(job_write_atomic(tmp, "rec.json", "second", 6, true, &e), 0);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(buf, 1, sizeof(buf) - 1, f), 6);
	fclose(f);
	ck_assert_str_eq(buf, "second");
	ck_assert_int_ne(access(tmpname, F_OK), 0);
	free(path);
	free(tmpname);
}
END_TEST

/* ---- registry without runners ---------------------------------------------- */

static struct registry *open_registry_keeping(unsigned max_queued, size_t max_finished)
{
	struct registry_config c = {0};
	struct registry *r = NULL;
	struct err e = {0};
	char *state = test_path(tmp, "state");

	policy.state_dir = NULL;
	c.state_dir = state;
	c.max_running = 1;
	c.max_queued = max_queued;
	c.retain_ms = 0;
	c.max_finished = max_finished;
	c.policy = &policy;
	ck_assert_msg(registry_open(&c, &r, &e) == 0, "%s", e.msg);
	free(state);
	return r;
}

static struct registry *open_registry(unsigned max_queued)
{
	return open_registry_keeping(max_queued, 0);
}

/* Parses, checks and submits a request body (taken); returns the error
 * code or NULL. */
static const char *submit_request(struct registry *r, json_t *body, const char *key,
				  const char *sha, struct job **out, bool *existing)
{
	static struct job_error je;
	struct job_spec spec;
	char *rs = NULL, *rd = NULL;
	bool ex = false;
	int rc;

	memset(&je, 0, sizeof(je));
	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	ck_assert_int_eq(job_spec_check(&spec, &policy, &rs, &rd, &je), 0);
	rc = registry_submit(r, &spec, rs, rd, key, sha ? sha : "0", out, existing ? existing : &ex,
			     &je);
	job_spec_fini(&spec);
	json_decref(body);
	free(rs);
	free(rd);
	return rc == 0 ? NULL : err_name(je.err.code);
}

/* Submits golden tiny -> tmp/<dst>; returns the error code or NULL. */
static const char *submit(struct registry *r, const char *dst, const char *key, const char *sha,
			  const char *label, struct job **out, bool *existing)
{
	char *src = golden_hf(), *d = test_path(tmp, dst);
	json_t *body = json_pack("{s:s, s:s, s:s, s:{s:s}}", "source", src, "destination", d, "to",
				 "native", "labels", "team", label);

	free(src);
	free(d);
	return submit_request(r, body, key, sha, out, existing);
}

static void submit_ok(struct registry *r, const char *dst, const char *label, struct job **out)
{
	struct job *j = NULL;
	const char *code = submit(r, dst, NULL, NULL, label, &j, NULL);

	ck_assert_msg(code == NULL, "submit %s: %s", dst, code);
	if (out)
		*out = j;
	else
		job_unref(j);
}

START_TEST(registry_queue_limits_and_conflicts)
{
	struct registry *r = open_registry(2);
	struct job *a = NULL, *b = NULL, *c = NULL;
	json_t *doc;

	submit_ok(r, "out-a", "nlp", &a);
	ck_assert_int_eq(registry_job_state(r, a), JOB_QUEUED);
	ck_assert_str_eq(submit(r, "out-a", NULL, NULL, "nlp", &c, NULL), "destination_in_use");
	ck_assert_str_eq(submit(r, "out-a/inner", NULL, NULL, "nlp", &c, NULL),
			 "destination_in_use");
	submit_ok(r, "out-b", "vision", &b);
	ck_assert_str_eq(submit(r, "out-c", NULL, NULL, "nlp", &c, NULL), "queue_full");
	doc = registry_job_json(r, a);
	ck_assert_uint_eq(json_integer_value(json_object_get(json_object_get(doc, "progress"),
							     "tensors_total")) > 0,
			  1);
	ck_assert(json_is_null(json_object_get(doc, "started_at")));
	json_decref(doc);
	job_unref(a);
	job_unref(b);
	registry_free(r);
}
END_TEST

/* A dry run of golden tiny into tmp/<dst>; returns the error code or NULL. */
static const char *submit_dry(struct registry *r, const char *dst, struct job **out)
{
	char *src = golden_hf(), *d = test_path(tmp, dst);
	json_t *body = json_pack("{s:s, s:s, s:s, s:{s:b}}", "source", src, "destination", d, "to",
				 "native", "options", "dry_run", 1);

	free(src);
	free(d);
	return submit_request(r, body, NULL, NULL, out, NULL);
}

static bool record_exists(const char *id)
{
	char name[64], *path;
	bool exists;

	snprintf(name, sizeof(name), "state/jobs/%s.json", id);
	path = test_path(tmp, name);
	exists = access(path, F_OK) == 0;
	free(path);
	return exists;
}

/* Dry runs take a place in the queue like any job; finished records
 * beyond max_finished go, oldest first, from memory and the state dir. */
START_TEST(registry_dry_runs_counted_and_pruned)
{
	struct registry *r = open_registry_keeping(2, 3);
	struct job *a = NULL, *b = NULL, *d[4] = {NULL};
	enum registry_delete_outcome outcome;
	struct job_error je = {0};
	char ida[JOB_ID_LEN + 1], idd0[JOB_ID_LEN + 1];
	struct job *gone;
	int i;

	submit_ok(r, "out-a", "nlp", &a);
	submit_ok(r, "out-b", "nlp", &b);
	ck_assert_str_eq(submit_dry(r, "dry-0", &d[0]), "queue_full");
	/* a, cancelled, is the oldest finished record. */
	snprintf(ida, sizeof(ida), "%s", a->id);
	ck_assert_int_eq(registry_delete(r, ida, &outcome, NULL, &je), 0);
	ck_assert_int_eq(outcome, REGISTRY_CANCELLED);
	for (i = 0; i < 4; i++) {
		char dst[16];

		snprintf(dst, sizeof(dst), "dry-%d", i);
		ck_assert_ptr_null(submit_dry(r, dst, &d[i]));
		ck_assert_int_eq(registry_job_state(r, d[i]), JOB_SUCCEEDED);
	}
	snprintf(idd0, sizeof(idd0), "%s", d[0]->id);
	/* Five finished (a and four dry runs), three kept: a and d0 went. */
	gone = registry_get(r, ida);
	ck_assert_ptr_null(gone);
	gone = registry_get(r, idd0);
	ck_assert_ptr_null(gone);
	ck_assert(!record_exists(ida) && !record_exists(idd0));
	for (i = 1; i < 4; i++) {
		struct job *kept = registry_get(r, d[i]->id);

		ck_assert_ptr_nonnull(kept);
		ck_assert(record_exists(d[i]->id));
		job_unref(kept);
	}
	/* The queued job is never pruned. */
	ck_assert_int_eq(registry_job_state(r, b), JOB_QUEUED);
	ck_assert(record_exists(b->id));
	for (i = 0; i < 4; i++)
		job_unref(d[i]);
	job_unref(a);
	job_unref(b);
	registry_free(r);
}
END_TEST

START_TEST(registry_bad_source_is_422)
{
	struct registry *r = open_registry(10);
	struct job_error je = {0};
	struct job_spec spec;
	struct job *j = NULL;
	char *src = test_path(tmp, "missing"), *dst = test_path(tmp, "out");
	json_t *body =
		json_pack("{s:s, s:s, s:s}", "source", src, "destination", dst, "to", "native");
	bool existing;

	ck_assert_int_eq(job_spec_parse(body, &spec, &je), 0);
	ck_assert_int_eq(registry_submit(r, &spec, src, dst, NULL, "x", &j, &existing, &je), -1);
	ck_assert_int_eq(err_http_status(je.err.code), 422);
	ck_assert_str_eq(je.field, "source");
	job_spec_fini(&spec);
	json_decref(body);
	free(src);
	free(dst);
	registry_free(r);
}
END_TEST

START_TEST(registry_idempotency)
{
	struct registry *r = open_registry(10);
	struct job *a = NULL, *again = NULL;
	bool existing = true;

	ck_assert_ptr_null(submit(r, "out-a", "key-1", "aaaa", "nlp", &a, &existing));
	ck_assert(!existing);
	ck_assert_ptr_null(submit(r, "out-a", "key-1", "aaaa", "nlp", &again, &existing));
	ck_assert(existing);
	ck_assert_ptr_eq(a, again);
	job_unref(again);
	ck_assert_str_eq(submit(r, "out-b", "key-1", "bbbb", "nlp", &again, &existing),
			 "idempotency_conflict");
	ck_assert_ptr_null(again);
	job_unref(a);
	registry_free(r);
}
END_TEST

START_TEST(registry_listing_filters_and_cursor)
{
	struct registry *r = open_registry(10);
	struct registry_filter f = {.state = -1, .limit = 2};
	const char *keys[] = {"team"}, *values[] = {"nlp"};
	json_t *page;
	const char *cursor;
	char *cursor_copy;
	int i;

	for (i = 0; i < 5; i++) {
		char dst[16];

		snprintf(dst, sizeof(dst), "out-%d", i);
		submit_ok(r, dst, i % 2 ? "vision" : "nlp", NULL);
	}
	page = registry_list(r, &f);
	ck_assert_uint_eq(json_array_size(json_object_get(page, "jobs")), 2);
	ck_assert(strstr(json_string_value(json_object_get(
				 json_array_get(json_object_get(page, "jobs"), 0), "destination")),
			 "out-4"));
	cursor = json_string_value(json_object_get(page, "next_cursor"));
	ck_assert_ptr_nonnull(cursor);
	cursor_copy = xstrdup(cursor);
	json_decref(page);
	f.before_seq = strtoull(cursor_copy, NULL, 10);
	free(cursor_copy);
	f.limit = 10;
	page = registry_list(r, &f);
	ck_assert_uint_eq(json_array_size(json_object_get(page, "jobs")), 3);
	ck_assert(json_is_null(json_object_get(page, "next_cursor")));
	json_decref(page);

	memset(&f, 0, sizeof(f));
	f.state = -1;
	f.limit = 10;
	f.label_keys = keys;
	f.label_values = values;
	f.nlabels = 1;
	page = registry_list(r, &f);
	ck_assert_uint_eq(json_array_size(json_object_get(page, "jobs")), 3);
	json_decref(page);
	f.nlabels = 0;
	f.state = JOB_RUNNING;
	page = registry_list(r, &f);
	ck_assert_uint_eq(json_array_size(json_object_get(page, "jobs")), 0);
	json_decref(page);
	registry_free(r);
}
END_TEST

START_TEST(registry_cancel_then_delete)
{
	struct registry *r = open_registry(10);
	struct job_error je = {0};
	enum registry_delete_outcome outcome;
	struct job *a = NULL;
	struct buf buf = {0};
	char id[JOB_ID_LEN + 1];
	json_t *doc = NULL, *listing;

	submit_ok(r, "out-a", "nlp", &a);
	memcpy(id, a->id, sizeof(id));
	ck_assert_int_eq(registry_delete(r, id, &outcome, &doc, &je), 0);
	ck_assert_int_eq(outcome, REGISTRY_CANCELLED);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "state")), "cancelled");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "error"), "code")),
			 "cancelled");
	json_decref(doc);
	/* Its destination is free again. */
	submit_ok(r, "out-a", "nlp", NULL);
	registry_tensors(r, a, -1, 0, 1000, &buf);
	listing = json_loads(buf.data, 0, NULL);
	ck_assert_ptr_nonnull(listing);
	ck_assert_int_gt(json_integer_value(json_object_get(listing, "total")), 0);
	ck_assert_str_eq(json_string_value(json_object_get(
				 json_array_get(json_object_get(listing, "tensors"), 0), "state")),
			 "pending");
	json_decref(listing);
	buf_fini(&buf);
	ck_assert_int_eq(registry_delete(r, id, &outcome, NULL, &je), 0);
	ck_assert_int_eq(outcome, REGISTRY_DELETED);
	ck_assert_int_eq(registry_delete(r, id, &outcome, NULL, &je), -1);
	ck_assert_str_eq(err_name(je.err.code), "job_not_found");
	ck_assert_ptr_null(registry_get(r, id));
	job_unref(a);
	registry_free(r);
}
END_TEST

/* Rewrites a job's record to say it was running (as after a crash). */
static void mark_running(const char *id)
{
	char *path, *text;
	json_t *rec;

	ck_assert_int_ne(asprintf(&path, "%s/state/jobs/%s.json", tmp, id), -1);
	rec = json_load_file(path, 0, NULL);
	ck_assert_ptr_nonnull(rec);
	json_object_set_new(rec, "state", json_string("running"));
	json_object_set_new(rec, "claimed", json_true());
	text = json_dumps(rec, JSON_COMPACT);
	test_write_file(path, text, strlen(text));
	free(text);
	json_decref(rec);
	free(path);
}

START_TEST(registry_restart_recovers_records)
{
	struct registry *r = open_registry(10);
	struct job *a = NULL, *b = NULL, *c = NULL;
	char ida[JOB_ID_LEN + 1], idb[JOB_ID_LEN + 1], idc[JOB_ID_LEN + 1];
	enum registry_delete_outcome outcome;
	struct job_error je = {0};
	struct registry_filter f = {.state = -1, .limit = 10};
	char *corrupt;
	json_t *page;

	submit_ok(r, "out-a", "nlp", &a);
	submit_ok(r, "out-b", "nlp", &b);
	submit_ok(r, "out-c", "nlp", &c);
	memcpy(ida, a->id, sizeof(ida));
	memcpy(idb, b->id, sizeof(idb));
	memcpy(idc, c->id, sizeof(idc));
	ck_assert_int_eq(registry_delete(r, idc, &outcome, NULL, &je), 0);
	job_unref(a);
	job_unref(b);
	job_unref(c);
	registry_free(r);

	mark_running(idb);
	ck_assert_int_ne(asprintf(&corrupt, "%s/state/jobs/0123456789abcdef.json", tmp), -1);
	test_write_file(corrupt, "{not json", 9);
	r = open_registry(10);
	a = registry_get(r, ida);
	b = registry_get(r, idb);
	c = registry_get(r, idc);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(registry_job_state(r, a), JOB_QUEUED);
	ck_assert_int_eq(registry_job_state(r, b), JOB_QUEUED);
	ck_assert_int_eq(registry_job_state(r, c), JOB_CANCELLED);
	ck_assert_uint_eq(b->restarts, 1);
	ck_assert(b->claimed);
	page = registry_list(r, &f);
	ck_assert_uint_eq(json_array_size(json_object_get(page, "jobs")), 3);
	json_decref(page);
	ck_assert_int_ne(access(corrupt, F_OK), 0);
	free(corrupt);
	job_unref(a);
	job_unref(b);
	job_unref(c);
	registry_free(r);
}
END_TEST

START_TEST(registry_gives_up_after_repeated_crashes)
{
	struct registry *r = open_registry(10);
	struct job *a = NULL;
	char id[JOB_ID_LEN + 1];
	int round;

	submit_ok(r, "out-a", "nlp", &a);
	memcpy(id, a->id, sizeof(id));
	job_unref(a);
	registry_free(r);
	for (round = 0; round < 4; round++) {
		mark_running(id);
		r = open_registry(10);
		a = registry_get(r, id);
		ck_assert_ptr_nonnull(a);
		if (round < 3) {
			ck_assert_int_eq(registry_job_state(r, a), JOB_QUEUED);
		} else {
			ck_assert_int_eq(registry_job_state(r, a), JOB_FAILED);
			ck_assert_str_eq(err_name(a->error.code), "interrupted");
		}
		job_unref(a);
		registry_free(r);
	}
}
END_TEST

START_TEST(registry_one_daemon_per_state_dir)
{
	struct registry_config c = {0};
	struct registry *r = open_registry(10), *second = NULL;
	struct err e = {0};
	char *state = test_path(tmp, "state");

	c.state_dir = state;
	c.max_running = 1;
	c.max_queued = 10;
	c.policy = &policy;
	ck_assert_int_eq(registry_open(&c, &second, &e), -1);
	ck_assert_str_eq(err_name(e.code), "io_error");
	ck_assert_ptr_null(second);
	free(state);
	registry_free(r);
}
END_TEST

START_TEST(registry_drain_refuses_jobs)
{
	struct registry *r = open_registry(10);
	struct job *j = NULL;
	const char *why = NULL;

	ck_assert(registry_ready(r, NULL));
	registry_drain(r);
	ck_assert(!registry_ready(r, &why));
	ck_assert_ptr_nonnull(why);
	ck_assert_str_eq(submit(r, "out-a", NULL, NULL, "nlp", &j, NULL), "draining");
	ck_assert(registry_wait_idle(r, 0.1));
	registry_free(r);
}
END_TEST

static Suite *job_suite(void)
{
	Suite *s = suite_create("job");
	TCase *spec = tcase_create("spec");
	TCase *files = tcase_create("files");
	TCase *reg = tcase_create("registry");

	tcase_add_checked_fixture(spec, setup, teardown);
	tcase_add_test(spec, spec_valid_and_normalised);
	tcase_add_test(spec, spec_defaults);
	tcase_add_test(spec, spec_errors_name_the_field);
	tcase_add_test(spec, locations_checked);
	tcase_add_test(spec, s3_options_need_the_hook);
	tcase_add_test(spec, durations);
	tcase_add_test(spec, json_strings_escaped);
	tcase_add_test(spec, times_are_rfc3339);
	tcase_add_test(spec, token_compare);
	suite_add_tcase(s, spec);

	tcase_add_checked_fixture(files, setup, teardown);
	tcase_add_test(files, tensor_listing_round_trip);
	tcase_add_test(files, tensor_listing_rejects_garbage);
	tcase_add_test(files, record_round_trip);
	tcase_add_test(files, atomic_write_replaces);
	suite_add_tcase(s, files);

	tcase_add_checked_fixture(reg, setup, teardown);
	tcase_add_test(reg, registry_queue_limits_and_conflicts);
	tcase_add_test(reg, registry_dry_runs_counted_and_pruned);
	tcase_add_test(reg, registry_bad_source_is_422);
	tcase_add_test(reg, registry_idempotency);
	tcase_add_test(reg, registry_listing_filters_and_cursor);
	tcase_add_test(reg, registry_cancel_then_delete);
	tcase_add_test(reg, registry_restart_recovers_records);
	tcase_add_test(reg, registry_gives_up_after_repeated_crashes);
	tcase_add_test(reg, registry_one_daemon_per_state_dir);
	tcase_add_test(reg, registry_drain_refuses_jobs);
	suite_add_tcase(s, reg);
	return s;
}

int main(void)
{
	log_init(LOG_ERROR, 1);
	return test_run_suite(job_suite());
}
