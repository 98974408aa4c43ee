/* SPDX-License-Identifier: MIT */
/*
 * job: validation of job requests, the job object and its JSON forms (the
 * API's and the record's), atomic record files, and the per-tensor listing
 * file that lets the API page through 62,000 tensors by copying bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/exclude.h"
#include "ckptconv/job.h"
#include "ckptconv/partition.h"
#include "ckptconv/paths.h"
#include "ckptconv/plan.h"
#include "ckptconv/s3.h"
#include "ckptconv/store.h"

/* ---- states and errors ------------------------------------------------ */

static const char *const state_names[JOB_STATE_COUNT] = {
	"queued", "running", "succeeded", "failed", "cancelled",
};

const char *job_state_name(enum job_state s)
{
	return (unsigned)s < JOB_STATE_COUNT ? state_names[s] : "unknown";
}

int job_state_parse(const char *name)
{
	int i;

	for (i = 0; name && i < JOB_STATE_COUNT; i++)
		if (strcmp(state_names[i], name) == 0)
			return i;
	return -1;
}

bool job_state_finished(enum job_state s)
{
	return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED;
}

int job_error_set(struct job_error *je, const char *field, const char *code, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	va_list ap;

	if (!je || je->err.code)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_set(&je->err, code, "%s", msg);
	snprintf(je->field, sizeof(je->field), "%s", field ? field : "");
	return -1;
}

/* ---- buffers ---------------------------------------------------------- */

static void buf_reserve(struct job_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	b->cap = b->cap ? b->cap : 256;
	while (b->cap < need)
		b->cap *= 2;
	b->data = xrealloc(b->data, b->cap);
}

void job_buf_append(struct job_buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void job_buf_puts(struct job_buf *b, const char *s)
{
	job_buf_append(b, s, strlen(s));
}

void job_buf_printf(struct job_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void job_buf_json_string(struct job_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *run = p;

	job_buf_append(b, "\"", 1);
	for (; *p; p++) {
		char esc[6];

		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		job_buf_append(b, (const char *)run, (size_t)(p - run));
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			job_buf_append(b, esc, 2);
		} else {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 15];
			job_buf_append(b, esc, 6);
		}
		run = p + 1;
	}
	job_buf_append(b, (const char *)run, (size_t)(p - run));
	job_buf_append(b, "\"", 1);
}

void job_buf_fini(struct job_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ---- request validation ----------------------------------------------- */

static const char *const request_fields[] = {"source",	"destination", "to",
					     "options", "labels",      NULL};
static const char *const option_fields[] = {"dtype",
					    "max_shard_size",
					    "exclude",
					    "expert_parallel",
					    "max_bytes_per_second",
					    "overwrite",
					    "dry_run",
					    "s3",
					    "partition",
					    "finalize",
					    NULL};
static const char *const ep_fields[] = {"size", "rank", NULL};
static const char *const partition_fields[] = {"index", "count", NULL};
/* Options that shape a conversion, so make no sense with finalize. */
static const char *const conversion_only_fields[] = {
	"dtype",	"max_shard_size", "exclude",   "expert_parallel", "max_bytes_per_second",
	"overwrite",	"dry_run",	  "partition", NULL};

static bool name_listed(const char *const *names, const char *name)
{
	for (; *names; names++)
		if (strcmp(*names, name) == 0)
			return true;
	return false;
}

/* Refuses members of obj not in `allowed`; prefix is the object's path. */
static int check_members(const json_t *obj, const char *const *allowed, const char *prefix,
			 struct job_error *je)
{
	const char *key;
	json_t *v;
	char field[JOB_FIELD_MAX];

	json_object_foreach((json_t *)obj, key, v) {
		if (name_listed(allowed, key))
			continue;
		snprintf(field, sizeof(field), "%s%s%s", prefix, *prefix ? "." : "", key);
		return job_error_set(je, field, "unknown_field", "unknown field '%s'", field);
	}
	return 0;
}

/* A string member without embedded NULs, at most max bytes. */
static int string_member(const json_t *v, const char *field, size_t max, const char **out,
			 struct job_error *je)
{
	if (!json_is_string(v))
		return job_error_set(je, field, "invalid_field", "%s must be a string", field);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return job_error_set(je, field, "invalid_field", "%s contains a NUL character",
				     field);
	if (json_string_length(v) > max)
		return job_error_set(je, field, "invalid_field", "%s is longer than %zu bytes",
				     field, max);
	*out = json_string_value(v);
	return 0;
}

static int parse_location(const json_t *body, const char *field, char **out, struct job_error *je)
{
	const json_t *v = json_object_get(body, field);
	const char *s;

	if (!v)
		return job_error_set(je, field, "missing_field", "%s is required", field);
	if (string_member(v, field, PATH_MAX - 1, &s, je) < 0)
		return -1;
	if (!*s)
		return job_error_set(je, field, "invalid_field", "%s is empty", field);
	*out = xstrdup(s);
	return 0;
}

/* A size given as a string in the size syntax or as a non-negative integer. */
static int parse_size_value(const json_t *v, const char *field, bool zero_ok, uint64_t *out,
			    struct job_error *je)
{
	struct err e = {0};

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return job_error_set(je, field, "invalid_field", "%s must not be negative",
					     field);
		*out = (uint64_t)json_integer_value(v);
	} else if (json_is_string(v)) {
		if (size_parse(json_string_value(v), out, &e) < 0)
			return job_error_set(je, field, "invalid_size", "%s: %s", field, e.msg);
	} else {
		return job_error_set(je, field, "invalid_field",
				     "%s must be a size such as \"5GB\" or a number of bytes",
				     field);
	}
	if (!zero_ok && *out == 0)
		return job_error_set(je, field, "invalid_field", "%s must be larger than 0", field);
	return 0;
}

