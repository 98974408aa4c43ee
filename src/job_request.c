/* SPDX-License-Identifier: MIT */
/*
 * job_request: validation of job requests into a job_spec (every member
 * checked, the options normalised with their defaults filled in) and the
 * location policy (allowed roots, s3:// prefixes, options.s3).
 */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/job_request.h"
#include "ckptconv/paths.h"
#include "ckptconv/s3.h"
#include "ckptconv/store.h"

/* ---- errors ------------------------------------------------------------ */

int job_error_set(struct job_error *je, const char *field, enum err_code code, const char *fmt, ...)
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

/* ---- request validation ----------------------------------------------- */

static const char *const request_fields[] = {"source",	"destination", "to",
					     "options", "labels",      NULL};
static const char *const option_fields[] = {
	"dtype",     "max_shard_size", "exclude", "expert_parallel", "max_bytes_per_second",
	"overwrite", "dry_run",	       "s3",	  "partition",	     "finalize",
	"allow_gaps", "io", "resume", NULL};
/* Options that shape a conversion, so make no sense with finalize. */
static const char *const conversion_only_fields[] = {"dtype",
						     "max_shard_size",
						     "exclude",
						     "expert_parallel",
						     "max_bytes_per_second",
						     "overwrite",
						     "dry_run",
						     "partition",
						     "allow_gaps",
						     "io",
						     "resume",
						     NULL};

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
		return job_error_set(je, field, ERR_UNKNOWN_FIELD, "unknown field '%s'", field);
	}
	return 0;
}

/* A string member without embedded NULs, at most max bytes. */
static int string_member(const json_t *v, const char *field, size_t max, const char **out,
			 struct job_error *je)
{
	if (!json_is_string(v))
		return job_error_set(je, field, ERR_INVALID_FIELD, "%s must be a string", field);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return job_error_set(je, field, ERR_INVALID_FIELD, "%s contains a NUL character",
				     field);
	if (json_string_length(v) > max)
		return job_error_set(je, field, ERR_INVALID_FIELD, "%s is longer than %zu bytes",
				     field, max);
	*out = json_string_value(v);
	return 0;
}

static int parse_location(const json_t *body, const char *field, char **out, struct job_error *je)
{
	const json_t *v = json_object_get(body, field);
	const char *s;

	if (!v)
		return job_error_set(je, field, ERR_MISSING_FIELD, "%s is required", field);
	if (string_member(v, field, PATH_MAX - 1, &s, je) < 0)
		return -1;
	if (!*s)
		return job_error_set(je, field, ERR_INVALID_FIELD, "%s is empty", field);
	*out = xstrdup(s);
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
		return job_error_set(je, field, ERR_INVALID_FIELD, "%s must be true or false", field);
	*out = json_is_true(v);
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
		return job_error_set(je, field, ERR_INVALID_FIELD,
				     "%s does not apply to a finalize job", field);
	}
	v = json_object_get(opts, "s3");
	if (v && !json_is_null(v) && !json_is_object(v))
		return job_error_set(je, "options.s3", ERR_INVALID_FIELD,
				     "options.s3 must be an object");
	spec->options = json_pack("{s:b}", "finalize", 1);
	if (v && json_is_object(v))
		json_object_set_new(spec->options, "s3", json_deep_copy(v));
	spec->convert.durable = true;
	spec->finalize = true;
	return 0;
}

/* A rule between options broken (convert_options_check): a bad
 * partition keeps its code, any other is a field of the request that is
 * invalid with the others. */
static int rule_error(struct job_error *je, const char *member, const struct err *e)
{
	char field[JOB_FIELD_MAX];

	if (strcmp(member, "to") == 0)
		snprintf(field, sizeof(field), "to");
	else
		snprintf(field, sizeof(field), "options.%s", member);
	return job_error_set(je, field,
			     strcmp(member, "partition") == 0 ? e->code : ERR_INVALID_FIELD, "%s: %s",
			     field, e->msg);
}

/* Fills spec->convert from the request's options (read by
 * convert_options_from_json, the rules convert_options_check's) and builds
 * the normalised options object the API shows and the job record keeps:
 * the JSON form of convert_options.h, with the sizes as the request spelled
 * them ("5GB" for the default shard size), plus dry_run, finalize and s3. */
