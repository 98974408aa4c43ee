/* SPDX-License-Identifier: MIT */
/*
 * api_query: the query parameters of the API's listings (docs/openapi.yaml),
 * validated from the arguments libmicrohttpd split and percent-decoded out
 * of the request's query string.  Pure functions over those strings: no
 * I/O, no locks; any thread.
 */
#ifndef CKPTCONV_API_QUERY_H
#define CKPTCONV_API_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "ckptconv/job.h"

#define API_LIST_LIMIT_DEFAULT 50
#define API_LIST_LIMIT_MAX 1000
#define API_TENSORS_LIMIT_DEFAULT 1000
#define API_TENSORS_LIMIT_MAX 10000

/* One argument of a query string, in the order sent; value is NULL for a
 * name without '='.  When a name repeats, the first one counts (as
 * MHD_lookup_connection_value answers), except for label. */
struct api_query_arg {
	const char *name;
	const char *value;
};

/* GET /v1/jobs: state (a job state name), limit (1 to API_LIST_LIMIT_MAX,
 * default API_LIST_LIMIT_DEFAULT), cursor (a next_cursor, >= 1; 0 = the
 * first page) and label=NAME:VALUE filters, repeatable up to JOB_LABELS_MAX
 * (NAME non-empty; VALUE after the first ':'). */
struct api_jobs_query {
	int state; /* enum job_state, -1: any */
	uint64_t limit;
	uint64_t cursor;
	size_t nlabels;
	const char *label_keys[JOB_LABELS_MAX];	  /* point into storage */
	const char *label_values[JOB_LABELS_MAX]; /* point into storage */
	char *storage[JOB_LABELS_MAX];		  /* owned */
};

/* Fills *out (api_jobs_query_fini releases it, also after an error) from
 * `n` arguments.  Code: invalid_field, je->field naming the parameter
 * (state, limit, cursor or label). */
int api_jobs_query_parse(const struct api_query_arg *args, size_t n, struct api_jobs_query *out,
			 struct job_error *je);
void api_jobs_query_fini(struct api_jobs_query *q);

/* GET /v1/jobs/{id}/tensors: state (a tensor state name), offset (0 to
 * UINT32_MAX, default 0) and limit (1 to API_TENSORS_LIMIT_MAX, default
 * API_TENSORS_LIMIT_DEFAULT). */
struct api_tensors_query {
	int state; /* enum tensor_state, -1: any */
	uint64_t offset;
	uint64_t limit;
};

/* Fills *out from `n` arguments.  Code: invalid_field, je->field naming the
 * parameter. */
int api_tensors_query_parse(const struct api_query_arg *args, size_t n,
			    struct api_tensors_query *out, struct job_error *je);

#endif
