/* SPDX-License-Identifier: MIT */
/*
 * api: the daemon's HTTP interface (docs/openapi.yaml) on libmicrohttpd,
 * run by its own pool of polling threads (epoll).  Routes: /healthz,
 * /readyz, /metrics, /v1/version, /v1/jobs[/<id>[/tensors|/events]] and
 * the jobs page (/, /ui/...; ui.h).  Bodies are JSON; errors are
 * {"error": {"code", "message", "field"}} with the catalogue's status.
 * Routes under /v1/ need "Authorization: Bearer TOKEN" when a token is
 * configured (compared in constant time).  Event streams park their
 * connection between events and are woken by api_tick(); so do job
 * submissions while the registry's submission threads read and plan their
 * sources (registry_submit_async), so no polling thread ever waits on
 * storage or compiles an exclude pattern.
 *
 * Hostile clients: a connection that has not sent a whole request
 * (headers and body) within request_timeout seconds of opening or of its
 * previous answer is shut down by api_tick(); one client address holds at
 * most per_ip_limit connections; a request whose body length is ambiguous
 * (RFC 9112, section 6: several Content-Length headers, Content-Length with
 * Transfer-Encoding, a coding other than chunked) is answered 400
 * malformed_request and its connection closed.  An optional health
 * listener, with its own thread and connection budget (64, 8 per address),
 * serves /healthz, /readyz and /metrics (any other route: 404) however
 * busy the main one is.
 *
 * Threads: api_start/api_tick/api_stop from the main thread; the handlers
 * run on libmicrohttpd's threads.
 */
#ifndef CKPTCONV_API_H
#define CKPTCONV_API_H

#include <stdbool.h>
#include <stddef.h>

struct err;
struct registry;
struct exec_pool;
struct job_policy;
struct api;

#define API_BODY_MAX (64 * 1024)

struct api_config {
	int listen_fd;	      /* bound and listening; owned by the api from now on */
	int health_listen_fd; /* the health listener's, likewise, or -1 for none */
	unsigned threads;     /* polling threads */
	unsigned connection_limit;
	unsigned per_ip_limit;	/* connections per client address; 0: no limit */
	double request_timeout; /* seconds to send a whole request; 0: no limit */
	int nice;		/* added to the polling threads' nice value: conversions first */
	const char *token;	/* NULL: no token needed */
	struct registry *reg;
	struct exec_pool *pool;
	const struct job_policy *policy;
};

/* Starts serving.  Code: internal_error. */
int api_start(const struct api_config *c, struct api **out, struct err *e);
/* Wakes event streams that have something to send and shuts down the
 * connections past their request deadline (every ~100 ms). */
void api_tick(struct api *a);
/* Ends the event streams, stops serving and frees the api. */
void api_stop(struct api *a);

/* Whether `header` (an Authorization value) carries `token`, compared in
 * constant time. */
bool api_token_matches(const char *header, const char *token);

#endif
