/* SPDX-License-Identifier: MIT */
/*
 * s3_job: the bridge between a daemon job's options.s3 and the S3 client's
 * settings.  Checking happens once, at submission, against the service's
 * endpoint allow list, so a caller cannot make the service reach a host
 * the operator did not name; applying sets the settings for the thread
 * that opens the job's stores.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "ckptconv/s3.h"
#include "ckptconv/s3_job.h"

static const char *const fields[] = {"endpoint_url", "region", "addressing_style"};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* The settings named by options.s3 (strings borrowed from the JSON). */
static int settings_from_json(const json_t *s3, struct s3_settings *out, struct job_error *je)
{
	const char **slot[NFIELDS] = {&out->endpoint_url, &out->region, &out->addressing_style};
	char field[JOB_FIELD_MAX];
	const char *name;
	json_t *v;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(s3))
		return job_error_set(je, "options.s3", ERR_INVALID_FIELD,
				     "options.s3 must be an object");
	json_object_foreach((json_t *)s3, name, v) {
		for (i = 0; i < NFIELDS && strcmp(name, fields[i]) != 0; i++)
			;
		snprintf(field, sizeof(field), "options.s3.%.100s", name);
		if (i == NFIELDS)
			return job_error_set(
				je, field, ERR_UNKNOWN_FIELD,
				"unknown field '%s' (options.s3 takes endpoint_url, region "
				"and addressing_style; credentials come from the service's "
				"environment)",
				field);
		if (json_is_null(v))
			continue;
		if (!json_is_string(v))
			return job_error_set(je, field, ERR_INVALID_FIELD, "%s must be a string",
					     field);
		*slot[i] = json_string_value(v);
	}
	return 0;
}

static int check_endpoint(const char *url, const struct job_policy *p, struct job_error *je)
{
	struct err e = {0};
	char *want, *allowed;
	size_t i;
	int found = 0;

	want = s3_endpoint_normalize(url, &e);
	if (!want)
		return job_error_set(je, "options.s3.endpoint_url", e.code, "%s", e.msg);
	for (i = 0; p->allow_s3_endpoints && i < p->allow_s3_endpoints->len && !found; i++) {
		allowed = s3_endpoint_normalize(p->allow_s3_endpoints->items[i], NULL);
		found = allowed && strcmp(allowed, want) == 0;
		free(allowed);
	}
	free(want);
	if (!found)
		return job_error_set(
			je, "options.s3.endpoint_url", ERR_FORBIDDEN_S3_ENDPOINT,
			"endpoint %s is not one the service allows (--allow-s3-endpoint)", url);
	return 0;
}

/* s3_settings_check of each setting alone, so that an error names its
 * field. */
static int check_each_setting(const struct s3_settings *s, struct job_error *je)
{
	const struct {
		const char *field;
		struct s3_settings one;
	} each[] = {
		{"options.s3.endpoint_url", {.endpoint_url = s->endpoint_url}},
		{"options.s3.region", {.region = s->region}},
		{"options.s3.addressing_style", {.addressing_style = s->addressing_style}},
	};
	struct err e = {0};
	size_t i;

	for (i = 0; i < sizeof(each) / sizeof(each[0]); i++)
		if (s3_settings_check(&each[i].one, &e))
			return job_error_set(je, each[i].field, e.code, "%s", e.msg);
	return 0;
}

int s3_job_options_check(const json_t *s3, const struct job_policy *p, struct job_error *je)
{
	struct s3_settings s;

	if (!s3 || json_is_null(s3))
		return 0;
	if (settings_from_json(s3, &s, je))
		return -1;
	if (check_each_setting(&s, je))
		return -1;
	if (s.endpoint_url && *s.endpoint_url)
		return check_endpoint(s.endpoint_url, p, je);
	return 0;
}

int s3_job_options_apply(const json_t *s3, struct s3_settings *settings, struct err *e)
{
	struct job_error je = {0};
	struct s3_settings s;

	if (!s3 || json_is_null(s3))
		return 0;
	if (settings_from_json(s3, &s, &je)) {
		if (e && !err_is_set(e))
			*e = je.err;
		return -1;
	}
	if (s3_settings_check(&s, e))
		return -1;
	s3_settings_overlay(settings, &s);
	return 0;
}