static int parse_bool_option(const json_t *opts, const char *name, bool *out, struct job_error *je)
{
	const json_t *v = json_object_get(opts, name);
	char field[JOB_FIELD_MAX];

	*out = false;
	if (!v || json_is_null(v))
		return 0;
	snprintf(field, sizeof(field), "options.%s", name);
	if (!json_is_boolean(v))
		return job_error_set(je, field, "invalid_field", "%s must be true or false", field);
	*out = json_is_true(v);
	return 0;
}

static int parse_expert_parallel(const json_t *v, struct job_spec *spec, struct job_error *je)
{
	const json_t *size, *rank;

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return job_error_set(
			je, "options.expert_parallel", "invalid_field",
			"options.expert_parallel must be an object {\"size\", \"rank\"}");
	if (check_members(v, ep_fields, "options.expert_parallel", je) < 0)
		return -1;
	if (spec->to != LAYOUT_NATIVE)
		return job_error_set(je, "options.expert_parallel", "invalid_field",
				     "options.expert_parallel applies only to \"to\": \"native\"");
	size = json_object_get(v, "size");
	rank = json_object_get(v, "rank");
	if (!size)
		return job_error_set(je, "options.expert_parallel.size", "missing_field",
				     "options.expert_parallel.size is required");
	if (!rank)
		return job_error_set(je, "options.expert_parallel.rank", "missing_field",
				     "options.expert_parallel.rank is required");
	if (!json_is_integer(size) || json_integer_value(size) < 1 ||
	    json_integer_value(size) > 65536)
		return job_error_set(
			je, "options.expert_parallel.size", "invalid_field",
			"options.expert_parallel.size must be an integer from 1 to 65536");
	if (!json_is_integer(rank) || json_integer_value(rank) < 0 ||
	    json_integer_value(rank) >= json_integer_value(size))
		return job_error_set(
			je, "options.expert_parallel.rank", "invalid_field",
			"options.expert_parallel.rank must be an integer from 0 to size - 1");
	spec->convert.ep_size = (uint32_t)json_integer_value(size);
	spec->convert.ep_rank = (uint32_t)json_integer_value(rank);
	return 0;
}

static int parse_dtype(const json_t *v, struct job_spec *spec, struct job_error *je)
{
	int choice;

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || (choice = dtype_choice_parse(json_string_value(v))) < 0)
		return job_error_set(je, "options.dtype", "invalid_field",
				     "options.dtype must be one of auto, bf16, f16, f32, keep");
	if (spec->to != LAYOUT_NATIVE && choice != DTYPE_CHOICE_AUTO)
		return job_error_set(je, "options.dtype", "invalid_field",
				     "options.dtype applies only to \"to\": \"native\"");
	spec->convert.dtype = (enum dtype_choice)choice;
	return 0;
}

/* A partition number: an integer from 0 to UINT32_MAX. */
static int partition_number(const json_t *v, const char *field, uint32_t *out,
			    struct job_error *je)
{
	if (!v)
		return job_error_set(je, field, "missing_field", "%s is required", field);
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)UINT32_MAX)
		return job_error_set(je, "options.partition", "invalid_partition",
				     "%s must be a non-negative integer", field);
	*out = (uint32_t)json_integer_value(v);
	return 0;
}

static int parse_partition(const json_t *v, struct job_spec *spec, struct job_error *je)
{
	uint32_t index, count;
	struct err e = {0};

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return job_error_set(je, "options.partition", "invalid_partition",
				     "options.partition must be an object {\"index\", \"count\"}");
	if (check_members(v, partition_fields, "options.partition", je) < 0 ||
	    partition_number(json_object_get(v, "index"), "options.partition.index", &index,
			     je) < 0 ||
	    partition_number(json_object_get(v, "count"), "options.partition.count", &count,
			     je) < 0)
		return -1;
	if (partition_check(index, count, &e) < 0)
		return job_error_set(je, "options.partition", e.code, "options.partition: %s",
				     e.msg);
	spec->convert.partition_index = index;
	spec->convert.partition_count = count;
	return 0;
}

/* A finalize job takes only options.s3 besides finalize itself; the
 * normalised options are {"finalize": true} and s3. */
static int parse_finalize_options(const json_t *opts, struct job_spec *spec, struct job_error *je)
{
	const char *const *name;
	const json_t *v;
	char field[JOB_FIELD_MAX];

	for (name = conversion_only_fields; *name; name++) {
		v = json_object_get(opts, *name);
		if (!v || json_is_null(v) || json_is_false(v))
			continue;
		snprintf(field, sizeof(field), "options.%s", *name);
		return job_error_set(je, field, "invalid_field",
				     "%s does not apply to a finalize job", field);
	}
	v = json_object_get(opts, "s3");
	if (v && !json_is_null(v) && !json_is_object(v))
		return job_error_set(je, "options.s3", "invalid_field",
				     "options.s3 must be an object");
	spec->options = json_pack("{s:b}", "finalize", 1);
	if (v && json_is_object(v))
		json_object_set_new(spec->options, "s3", json_deep_copy(v));
	spec->convert.durable = true;
	spec->finalize = true;
	return 0;
}