static int parse_options(const json_t *opts, struct job_spec *spec, struct job_error *je)
{
	const unsigned members = CONVERT_JSON_PLAN | CONVERT_JSON_RUN;
	char field[CONVERT_FIELD_MAX];
	const char *member = "";
	struct err e = {0};
	bool dry_run, finalize;
	const json_t *v;
	json_t *norm;

	if (opts && !json_is_object(opts))
		return job_error_set(je, "options", ERR_INVALID_FIELD, "options must be an object");
	if (opts && check_members(opts, option_fields, "options", je) < 0)
		return -1;
	if (parse_bool_option(opts, "finalize", &finalize, je) < 0)
		return -1;
	if (finalize)
		return parse_finalize_options(opts, spec, je);
	if (convert_options_from_json(opts, members, "options.", &spec->convert, field, &e) < 0)
		return job_error_set(je, field, e.code, "%s", e.msg);
	if (convert_options_check(&spec->convert, &member, &e) < 0)
		return rule_error(je, member, &e);
	if (parse_bool_option(opts, "dry_run", &dry_run, je) < 0)
		return -1;
	v = json_object_get(opts, "s3");
	if (v && !json_is_null(v) && !json_is_object(v))
		return job_error_set(je, "options.s3", ERR_INVALID_FIELD,
				     "options.s3 must be an object");

	norm = convert_options_to_json(&spec->convert, members);
	v = json_object_get(opts, "max_shard_size");
	json_object_set_new(norm, "max_shard_size",
			    v && !json_is_null(v) ? json_deep_copy(v) : json_string("5GB"));
	v = json_object_get(opts, "max_bytes_per_second");
	json_object_set_new(norm, "max_bytes_per_second", v ? json_deep_copy(v) : json_null());
	json_object_set_new(norm, "dry_run", json_boolean(dry_run));
	json_object_set_new(norm, "finalize", json_false());
	v = json_object_get(opts, "s3");
	if (v && json_is_object(v))
		json_object_set_new(norm, "s3", json_deep_copy(v));
	spec->options = norm;
	spec->convert.exclude = json_string_value(json_object_get(norm, "exclude"));
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
		return job_error_set(je, "labels", ERR_INVALID_FIELD,
				     "labels must be an object of strings");
	if (json_object_size(labels) > JOB_LABELS_MAX)
		return job_error_set(je, "labels", ERR_INVALID_FIELD, "at most %d labels are allowed",
				     JOB_LABELS_MAX);
	json_object_foreach((json_t *)labels, key, v) {
		snprintf(field, sizeof(field), "labels.%.100s", key);
		if (!label_key_valid(key))
			return job_error_set(
				je, field, ERR_INVALID_FIELD,
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
		job_error_set(je, "", ERR_INVALID_JSON, "the request body must be a JSON object");
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
		job_error_set(je, "to", ERR_MISSING_FIELD, "to is required (\"native\" or \"hf\")");
		goto out;
	} else if (json_is_string(to) && strcmp(json_string_value(to), "native") == 0) {
		spec->to = LAYOUT_NATIVE;
	} else if (json_is_string(to) && strcmp(json_string_value(to), "hf") == 0) {
		spec->to = LAYOUT_HF;
	} else {
		job_error_set(je, "to", ERR_INVALID_FIELD, "to must be \"native\" or \"hf\"");
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
	return job_error_set(je, field, ERR_FORBIDDEN_S3_LOCATION,
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
		return job_error_set(je, "options.s3", ERR_FORBIDDEN_S3_ENDPOINT,
				     "options.s3 is not enabled on this service");
	return p->s3_options_check(s3, p, je);
}

/* Refuses a control character in text a client shows on a terminal: a
 * C0 control, DEL, or a C1 control (U+0080-U+009F; the text is UTF-8, as
 * jansson guarantees). */
static int check_printable(const char *text, const char *field, struct job_error *je)
{
	const unsigned char *p;

	for (p = (const unsigned char *)text; *p; p++) {
		unsigned code = *p;

		if (code == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			code = p[1];
		else if (code >= 0x20 && code != 0x7f)
			continue;
		return job_error_set(je, field, ERR_INVALID_FIELD,
				     "%s contains the control character U+%04X at byte %zu", field,
				     code, (size_t)(p - (const unsigned char *)text));
	}
	return 0;
}

static int check_labels_printable(const json_t *labels, struct job_error *je)
{
	char field[JOB_FIELD_MAX];
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)labels, key, v) {
		snprintf(field, sizeof(field), "labels.%.100s", key);
		if (check_printable(json_string_value(v), field, je) < 0)
			return -1;
	}
	return 0;
}

int job_spec_check(const struct job_spec *spec, const struct job_policy *p, char **resolved_source,
		   char **resolved_destination, struct job_error *je)
{
	char *src = NULL, *dst = NULL;
	int rc = -1;

	*resolved_source = *resolved_destination = NULL;
	if ((spec->source && check_printable(spec->source, "source", je) < 0) ||
	    check_printable(spec->destination, "destination", je) < 0 ||
	    check_labels_printable(spec->labels, je) < 0)
		goto out;
	if ((spec->source && check_location(p, spec->source, "source", &src, je) < 0) ||
	    check_location(p, spec->destination, "destination", &dst, je) < 0 ||
	    check_s3_options(spec, p, je) < 0)
		goto out;
	if (!store_is_remote(dst) && p->state_dir && paths_overlap(dst, p->state_dir)) {
		job_error_set(je, "destination", ERR_FORBIDDEN_PATH,
			      "%s overlaps the service's state directory", spec->destination);
		goto out;
	}
	if (src && store_is_remote(src) == store_is_remote(dst) && paths_overlap(src, dst)) {
		job_error_set(je, "destination", ERR_INVALID_FIELD,
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
