/* SPDX-License-Identifier: MIT */
/*
 * metrics: counters kept as atomics (no lock on the request path) and
 * rendered on scrape together with gauges read from the registry and the
 * exec pool.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/metrics.h"
#include "ckptconv/registry.h"

static const struct {
	const char *method, *path;
} routes[ROUTE_COUNT] = {
	{"GET", "/healthz"},
	{"GET", "/readyz"},
	{"GET", "/metrics"},
	{"GET", "/v1/version"},
	{"POST", "/v1/jobs"},
	{"GET", "/v1/jobs"},
	{"GET", "/v1/jobs/{id}"},
	{"DELETE", "/v1/jobs/{id}"},
	{"GET", "/v1/jobs/{id}/tensors"},
	{"GET", "/v1/jobs/{id}/events"},
	{"GET", "/ui"},
	{"any", "other"},
};

/* Status codes tracked one by one; anything else is counted as "other". */
static const unsigned tracked_status[] = {200, 201, 202, 204, 304, 400, 401, 403, 404,
					  405, 409, 413, 415, 422, 429, 500, 503, 507};
#define NSTATUS (sizeof(tracked_status) / sizeof(tracked_status[0]) + 1)

static _Atomic uint64_t http_requests[ROUTE_COUNT][NSTATUS];

/* Upper bounds (seconds) of the HTTP latency histogram's buckets. */
static const double latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					 0.05,	 0.1,	0.25,	0.5,   1,    2.5};
#define NLATENCY (sizeof(latency_buckets) / sizeof(latency_buckets[0]))

static _Atomic uint64_t latency_counts[ROUTE_COUNT][NLATENCY + 1];
static _Atomic uint64_t latency_sum_us[ROUTE_COUNT];

/* Counters by error code, indexed by enum err_code (slot ERR_NONE unused);
 * an out-of-range code counts as internal_error. */
enum error_series { ERRORS_API, ERRORS_JOBS, ERRORS_COUNT };
static _Atomic uint64_t error_counts[ERRORS_COUNT][ERR_COUNT];

