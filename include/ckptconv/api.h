/* SPDX-License-Identifier: MIT */
/*
 * api: the daemon's HTTP interface (docs/openapi.yaml) on libmicrohttpd,
 * run by its own pool of polling threads (epoll).  Routes: /healthz,
 * /readyz, /metrics, /v1/version, /v1/jobs[/<id>[/tensors|/events]] and
 * the jobs page (/, /ui/...; ui.h).  Bodies are JSON; errors are
 * {"error": {"code", "message", "field"}} with the catalogue's status.
 * Routes under /v1/ need "Authorization: Bearer TOKEN" when a token is
 * configured (compared in constant time).  Event streams
 * park their connection between events and are woken by api_tick().
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
	int listen_fd;	  /* bound and listening; owned by the api from now on */
	unsigned threads; /* polling threads */
	unsigned connection_limit;
	int nice;	   /* added to the polling threads' nice value: conversions first */
	const char *token; /* NULL: no token needed */
	struct registry *reg;
	struct exec_pool *pool;
	const struct job_policy *policy;
};

/* Starts serving.  Code: internal_error. */
int api_start(const struct api_config *c, struct api **out, struct err *e);
/* Wakes event streams that have something to send (every ~100 ms). */
void api_tick(struct api *a);
/* Ends the event streams, stops serving and frees the api. */
void api_stop(struct api *a);

/* Whether `header` (an Authorization value) carries `token`, compared in
 * constant time. */
bool api_token_matches(const char *header, const char *token);

#endif