/* options.exclude: only the cheap check here, on the HTTP thread; the
 * pattern is compiled where the conversion is planned. */
static int parse_exclude(const json_t *v, const char **out, struct job_error *je)
{
	struct err e = {0};

	if (string_member(v, "options.exclude", SIZE_MAX, out, je) < 0) /* bounded below */
		return -1;
	if (exclude_check(*out, NULL, &e) < 0)
		return job_error_set(je, "options.exclude", e.code, "%s", e.msg);
	return 0;
}

/* Fills spec->convert from the request's options and builds the normalised
 * options object. */
static int parse_options(const json_t *opts, struct job_spec *spec, struct job_error *je)
{
	const json_t *v;
	const char *exclude = NULL;
	bool overwrite, dry_run, finalize;
	json_t *norm;

	if (opts && !json_is_object(opts))
		return job_error_set(je, "options", "invalid_field", "options must be an object");
	if (opts && check_members(opts, option_fields, "options", je) < 0)
		return -1;
	if (parse_bool_option(opts, "finalize", &finalize, je) < 0)
		return -1;
	if (finalize)
		return parse_finalize_options(opts, spec, je);
	if (parse_dtype(json_object_get(opts, "dtype"), spec, je) < 0)
		return -1;
	v = json_object_get(opts, "max_shard_size");
	if (v && !json_is_null(v) &&
	    parse_size_value(v, "options.max_shard_size", false, &spec->convert.max_shard_size,
			     je) < 0)
		return -1;
	v = json_object_get(opts, "exclude");
	if (v && !json_is_null(v) && parse_exclude(v, &exclude, je) < 0)
		return -1;
	if (parse_expert_parallel(json_object_get(opts, "expert_parallel"), spec, je) < 0)
		return -1;
	v = json_object_get(opts, "max_bytes_per_second");
	if (v && !json_is_null(v) &&
	    parse_size_value(v, "options.max_bytes_per_second", true,
			     &spec->convert.max_bytes_per_second, je) < 0)
		return -1;
	if (parse_bool_option(opts, "overwrite", &overwrite, je) < 0 ||
	    parse_bool_option(opts, "dry_run", &dry_run, je) < 0 ||
	    parse_partition(json_object_get(opts, "partition"), spec, je) < 0)
		return -1;
	v = json_object_get(opts, "s3");
	if (v && !json_is_null(v) && !json_is_object(v))
		return job_error_set(je, "options.s3", "invalid_field",
				     "options.s3 must be an object");

	norm = json_object();
	json_object_set_new(norm, "dtype", json_string(dtype_choice_name(spec->convert.dtype)));
	v = json_object_get(opts, "max_shard_size");
	json_object_set_new(norm, "max_shard_size",
			    v && !json_is_null(v) ? json_deep_copy(v) : json_string("5GB"));
	json_object_set_new(norm, "exclude", exclude ? json_string(exclude) : json_null());
	if (spec->convert.ep_size)
		json_object_set_new(norm, "expert_parallel",
				    json_pack("{s:I, s:I}", "size",
					      (json_int_t)spec->convert.ep_size, "rank",
					      (json_int_t)spec->convert.ep_rank));
	else
		json_object_set_new(norm, "expert_parallel", json_null());
	v = json_object_get(opts, "max_bytes_per_second");
	json_object_set_new(norm, "max_bytes_per_second", v ? json_deep_copy(v) : json_null());
	json_object_set_new(norm, "overwrite", json_boolean(overwrite));
	json_object_set_new(norm, "dry_run", json_boolean(dry_run));
	if (spec->convert.partition_count)
		json_object_set_new(norm, "partition",
				    json_pack("{s:I, s:I}", "index",
					      (json_int_t)spec->convert.partition_index, "count",
					      (json_int_t)spec->convert.partition_count));
	else
		json_object_set_new(norm, "partition", json_null());
	json_object_set_new(norm, "finalize", json_false());
	v = json_object_get(opts, "s3");
	if (v && json_is_object(v))
		json_object_set_new(norm, "s3", json_deep_copy(v));
	spec->options = norm;
	spec->convert.exclude = json_string_value(json_object_get(norm, "exclude"));
	spec->convert.overwrite = overwrite;
	spec->convert.durable = true;
	spec->dry_run = dry_run;
	return 0;
}

