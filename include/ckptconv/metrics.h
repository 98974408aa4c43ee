/* SPDX-License-Identifier: MIT */
/*
 * metrics: the daemon's Prometheus exposition (text format 0.0.4): jobs by
 * state, tensors and bytes converted, a histogram of job durations, failed
 * jobs and API error answers by error code (docs/errors.md), HTTP requests
 * by route and status code with a histogram of their latency, busy workers,
 * the queue length and capacity, and the longest time a running job has
 * converted nothing.  docs/operations.md lists every series.  Counters are
 * process-wide atomics: any thread may observe.
 */
#ifndef CKPTCONV_METRICS_H
#define CKPTCONV_METRICS_H

#include "ckptconv/job.h"

struct registry;
struct exec_pool;

enum metrics_route {
	ROUTE_HEALTHZ = 0,
	ROUTE_READYZ,
	ROUTE_METRICS,
	ROUTE_VERSION,
	ROUTE_JOBS_CREATE,
	ROUTE_JOBS_LIST,
	ROUTE_JOB_GET,
	ROUTE_JOB_DELETE,
	ROUTE_JOB_TENSORS,
	ROUTE_JOB_EVENTS,
	ROUTE_UI, /* the jobs page and its assets: /, /ui/... */
	ROUTE_OTHER,
	ROUTE_COUNT
};
/* "/v1/jobs/{id}" style names, as used in the route label. */
const char *metrics_route_name(enum metrics_route r);

/* A request on `route` was answered with `status`, `seconds` after its
 * headers arrived. */
void metrics_http_observe(enum metrics_route route, unsigned status, double seconds);
/* An error answer of the API with catalogue code `code` (err.h). */
void metrics_api_error(enum err_code code);
/* A job reached a final state after `seconds` of running; `code` is the
 * error code of a failed job (NULL otherwise; an unknown code counts as
 * internal_error). */
void metrics_job_finished(enum job_state state, double seconds, enum err_code code);

/* The whole exposition; caller frees. */
char *metrics_render(struct registry *reg, struct exec_pool *pool, size_t *len);

#endif
