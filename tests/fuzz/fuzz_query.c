/* SPDX-License-Identifier: MIT */
/*
 * fuzz_query: the query parameters of the API's listings.  The input is a
 * query string (what follows '?' in the URL, up to a NUL); it is split at
 * '&' and '=' and percent-decoded with MHD_http_unescape, as libmicrohttpd
 * hands the arguments to the handlers, then validated as the query of GET
 * /v1/jobs and of GET /v1/jobs/{id}/tensors.  What is accepted must lie
 * within the documented ranges.
 *
 * libFuzzer options: -max_len=4096 -dict=tests/fuzz/query.dict
 */
#include <microhttpd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/api_query.h"
#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "fuzz.h"

#define ARGS_MAX 256

static void decode(char *s)
{
	char *p;

	for (p = s; *p; p++)
		if (*p == '+')
			*p = ' ';
	MHD_http_unescape(s);
}

static void jobs(const struct api_query_arg *args, size_t n)
{
	struct job_error je = {0};
	struct api_jobs_query q;
	size_t i;
	int rc;

	rc = api_jobs_query_parse(args, n, &q, &je);
	fuzz_check_err("api_jobs_query_parse", rc, &je.err);
	if (rc == 0) {
		if (q.limit < 1 || q.limit > API_LIST_LIMIT_MAX || q.state >= JOB_STATE_COUNT ||
		    q.nlabels > JOB_LABELS_MAX)
			fuzz_fail("api_jobs_query_parse accepted an out-of-range query");
		for (i = 0; i < q.nlabels; i++)
			if (!*q.label_keys[i] || !q.label_values[i])
				fuzz_fail("label filter %zu has no name or value", i);
	}
	api_jobs_query_fini(&q);
}

static void tensors(const struct api_query_arg *args, size_t n)
{
	struct job_error je = {0};
	struct api_tensors_query q;
	int rc;

	rc = api_tensors_query_parse(args, n, &q, &je);
	fuzz_check_err("api_tensors_query_parse", rc, &je.err);
	if (rc == 0 && (q.limit < 1 || q.limit > API_TENSORS_LIMIT_MAX || q.offset > UINT32_MAX))
		fuzz_fail("api_tensors_query_parse accepted an out-of-range query");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct api_query_arg args[ARGS_MAX];
	char *text = malloc(size + 1), *piece, *next, *eq;
	size_t n = 0;

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	for (piece = text; piece && n < ARGS_MAX; piece = next) {
		next = strchr(piece, '&');
		if (next)
			*next++ = '\0';
		if (!*piece)
			continue;
		eq = strchr(piece, '=');
		if (eq)
			*eq++ = '\0';
		decode(piece);
		if (eq)
			decode(eq);
		args[n].name = piece;
		args[n].value = eq;
		n++;
	}
	jobs(args, n);
	tensors(args, n);
	free(text);
	return 0;
}