static bool label_key_valid(const char *key)
{
	const char *p;

	if (!*key || strlen(key) > JOB_LABEL_KEY_MAX)
		return false;
	for (p = key; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.' || *p == '/'))
			return false;
	return true;
}

static int parse_labels(const json_t *labels, struct job_spec *spec, struct job_error *je)
{
	const char *key, *value;
	json_t *v;
	char field[JOB_FIELD_MAX];

	spec->labels = json_object();
	if (!labels || json_is_null(labels))
		return 0;
	if (!json_is_object(labels))
		return job_error_set(je, "labels", "invalid_field",
				     "labels must be an object of strings");
	if (json_object_size(labels) > JOB_LABELS_MAX)
		return job_error_set(je, "labels", "invalid_field", "at most %d labels are allowed",
				     JOB_LABELS_MAX);
	json_object_foreach((json_t *)labels, key, v) {
		snprintf(field, sizeof(field), "labels.%.100s", key);
		if (!label_key_valid(key))
			return job_error_set(
				je, field, "invalid_field",
				"label names are 1 to %d characters of A-Z a-z 0-9 _ - . /",
				JOB_LABEL_KEY_MAX);
		if (string_member(v, field, JOB_LABEL_VALUE_MAX, &value, je) < 0)
			return -1;
		json_object_set_new(spec->labels, key, json_string(value));
	}
	return 0;
}

/* Whether the request asks for finalize (checked in full with the options). */
static bool finalize_requested(const json_t *body)
{
	const json_t *opts = json_object_get(body, "options");

	return json_is_object(opts) && json_is_true(json_object_get(opts, "finalize"));
}

int job_spec_parse(const json_t *body, struct job_spec *spec, struct job_error *je)
{
	const json_t *to, *source;
	bool finalize;
	int rc = -1;

	memset(spec, 0, sizeof(*spec));
	convert_options_init(&spec->convert);
	if (!json_is_object(body)) {
		job_error_set(je, "", "invalid_json", "the request body must be a JSON object");
		goto out;
	}
	finalize = finalize_requested(body);
	source = json_object_get(body, "source");
	if (check_members(body, request_fields, "", je) < 0 ||
	    (!(finalize && (!source || json_is_null(source))) &&
	     parse_location(body, "source", &spec->source, je) < 0) ||
	    parse_location(body, "destination", &spec->destination, je) < 0)
		goto out;
	to = json_object_get(body, "to");
	if (finalize && (!to || json_is_null(to))) {
		spec->to = LAYOUT_NATIVE;
	} else if (!to) {
		job_error_set(je, "to", "missing_field", "to is required (\"native\" or \"hf\")");
		goto out;
	} else if (json_is_string(to) && strcmp(json_string_value(to), "native") == 0) {
		spec->to = LAYOUT_NATIVE;
	} else if (json_is_string(to) && strcmp(json_string_value(to), "hf") == 0) {
		spec->to = LAYOUT_HF;
	} else {
		job_error_set(je, "to", "invalid_field", "to must be \"native\" or \"hf\"");
		goto out;
	}
	spec->to_given = to && !json_is_null(to);
	spec->convert.to = spec->to;
	if (parse_options(json_object_get(body, "options"), spec, je) < 0 ||
	    parse_labels(json_object_get(body, "labels"), spec, je) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		job_spec_fini(spec);
	return rc;
}

void job_spec_fini(struct job_spec *spec)
{
	if (!spec)
		return;
	free(spec->source);
	free(spec->destination);
	json_decref(spec->options);
	json_decref(spec->labels);
	memset(spec, 0, sizeof(*spec));
}

json_t *job_spec_json(const struct job_spec *spec, bool for_record)
{
	json_t *o = json_object();
	json_t *options = json_deep_copy(spec->options);

	if (!for_record)
		json_object_del(options, "s3");
	json_object_set_new(o, "source", spec->source ? json_string(spec->source) : json_null());
	json_object_set_new(o, "destination", json_string(spec->destination));
	json_object_set_new(o, "to",
			    spec->to_given ? json_string(layout_name(spec->to)) : json_null());
	json_object_set_new(o, "options", options);
	json_object_set_new(o, "labels", json_deep_copy(spec->labels));
	return o;
}

/* ---- location policy ---------------------------------------------------- */

static int check_s3_location(const struct job_policy *p, const char *loc, const char *field,
			     struct job_error *je)
{
	struct err e = {0};
	char *bucket = NULL, *prefix = NULL;
	size_t i;

	if (s3_location_parse(loc, &bucket, &prefix, &e) < 0)
		return job_error_set(je, field, e.code, "%s", e.msg);
	free(bucket);
	free(prefix);
	for (i = 0; p->allow_s3 && i < p->allow_s3->len; i++)
		if (s3_location_within(loc, p->allow_s3->items[i]))
			return 0;
	return job_error_set(je, field, "forbidden_s3_location",
			     "%s is outside the allowed s3:// prefixes (--allow-s3)", loc);
}

static int check_location(const struct job_policy *p, const char *loc, const char *field,
			  char **resolved, struct job_error *je)
{
	struct err e = {0};

	if (store_is_remote(loc)) {
		if (check_s3_location(p, loc, field, je) < 0)
			return -1;
		*resolved = xstrdup(loc);
		return 0;
	}
	if (paths_check(p->allow_roots, loc, resolved, &e) < 0)
		return job_error_set(je, field, e.code, "%s", e.msg);
	return 0;
}

static int check_s3_options(const struct job_spec *spec, const struct job_policy *p,
			    struct job_error *je)
{
	const json_t *s3 = json_object_get(spec->options, "s3");

	if (!s3)
		return 0;
	if (!p->s3_options_check)
		return job_error_set(je, "options.s3", "forbidden_s3_endpoint",
				     "options.s3 is not enabled on this service");
	return p->s3_options_check(s3, p, je);
}

int job_spec_check(const struct job_spec *spec, const struct job_policy *p, char **resolved_source,
		   char **resolved_destination, struct job_error *je)
{
	char *src = NULL, *dst = NULL;
	int rc = -1;

	*resolved_source = *resolved_destination = NULL;
	if ((spec->source && check_location(p, spec->source, "source", &src, je) < 0) ||
	    check_location(p, spec->destination, "destination", &dst, je) < 0 ||
	    check_s3_options(spec, p, je) < 0)
		goto out;
	if (!store_is_remote(dst) && p->state_dir && paths_overlap(dst, p->state_dir)) {
		job_error_set(je, "destination", "forbidden_path",
			      "%s overlaps the service's state directory", spec->destination);
		goto out;
	}
	if (src && store_is_remote(src) == store_is_remote(dst) && paths_overlap(src, dst)) {
		job_error_set(je, "destination", "invalid_field",
			      "the destination %s overlaps the source %s", spec->destination,
			      spec->source);
		goto out;
	}
	*resolved_source = src;
	*resolved_destination = dst;
	src = dst = NULL;
	rc = 0;
out:
	free(src);
	free(dst);
	return rc;
}

int job_policy_check_source(const char *source, void *policy, struct err *e)
{
	struct job_error je = {0};
	char *resolved = NULL;

	if (check_location(policy, source, "source", &resolved, &je) < 0) {
		*e = je.err;
		return -1;
	}
	free(resolved);
	return 0;
}

/* ---- per-tensor listing ------------------------------------------------ */

#define TENSORS_MAGIC "CKTLIST1"

struct job_tensors {
	atomic_int refs;
	void *map;
	size_t map_len;
	size_t count;
	const uint64_t *offsets; /* count + 1 entries, relative to data */
	const char *data;
};

static void fragment_build(struct job_buf *b, const struct plan *plan, const struct plan_tensor *t)
{
	uint32_t k;
	int d;

	job_buf_puts(b, "{\"name\":");
	job_buf_json_string(b, t->name);
	job_buf_printf(b, ",\"dtype\":\"%s\",\"shape\":[", dtype_name(t->dtype));
	for (d = 0; d < t->ndim; d++)
		job_buf_printf(b, "%s%" PRIu64, d ? "," : "", t->shape[d]);
	job_buf_printf(b, "],\"bytes\":%" PRIu64 ",\"file\":", t->nbytes);
	job_buf_json_string(b, plan->files[t->file].name);
	job_buf_puts(b, ",\"sources\":[");
	for (k = 0; k < t->nsources; k++) {
		if (k)
			job_buf_append(b, ",", 1);
		job_buf_json_string(b, plan->src->tensors[t->sources[k]].name);
	}
	job_buf_puts(b, "],\"state\":\"");
}

int job_tensors_write(const struct plan *plan, const char *path, bool durable, struct err *e)
{
	struct job_buf data = {0}, file = {0};
	uint64_t *offsets = xcalloc(plan->ntensors + 1, sizeof(*offsets));
	uint64_t n = plan->ntensors;
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t i;
	int rc;

	for (i = 0; i < plan->ntensors; i++) {
		offsets[i] = data.len;
		fragment_build(&data, plan, &plan->tensors[i]);
	}
	offsets[plan->ntensors] = data.len;
	job_buf_append(&file, TENSORS_MAGIC, 8);
	job_buf_append(&file, (const char *)&n, sizeof(n));
	job_buf_append(&file, (const char *)offsets, (plan->ntensors + 1) * sizeof(*offsets));
	if (data.len)
		job_buf_append(&file, data.data, data.len);
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
	rc = job_write_atomic(dir, slash ? slash + 1 : path, file.data, file.len, durable, e);
	job_buf_fini(&data);
	job_buf_fini(&file);
	free(offsets);
	return rc;
}

static int tensors_validate(struct job_tensors *t, const char *path, struct err *e)
{
	const unsigned char *base = t->map;
	uint64_t n, header, i;

	if (t->map_len < 24 || memcmp(base, TENSORS_MAGIC, 8) != 0)
		return err_set(e, "io_error", "%s: not a tensor listing", path);
	memcpy(&n, base + 8, sizeof(n));
	if (n >= (t->map_len - 16) / 8)
		return err_set(e, "io_error", "%s: tensor count %" PRIu64 " too large", path, n);
	header = 16 + (n + 1) * 8;
	t->count = n;
	t->offsets = (const uint64_t *)(base + 16);
	t->data = (const char *)base + header;
	for (i = 0; i < n; i++)
		if (t->offsets[i] > t->offsets[i + 1])
			return err_set(e, "io_error", "%s: offsets out of order", path);
	if (t->offsets[0] != 0 || t->offsets[n] != t->map_len - header)
		return err_set(e, "io_error", "%s: size does not match its offsets", path);
	return 0;
}

int job_tensors_open(const char *path, struct job_tensors **out, struct err *e)
{
	struct job_tensors *t = NULL;
	struct stat st;
	int fd, rc = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set_errno(e, "io_error", errno, "%s", path);
	if (fstat(fd, &st) != 0) {
		err_set_errno(e, "io_error", errno, "%s", path);
		goto out_close;
	}
	t = xcalloc(1, sizeof(*t));
	atomic_init(&t->refs, 1);
	t->map_len = (size_t)st.st_size;
	t->map = t->map_len ? mmap(NULL, t->map_len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
	if (t->map == MAP_FAILED) {
		err_set_errno(e, "io_error", t->map_len ? errno : 0, "%s: cannot map", path);
		t->map = NULL;
		goto out_free;
	}
	if (tensors_validate(t, path, e) < 0)
		goto out_free;
	*out = t;
	t = NULL;
	rc = 0;
out_free:
	job_tensors_unref(t);
out_close:
	close(fd);
	return rc;
}

struct job_tensors *job_tensors_ref(struct job_tensors *t)
{
	if (t)
		atomic_fetch_add(&t->refs, 1);
	return t;
}

void job_tensors_unref(struct job_tensors *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	if (t->map)
		munmap(t->map, t->map_len);
	free(t);
}

size_t job_tensors_count(const struct job_tensors *t)
{
	return t ? t->count : 0;
}

void job_tensors_fragment(const struct job_tensors *t, size_t i, const char **out, size_t *len)
{
	*out = t->data + t->offsets[i];
	*len = (size_t)(t->offsets[i + 1] - t->offsets[i]);
}

/* ---- the job object ---------------------------------------------------- */

static void random_id(char out[JOB_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char bytes[JOB_ID_LEN / 2];
	size_t got = 0;
	int i;

	while (got < sizeof(bytes)) {
		ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			abort();
		got += (size_t)n;
	}
	for (i = 0; i < JOB_ID_LEN / 2; i++) {
		out[2 * i] = hex[bytes[i] >> 4];
		out[2 * i + 1] = hex[bytes[i] & 15];
	}
	out[JOB_ID_LEN] = '\0';
}

static struct job *job_alloc(void)
{
	struct job *j = xcalloc(1, sizeof(*j));

	atomic_init(&j->refs, 1);
	pthread_mutex_init(&j->write_lock, NULL);
	return j;
}

struct job *job_new(struct job_spec *spec, uint64_t seq)
{
	struct job *j = job_alloc();

	random_id(j->id);
	j->seq = seq;
	j->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	j->state = JOB_QUEUED;
	j->created_ms = job_now_ms();
	return j;
}

struct job *job_ref(struct job *j)
{
	if (j)
		atomic_fetch_add(&j->refs, 1);
	return j;
}

void job_unref(struct job *j)
{
	if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	job_spec_fini(&j->spec);
	free(j->resolved_source);
	free(j->resolved_destination);
	free(j->idempotency_key);
	json_decref(j->result);
	free(j->api_text);
	free(j->tensor_states);
	job_tensors_unref(j->tensors);
	pthread_mutex_destroy(&j->write_lock);
	free(j);
}

int64_t job_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void job_format_time(int64_t ms, char *buf, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	size_t used;

	gmtime_r(&secs, &tm);
	used = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + used, len - used, ".%03dZ", (int)(ms % 1000));
}

static json_t *time_json(int64_t ms)
{
	char buf[40];

	if (!ms)
		return json_null();
	job_format_time(ms, buf, sizeof(buf));
	return json_string(buf);
}

void job_current_progress(const struct job *j, struct job_progress *out)
{
	struct exec_progress p;

	*out = j->progress;
	if (!j->conv)
		return;
	conversion_progress(j->conv, &p);
	if (p.tensors_total == 0 && p.bytes_total == 0)
		return;
	out->tensors_total = p.tensors_total;
	out->tensors_done = p.tensors_done;
	out->bytes_total = p.bytes_total;
	out->bytes_done = p.bytes_done;
	out->elapsed_seconds = p.elapsed_seconds;
}

enum tensor_state job_tensor_state(const struct job *j, size_t i)
{
	if (j->conv) {
		const struct plan *plan = conversion_plan(j->conv);

		return plan && i < plan->ntensors ? conversion_tensor_state(j->conv, i) :
						    TENSOR_PENDING;
	}
	if (j->state == JOB_SUCCEEDED)
		return j->spec.dry_run ? TENSOR_PENDING : TENSOR_DONE;
	if (j->tensor_states && i < j->ntensor_states)
		return (enum tensor_state)j->tensor_states[i];
	return TENSOR_PENDING;
}

#define IN_FLIGHT_MAX 16

static json_t *in_flight_json(const struct job *j)
{
	json_t *names = json_array();
	uint32_t idx[IN_FLIGHT_MAX];
	const struct plan *plan;
	size_t n, i;

	if (!j->conv || j->state != JOB_RUNNING)
		return names;
	plan = conversion_plan(j->conv);
	n = conversion_in_flight(j->conv, idx, IN_FLIGHT_MAX);
	for (i = 0; plan && i < n; i++)
		if (idx[i] < plan->ntensors)
			json_array_append_new(names, json_string(plan->tensors[idx[i]].name));
	return names;
}

json_t *job_progress_json(const struct job *j)
{
	struct job_progress p;
	double percent = 0, rate = 0;
	json_t *o;

	job_current_progress(j, &p);
	if (p.bytes_total)
		percent = 100.0 * (double)p.bytes_done / (double)p.bytes_total;
	else if (p.tensors_total)
		percent = 100.0 * (double)p.tensors_done / (double)p.tensors_total;
	else if (j->state == JOB_SUCCEEDED)
		percent = 100.0;
	if (p.elapsed_seconds > 0)
		rate = (double)p.bytes_done / p.elapsed_seconds;
	o = json_object();
	json_object_set_new(o, "tensors_total", json_integer((json_int_t)p.tensors_total));
	json_object_set_new(o, "tensors_done", json_integer((json_int_t)p.tensors_done));
	json_object_set_new(o, "bytes_total", json_integer((json_int_t)p.bytes_total));
	json_object_set_new(o, "bytes_done", json_integer((json_int_t)p.bytes_done));
	json_object_set_new(o, "percent", json_real((double)(int64_t)(percent * 10.0) / 10.0));
	json_object_set_new(o, "bytes_per_second", json_integer((json_int_t)rate));
	json_object_set_new(o, "elapsed_seconds",
			    json_real((double)(int64_t)(p.elapsed_seconds * 1000.0) / 1000.0));
	if (j->state == JOB_RUNNING && rate > 0)
		json_object_set_new(
			o, "eta_seconds",
			json_integer(
				(json_int_t)((double)(p.bytes_total - p.bytes_done) / rate + 0.5)));
	else if (j->state == JOB_SUCCEEDED)
		json_object_set_new(o, "eta_seconds", json_integer(0));
	else
		json_object_set_new(o, "eta_seconds", json_null());
	json_object_set_new(o, "in_flight", in_flight_json(j));
	return o;
}

static json_t *error_json(const struct err *e)
{
	if (!e->code)
		return json_null();
	return json_pack("{s:s, s:s, s:o}", "code", e->code, "message", e->msg, "tensor",
			 e->tensor[0] ? json_string(e->tensor) : json_null());
}

static json_t *credentials_source_json(const struct job *j)
{
	return j->credentials_source[0] ? json_string(j->credentials_source) : json_null();
}

json_t *job_to_json(const struct job *j)
{
	json_t *o = json_object();
	json_t *req = job_spec_json(&j->spec, false);

	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "state", json_string(job_state_name(j->state)));
	json_object_set_new(o, "created_at", time_json(j->created_ms));
	json_object_set_new(o, "started_at", time_json(j->started_ms));
	json_object_set_new(o, "finished_at", time_json(j->finished_ms));
	json_object_update(o, req);
	json_decref(req);
	json_object_set_new(o, "progress", job_progress_json(j));
	json_object_set_new(o, "result", j->result ? json_incref(j->result) : json_null());
	json_object_set_new(o, "error", error_json(&j->error));
	json_object_set_new(o, "cancel_requested", json_boolean(j->cancel == JOB_CANCEL_USER));
	json_object_set_new(o, "restarts", json_integer(j->restarts));
	json_object_set_new(o, "credentials_source", credentials_source_json(j));
	return o;
}

/* ---- records ------------------------------------------------------------ */

#define RECORD_FORMAT "ckptconv-job-1"

json_t *job_record_json(const struct job *j)
{
	struct job_progress p;
	json_t *o = json_object();

	job_current_progress(j, &p);
	json_object_set_new(o, "format", json_string(RECORD_FORMAT));
	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "seq", json_integer((json_int_t)j->seq));
	json_object_set_new(o, "state", json_string(job_state_name(j->state)));
	json_object_set_new(o, "created_ms", json_integer(j->created_ms));
	json_object_set_new(o, "started_ms", json_integer(j->started_ms));
	json_object_set_new(o, "finished_ms", json_integer(j->finished_ms));
	json_object_set_new(o, "request", job_spec_json(&j->spec, true));
	json_object_set_new(o, "resolved_source",
			    j->resolved_source ? json_string(j->resolved_source) : json_null());
	json_object_set_new(o, "resolved_destination",
			    j->resolved_destination ? json_string(j->resolved_destination) :
						      json_null());
	json_object_set_new(o, "idempotency_key",
			    j->idempotency_key ? json_string(j->idempotency_key) : json_null());
	json_object_set_new(o, "request_sha256", json_string(j->request_sha256));
	json_object_set_new(o, "claimed", json_boolean(j->claimed));
	json_object_set_new(o, "restarts", json_integer(j->restarts));
	json_object_set_new(
		o, "progress",
		json_pack("{s:I, s:I, s:I, s:I, s:f}", "tensors_total", (json_int_t)p.tensors_total,
			  "tensors_done", (json_int_t)p.tensors_done, "bytes_total",
			  (json_int_t)p.bytes_total, "bytes_done", (json_int_t)p.bytes_done,
			  "elapsed_seconds", p.elapsed_seconds));
	json_object_set_new(o, "result", j->result ? json_incref(j->result) : json_null());
	json_object_set_new(o, "error", error_json(&j->error));
	json_object_set_new(o, "credentials_source", credentials_source_json(j));
	return o;
}

static bool id_valid(const char *id)
{
	size_t i;

	if (!id || strlen(id) != JOB_ID_LEN)
		return false;
	for (i = 0; i < JOB_ID_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	return true;
}

/* The catalogue's own string for code (err.code must be static). */
static const char *catalogue_code(const char *code)
{
	const struct err_code *cat;
	size_t n, i;

	cat = err_catalogue(&n);
	for (i = 0; code && i < n; i++)
		if (strcmp(cat[i].code, code) == 0)
			return cat[i].code;
	return NULL;
}

static int record_error(const json_t *v, struct err *out, struct err *e)
{
	const char *code, *msg, *tensor;

	if (!v || json_is_null(v))
		return 0;
	code = catalogue_code(json_string_value(json_object_get(v, "code")));
	msg = json_string_value(json_object_get(v, "message"));
	tensor = json_string_value(json_object_get(v, "tensor"));
	if (!code || !msg)
		return err_set(e, "io_error", "the error has an unknown code or no message");
	err_set(out, code, "%s", msg);
	err_set_tensor(out, tensor);
	return 0;
}

static int record_progress(const json_t *v, struct job_progress *p, struct err *e)
{
	if (!json_is_object(v))
		return err_set(e, "io_error", "progress is missing");
	p->tensors_total = (uint64_t)json_integer_value(json_object_get(v, "tensors_total"));
	p->tensors_done = (uint64_t)json_integer_value(json_object_get(v, "tensors_done"));
	p->bytes_total = (uint64_t)json_integer_value(json_object_get(v, "bytes_total"));
	p->bytes_done = (uint64_t)json_integer_value(json_object_get(v, "bytes_done"));
	p->elapsed_seconds = json_number_value(json_object_get(v, "elapsed_seconds"));
	return 0;
}

static char *optional_string(const json_t *v)
{
	return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
}

int job_from_record(const json_t *r, struct job **out, struct err *e)
{
	struct job_error je = {0};
	struct job *j = job_alloc();
	const char *id = json_string_value(json_object_get(r, "id"));
	const char *sha = json_string_value(json_object_get(r, "request_sha256"));
	int state = job_state_parse(json_string_value(json_object_get(r, "state")));
	int rc = -1;

	*out = NULL;
	if (!json_is_object(r) || !json_is_string(json_object_get(r, "format")) ||
	    strcmp(json_string_value(json_object_get(r, "format")), RECORD_FORMAT) != 0) {
		err_set(e, "io_error", "not a job record of format %s", RECORD_FORMAT);
		goto out;
	}
	if (!id_valid(id) || state < 0 || !json_is_integer(json_object_get(r, "seq"))) {
		err_set(e, "io_error", "the record's id, state or seq is invalid");
		goto out;
	}
	if (job_spec_parse(json_object_get(r, "request"), &j->spec, &je) < 0) {
		err_set(e, "io_error", "the record's request is invalid: %s", je.err.msg);
		goto out;
	}
	memcpy(j->id, id, JOB_ID_LEN + 1);
	j->seq = (uint64_t)json_integer_value(json_object_get(r, "seq"));
	j->state = (enum job_state)state;
	j->created_ms = json_integer_value(json_object_get(r, "created_ms"));
	j->started_ms = json_integer_value(json_object_get(r, "started_ms"));
	j->finished_ms = json_integer_value(json_object_get(r, "finished_ms"));
	j->resolved_source = optional_string(json_object_get(r, "resolved_source"));
	j->resolved_destination = optional_string(json_object_get(r, "resolved_destination"));
	j->idempotency_key = optional_string(json_object_get(r, "idempotency_key"));
	snprintf(j->request_sha256, sizeof(j->request_sha256), "%s", sha ? sha : "");
	j->claimed = json_is_true(json_object_get(r, "claimed"));
	j->restarts = (unsigned)json_integer_value(json_object_get(r, "restarts"));
	if (json_is_string(json_object_get(r, "credentials_source")))
		snprintf(j->credentials_source, sizeof(j->credentials_source), "%s",
			 json_string_value(json_object_get(r, "credentials_source")));
	if (record_progress(json_object_get(r, "progress"), &j->progress, e) < 0 ||
	    record_error(json_object_get(r, "error"), &j->error, e) < 0)
		goto out;
	if (json_is_object(json_object_get(r, "result")))
		j->result = json_deep_copy(json_object_get(r, "result"));
	*out = j;
	j = NULL;
	rc = 0;
out:
	job_unref(j);
	return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int job_write_atomic(const char *dir, const char *name, const char *data, size_t len, bool durable,
		     struct err *e)
{
	char tmp[PATH_MAX], final[PATH_MAX];
	int fd, dfd, rc = -1;

	if (snprintf(final, sizeof(final), "%s/%s", dir, name) >= (int)sizeof(final) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
		return err_set(e, "io_error", "%s/%s: path too long", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return err_set_errno(e, "io_error", errno, "%s", tmp);
	if (write_all(fd, data, len) < 0 || (durable && fsync(fd) != 0)) {
		err_set_errno(e, "io_error", errno, "%s", tmp);
		close(fd);
		goto out_unlink;
	}
	if (close(fd) != 0) {
		err_set_errno(e, "io_error", errno, "%s", tmp);
		goto out_unlink;
	}
	if (rename(tmp, final) != 0) {
		err_set_errno(e, "io_error", errno, "%s", final);
		goto out_unlink;
	}
	if (durable) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	return 0;
out_unlink:
	unlink(tmp);
	return rc;
}

int job_parse_duration(const char *text, int64_t *ms, struct err *e)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {
		{"", 1000},	{"s", 1000},	 {"m", 60000},
		{"h", 3600000}, {"d", 86400000}, {"w", 604800000},
	};
	const char *p = text;
	int64_t value = 0;
	size_t i;

	if (!text || *p < '0' || *p > '9')
		return err_set(e, "invalid_option",
			       "'%s' is not a duration (examples: 7d, 12h, 30m, 90s)",
			       text ? text : "");
	while (*p >= '0' && *p <= '9') {
		if (__builtin_mul_overflow(value, 10, &value) ||
		    __builtin_add_overflow(value, *p - '0', &value))
			return err_set(e, "invalid_option", "duration '%s' is too large", text);
		p++;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].unit) == 0) {
			if (__builtin_mul_overflow(value, units[i].ms, ms))
				return err_set(e, "invalid_option", "duration '%s' is too large",
					       text);
			return 0;
		}
	}
	return err_set(e, "invalid_option", "'%s' has an unknown unit (use s, m, h, d or w)", text);
}