/* Upper bounds (seconds) of the job duration histogram's buckets. */
static const double buckets[] = {1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static _Atomic uint64_t duration_counts[JOB_STATE_COUNT][NBUCKETS + 1];
static _Atomic uint64_t duration_sum_ms[JOB_STATE_COUNT];

const char *metrics_route_name(enum metrics_route r)
{
	return (unsigned)r < ROUTE_COUNT ? routes[r].path : "other";
}

void metrics_http_observe(enum metrics_route route, unsigned status, double seconds)
{
	size_t i, b;

	if ((unsigned)route >= ROUTE_COUNT)
		route = ROUTE_OTHER;
	for (i = 0; i < NSTATUS - 1; i++)
		if (tracked_status[i] == status)
			break;
	atomic_fetch_add_explicit(&http_requests[route][i], 1, memory_order_relaxed);
	if (!(seconds > 0))
		seconds = 0;
	for (b = 0; b < NLATENCY; b++)
		if (seconds <= latency_buckets[b])
			break;
	atomic_fetch_add_explicit(&latency_counts[route][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&latency_sum_us[route], (uint64_t)(seconds * 1e6),
				  memory_order_relaxed);
}

/* The counter slot of `code`. */
static size_t error_slot(enum err_code code)
{
	if (code <= ERR_NONE || code >= ERR_COUNT)
		code = ERR_INTERNAL_ERROR;
	return (size_t)code;
}

void metrics_api_error(enum err_code code)
{
	atomic_fetch_add_explicit(&error_counts[ERRORS_API][error_slot(code)], 1,
				  memory_order_relaxed);
}

void metrics_job_finished(enum job_state state, double seconds, enum err_code code)
{
	size_t b;

	if ((unsigned)state >= JOB_STATE_COUNT)
		return;
	if (seconds < 0)
		seconds = 0;
	for (b = 0; b < NBUCKETS; b++)
		if (seconds <= buckets[b])
			break;
	atomic_fetch_add(&duration_counts[state][b], 1);
	atomic_fetch_add(&duration_sum_ms[state], (uint64_t)(seconds * 1000.0));
	if (state == JOB_FAILED)
		atomic_fetch_add(&error_counts[ERRORS_JOBS][error_slot(code)], 1);
}

static void render_jobs(struct buf *b, const struct registry_stats *s)
{
	int st;

	buf_puts(b, "# HELP ckptconv_jobs Jobs known to the service, by state.\n"
		    "# TYPE ckptconv_jobs gauge\n");
	for (st = 0; st < JOB_STATE_COUNT; st++)
		buf_printf(b, "ckptconv_jobs{state=\"%s\"} %zu\n",
			   job_state_name((enum job_state)st), s->jobs[st]);
	buf_printf(b,
		   "# HELP ckptconv_queue_length Jobs waiting for a free slot.\n"
		   "# TYPE ckptconv_queue_length gauge\n"
		   "ckptconv_queue_length %zu\n"
		   "# HELP ckptconv_queue_capacity Queued jobs beyond which submissions are "
		   "refused (--max-queued).\n"
		   "# TYPE ckptconv_queue_capacity gauge\n"
		   "ckptconv_queue_capacity %zu\n",
		   s->queue_length, s->queue_capacity);
	buf_printf(b,
		   "# HELP ckptconv_tensors_converted_total Output tensors written since start.\n"
		   "# TYPE ckptconv_tensors_converted_total counter\n"
		   "ckptconv_tensors_converted_total %llu\n",
		   (unsigned long long)s->tensors_converted);
	buf_printf(
		b,
		"# HELP ckptconv_bytes_converted_total Output tensor bytes written since start.\n"
		"# TYPE ckptconv_bytes_converted_total counter\n"
		"ckptconv_bytes_converted_total %llu\n",
		(unsigned long long)s->bytes_converted);
	buf_printf(b,
		   "# HELP ckptconv_job_stall_seconds Longest time a running job has gone "
		   "without converting a byte (0 when none runs).\n"
		   "# TYPE ckptconv_job_stall_seconds gauge\n"
		   "ckptconv_job_stall_seconds %.3f\n",
		   s->longest_stall_seconds);
}

static void render_errors(struct buf *b)
{
	static const char *const names[ERRORS_COUNT] = {"ckptconv_api_errors_total",
							"ckptconv_job_failures_total"};
	static const char *const help[ERRORS_COUNT] = {
		"Error answers of the API, by error code.",
		"Jobs that failed, by error code.",
	};
	size_t i;
	int k;

	for (k = 0; k < ERRORS_COUNT; k++) {
		buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", names[k], help[k], names[k]);
		for (i = ERR_NONE + 1; i < ERR_COUNT; i++) {
			uint64_t count =
				atomic_load_explicit(&error_counts[k][i], memory_order_relaxed);

			if (count)
				buf_printf(b, "%s{code=\"%s\"} %llu\n", names[k],
					   err_name((enum err_code)i), (unsigned long long)count);
		}
	}
}

static void render_durations(struct buf *b)
{
	int st;
	size_t i;

	buf_puts(b, "# HELP ckptconv_job_duration_seconds Running time of finished jobs.\n"
		    "# TYPE ckptconv_job_duration_seconds histogram\n");
	for (st = JOB_SUCCEEDED; st < JOB_STATE_COUNT; st++) {
		const char *name = job_state_name((enum job_state)st);
		uint64_t cumulative = 0;

		for (i = 0; i < NBUCKETS; i++) {
			cumulative += atomic_load(&duration_counts[st][i]);
			buf_printf(
				b,
				"ckptconv_job_duration_seconds_bucket{state=\"%s\",le=\"%g\"} %llu\n",
				name, buckets[i], (unsigned long long)cumulative);
		}
		cumulative += atomic_load(&duration_counts[st][NBUCKETS]);
		buf_printf(b,
			   "ckptconv_job_duration_seconds_bucket{state=\"%s\",le=\"+Inf\"} %llu\n",
			   name, (unsigned long long)cumulative);
		buf_printf(b, "ckptconv_job_duration_seconds_sum{state=\"%s\"} %.3f\n", name,
			   (double)atomic_load(&duration_sum_ms[st]) / 1000.0);
		buf_printf(b, "ckptconv_job_duration_seconds_count{state=\"%s\"} %llu\n", name,
			   (unsigned long long)cumulative);
	}
}

static void render_http(struct buf *b)
{
	size_t r, i;

	buf_puts(
		b,
		"# HELP ckptconv_http_requests_total HTTP requests answered, by route and status.\n"
		"# TYPE ckptconv_http_requests_total counter\n");
	for (r = 0; r < ROUTE_COUNT; r++) {
		for (i = 0; i < NSTATUS; i++) {
			uint64_t n =
				atomic_load_explicit(&http_requests[r][i], memory_order_relaxed);
			char code[8];

			if (!n)
				continue;
			if (i < NSTATUS - 1)
				snprintf(code, sizeof(code), "%u", tracked_status[i]);
			else
				snprintf(code, sizeof(code), "other");
			buf_printf(
				b,
				"ckptconv_http_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %llu\n",
				routes[r].method, routes[r].path, code, (unsigned long long)n);
		}
	}
}

static void render_latency(struct buf *b)
{
	size_t r, i;

	buf_puts(b, "# HELP ckptconv_http_request_duration_seconds Time from a request's "
		    "headers to its answer, by route.\n"
		    "# TYPE ckptconv_http_request_duration_seconds histogram\n");
	for (r = 0; r < ROUTE_COUNT; r++) {
		uint64_t cumulative = 0;

		for (i = 0; i <= NLATENCY; i++)
			cumulative +=
				atomic_load_explicit(&latency_counts[r][i], memory_order_relaxed);
		if (!cumulative)
			continue;
		cumulative = 0;
		for (i = 0; i < NLATENCY; i++) {
			cumulative +=
				atomic_load_explicit(&latency_counts[r][i], memory_order_relaxed);
			buf_printf(b,
				   "ckptconv_http_request_duration_seconds_bucket{route=\"%s\","
				   "le=\"%g\"} %llu\n",
				   routes[r].path, latency_buckets[i],
				   (unsigned long long)cumulative);
		}
		cumulative +=
			atomic_load_explicit(&latency_counts[r][NLATENCY], memory_order_relaxed);
		buf_printf(
			b,
			"ckptconv_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
			"ckptconv_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
			"ckptconv_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
			routes[r].path, (unsigned long long)cumulative, routes[r].path,
			(double)atomic_load_explicit(&latency_sum_us[r], memory_order_relaxed) /
				1e6,
			routes[r].path, (unsigned long long)cumulative);
	}
}

char *metrics_render(struct registry *reg, struct exec_pool *pool, size_t *len)
{
	struct registry_stats s;
	struct buf b = {0};

	registry_stats(reg, &s);
	render_jobs(&b, &s);
	render_durations(&b);
	render_errors(&b);
	render_http(&b);
	render_latency(&b);
	buf_printf(&b,
		   "# HELP ckptconv_workers Conversion worker threads.\n"
		   "# TYPE ckptconv_workers gauge\n"
		   "ckptconv_workers %u\n"
		   "# HELP ckptconv_workers_busy Worker threads working on a piece now.\n"
		   "# TYPE ckptconv_workers_busy gauge\n"
		   "ckptconv_workers_busy %u\n",
		   pool ? exec_pool_threads(pool) : 0, pool ? exec_pool_busy(pool) : 0);
	buf_printf(&b,
		   "# HELP ckptconv_ready Whether the service accepts jobs.\n"
		   "# TYPE ckptconv_ready gauge\n"
		   "ckptconv_ready %d\n",
		   registry_ready(reg, NULL) ? 1 : 0);
	*len = b.len;
	return b.data;
}
