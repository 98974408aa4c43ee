/* SPDX-License-Identifier: MIT */
/*
 * api_query: validation of the listings' query parameters.  Numbers are
 * whole decimal numbers within their range (no sign, no spaces, no
 * suffix); states are the names the API prints.  The error of the first
 * parameter at fault is reported, in the order state, limit/offset, cursor,
 * label.
 */
#include <stdlib.h>
#include <string.h>

#include "ckptconv/api_query.h"
#include "ckptconv/cli.h"
#include "ckptconv/exec.h"
#include "ckptconv/util.h"

/* The value of the first argument named `name`, or NULL. */
static const char *arg_value(const struct api_query_arg *args, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(args[i].name, name) == 0)
			return args[i].value;
	return NULL;
}

/* A whole decimal number in [min, max] (cli_parse_uint's rule), or dflt
 * when absent; -1 when present but invalid. */
static int number(const struct api_query_arg *args, size_t n, const char *name, uint64_t min,
		  uint64_t max, uint64_t dflt, uint64_t *out)
{
	const char *text = arg_value(args, n, name);
	unsigned long long v;

	*out = dflt;
	if (!text)
		return 0;
	if (cli_parse_uint(text, min, max, &v) < 0)
		return -1;
	*out = v;
	return 0;
}

static int tensor_state_parse(const char *name)
{
	int s;

	for (s = TENSOR_PENDING; s <= TENSOR_FAILED; s++)
		if (strcmp(tensor_state_name((enum tensor_state)s), name) == 0)
			return s;
	return -1;
}

/* label=NAME:VALUE; false when malformed or one too many. */
static bool add_label(struct api_jobs_query *q, const char *value)
{
	const char *colon;
	char *copy;

	if (!value || !(colon = strchr(value, ':')) || colon == value ||
	    q->nlabels == JOB_LABELS_MAX)
		return false;
	copy = xstrdup(value);
	copy[colon - value] = '\0';
	q->storage[q->nlabels] = copy;
	q->label_keys[q->nlabels] = copy;
	q->label_values[q->nlabels] = copy + (colon - value) + 1;
	q->nlabels++;
	return true;
}

int api_jobs_query_parse(const struct api_query_arg *args, size_t n, struct api_jobs_query *out,
			 struct job_error *je)
{
	const char *state = arg_value(args, n, "state");
	size_t i;

	memset(out, 0, sizeof(*out));
	out->state = -1;
	if (state && (out->state = job_state_parse(state)) < 0)
		return job_error_set(
			je, "state", ERR_INVALID_FIELD,
			"state must be one of queued, running, succeeded, failed, cancelled");
	if (number(args, n, "limit", 1, API_LIST_LIMIT_MAX, API_LIST_LIMIT_DEFAULT, &out->limit) <
	    0)
		return job_error_set(je, "limit", ERR_INVALID_FIELD,
				     "limit must be a number from 1 to %d", API_LIST_LIMIT_MAX);
	if (number(args, n, "cursor", 1, UINT64_MAX, 0, &out->cursor) < 0)
		return job_error_set(je, "cursor", ERR_INVALID_FIELD,
				     "cursor must be a next_cursor value of an earlier page");
	for (i = 0; i < n; i++)
		if (strcmp(args[i].name, "label") == 0 && !add_label(out, args[i].value))
			return job_error_set(
				je, "label", ERR_INVALID_FIELD,
				"label filters are written label=NAME:VALUE (at most %d)",
				JOB_LABELS_MAX);
	return 0;
}

void api_jobs_query_fini(struct api_jobs_query *q)
{
	size_t i;

	for (i = 0; i < q->nlabels; i++)
		free(q->storage[i]);
	memset(q, 0, sizeof(*q));
}

int api_tensors_query_parse(const struct api_query_arg *args, size_t n,
			    struct api_tensors_query *out, struct job_error *je)
{
	const char *state = arg_value(args, n, "state");

	memset(out, 0, sizeof(*out));
	out->state = -1;
	if (state && (out->state = tensor_state_parse(state)) < 0)
		return job_error_set(je, "state", ERR_INVALID_FIELD,
				     "state must be one of pending, running, done, failed");
	if (number(args, n, "offset", 0, UINT32_MAX, 0, &out->offset) < 0)
		return job_error_set(je, "offset", ERR_INVALID_FIELD,
				     "offset must be a number of 0 or more");
	if (number(args, n, "limit", 1, API_TENSORS_LIMIT_MAX, API_TENSORS_LIMIT_DEFAULT,
		   &out->limit) < 0)
		return job_error_set(je, "limit", ERR_INVALID_FIELD,
				     "limit must be a number from 1 to %d", API_TENSORS_LIMIT_MAX);
	return 0;
}
