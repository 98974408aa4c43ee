/* SPDX-License-Identifier: MIT */
/*
 * client: the command line's side of the daemon's HTTP API
 * (docs/openapi.yaml) on libcurl: JSON requests with the bearer token, and
 * a job's Server-Sent Events stream (WHATWG HTML, "Server-sent events",
 * event stream interpretation) delivered event by event.  An error answer
 * of the daemon becomes the caller's struct err with the daemon's code
 * (docs/errors.md) and message.  Proxies from the environment (http_proxy,
 * no_proxy) are honoured, as by curl.
 *
 * Threads: a client is used by one thread at a time.
 */
#ifndef CKPTCONV_CLIENT_H
#define CKPTCONV_CLIENT_H

#include <jansson.h>
#include <stdbool.h>

struct err;
struct client;

/* A client of the daemon at `server` (an http:// or https:// URL, with
 * or without a trailing slash), sending `token` (copied; NULL: none) as
 * "Authorization: Bearer".  Codes: usage_error (not an http(s) URL),
 * internal_error (libcurl could not start). */
int client_new(const char *server, const char *token, struct client **out, struct err *e);
/* Frees c and wipes its copy of the token; NULL is a no-op. */
void client_free(struct client *c);

/* One request: `method` on `path` ("/v1/jobs?state=running"), with `body`
 * (may be NULL) sent as application/json and an Idempotency-Key header
 * when `idempotency_key` is not NULL.  On a 2xx answer *status is its
 * status and *answer its JSON body (NULL for 204; the caller's reference).
 * On a 4xx/5xx answer *status is set and e holds the daemon's error (its
 * code when the catalogue knows it, its field appended to the message).
 * Codes: the daemon's, server_unreachable (no answer within 60 s),
 * server_bad_response (not JSON, or an answer over 64 MiB: a page of
 * 10,000 tensors is a few MB). */
int client_call(struct client *c, const char *method, const char *path, const json_t *body,
		const char *idempotency_key, long *status, json_t **answer, struct err *e);

/* Called for each event of a stream with its name ("progress", "state")
 * and its data parsed as JSON (borrowed for the call).  Returns 0 to go on,
 * non-zero to stop following. */
typedef int (*client_event_fn)(void *ctx, const char *event, json_t *data);

/* Follows the event stream at `path` until it ends, `fn` asks to stop, or
 * it fails.  Returns 0 when the stream ended or fn stopped it.  A stream
 * silent for 60 s (the daemon sends a keepalive every 15 s) counts as
 * broken.  Codes: as client_call. */
int client_follow(struct client *c, const char *path, client_event_fn fn, void *ctx, struct err *e);

/* A finished job's "error" member ({"code", "message", "tensor"}) as e:
 * the catalogue's code (server_bad_response for one it does not know),
 * the message and the tensor.  Returns -1 when the job has an error (e
 * set), 0 when it has none. */
int client_job_error(const json_t *job, struct err *e);

/* Whether `job` has the shape of docs/openapi.yaml's Job, as far as the
 * client reads it: an object whose id and state are strings, state one
 * of the job states, and whose other members, when present, have their
 * types (labels an object of strings; progress, result and error objects
 * whose members have theirs).  `prefix` is put before the field's name in
 * the message ("" for an answer that is the job, "jobs[3]." for one in a
 * page).  Returns 0, or -1 with e set: server_bad_response naming the
 * first field at fault ("the answer's state is an array, not a string").
 * Members it does not know are left alone. */
int client_check_job(const json_t *job, const char *prefix, struct err *e);
/* Whether `page` has the shape of a JobList: an object whose jobs are an
 * array of jobs (each as client_check_job) and whose next_cursor, when
 * present, is a string or null.  Codes: as client_check_job. */
int client_check_page(const json_t *page, struct err *e);

#endif
