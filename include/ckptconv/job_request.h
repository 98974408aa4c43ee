/* SPDX-License-Identifier: MIT */
/*
 * job_request: a job request of the HTTP API (docs/openapi.yaml, POST
 * /v1/jobs) validated into a job_spec, and the policy that says which
 * locations a request may name.  Parsing looks at nothing but the JSON;
 * checking against the policy resolves local paths (paths.h).
 *
 * Threads: any; a job_spec is owned by its caller (a job takes it over,
 * job.h).
 */
#ifndef CKPTCONV_JOB_REQUEST_H
#define CKPTCONV_JOB_REQUEST_H

#include <jansson.h>
#include <stdbool.h>

#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/util.h"

struct s3_settings;

#define JOB_FIELD_MAX 128 /* longest JSON path reported as "field" */
#define JOB_LABELS_MAX 32
#define JOB_LABEL_KEY_MAX 63
#define JOB_LABEL_VALUE_MAX 256

/* An error of a request: a catalogue error plus the JSON path of the field
 * at fault ("" when the request as a whole is). */
struct job_error {
	struct err err;
	char field[JOB_FIELD_MAX];
};
/* Sets je's error (first wins) and its field; returns -1. */
int job_error_set(struct job_error *je, const char *field, enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* What a request may name.  Local paths must resolve inside allow_roots;
 * s3:// locations must start with one of allow_s3 (whole path components),
 * and options.s3 is checked by s3_options_check, which the S3 support sets
 * (NULL: requests naming options.s3 are refused).  state_dir is never a
 * destination. */
struct job_policy {
	const struct strvec *allow_roots;	 /* resolved directories */
	const struct strvec *allow_s3;		 /* "s3://bucket[/prefix]" */
	const struct strvec *allow_s3_endpoints; /* endpoint URLs options.s3 may name */
	const char *state_dir;			 /* resolved */
	int (*s3_options_check)(const json_t *s3, const struct job_policy *p, struct job_error *je);
	/* Lays a job's options.s3 (NULL when it has none) over the settings
	 * its stores are opened with; NULL: nothing to apply. */
	int (*s3_options_apply)(const json_t *s3, struct s3_settings *settings, struct err *e);
};

/* A validated request. */
struct job_spec {
	char *source, *destination; /* as given */
	enum layout to;
	json_t *options;		/* normalised: every option, defaults filled in */
	json_t *labels;			/* object of strings */
	struct convert_options convert; /* derived; exclude points into options */
	bool dry_run;
	/* options.finalize: finish a partitioned conversion in destination
	 * (partition.h); source and to are optional then (NULL / not given). */
	bool finalize;
	bool to_given;
};

/* Validates a request body (unknown_field, missing_field, invalid_field,
 * invalid_size; je->field names the member).  Does not look at the
 * filesystem. */
int job_spec_parse(const json_t *body, struct job_spec *spec, struct job_error *je);
void job_spec_fini(struct job_spec *spec);
/* The request as the API shows it: {"source","destination","to","options","labels"}
 * (options.s3 left out: it may hold credentials). */
json_t *job_spec_json(const struct job_spec *spec, bool for_record);

/* Checks source and destination against the policy and resolves them.
 * Codes: forbidden_path, forbidden_s3_location, forbidden_s3_endpoint,
 * invalid_field (relative path, destination overlapping the source, a
 * control character (C0, DEL, C1) in a location or a label's value, which
 * would reach the terminals that show the job; checked here, not when a
 * record is read, so that jobs accepted before still load). */
int job_spec_check(const struct job_spec *spec, const struct job_policy *p, char **resolved_source,
		   char **resolved_destination, struct job_error *je);

/* For finalize_options.check_source: refuses a manifest's source outside
 * the policy's allowed roots and prefixes (arg is the job_policy).
 * Codes: forbidden_path, forbidden_s3_location. */
int job_policy_check_source(const char *source, void *policy, struct err *e);

#endif
