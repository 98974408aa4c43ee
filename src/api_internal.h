/* SPDX-License-Identifier: MIT */
/*
 * api_internal: what the files of the HTTP interface share, and nothing
 * outside them sees.  api.c holds the server: listeners, connections and
 * their deadlines, the token, routing and the checks made as soon as a
 * request's headers are in; api_respond.c builds the answers; the route
 * handlers are in api_health.c (/healthz, /readyz, /metrics, /v1/version,
 * the jobs page), api_jobs.c (/v1/jobs...) and api_events.c (the event
 * streams).
 *
 * Threads: the handlers and api_respond_* run on libmicrohttpd's polling
 * threads; the lists of the api say which lock protects them.
 */
#ifndef CKPTCONV_API_INTERNAL_H
#define CKPTCONV_API_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "ckptconv/api.h"
#include "ckptconv/job.h"
#include "ckptconv/metrics.h"

/* libmicrohttpd messages remembered to hold back repeats. */
#define MHD_LOG_RECENT 8

/* The api's lists (streams, submissions, connections) are doubly linked
 * through members prev and next; these keep them so, under their lock. */
#define LIST_PUSH(head, node)                  \
	do {                                   \
		(node)->prev = NULL;           \
		(node)->next = (head);         \
		if (head)                      \
			(head)->prev = (node); \
		(head) = (node);               \
	} while (0)
#define LIST_UNLINK(head, node)                            \
	do {                                               \
		if ((node)->prev)                          \
			(node)->prev->next = (node)->next; \
		else                                       \
			(head) = (node)->next;             \
		if ((node)->next)                          \
			(node)->next->prev = (node)->prev; \
	} while (0)

struct stream;
struct create_wait;
struct api;

/* One listening socket and the libmicrohttpd daemon serving it. */
struct listener {
	struct api *api;
	struct MHD_Daemon *daemon;
	bool health_only; /* serves /healthz, /readyz and /metrics only */
};

/* An open connection: when its socket is shut down unless a whole request
 * has arrived. */
struct conn {
	int fd;
	double deadline;	  /* monotonic seconds; 0: none (answering) */
	struct conn *prev, *next; /* protected by api->conns_lock */
};

struct api {
	struct listener main, health; /* health.daemon NULL when not configured */
	bool has_token;
	int nice;
	double request_timeout; /* seconds; 0: none */
	unsigned char token_digest[SHA256_BYTES];
	struct registry *reg;
	struct exec_pool *pool;
	const struct job_policy *policy;

	pthread_mutex_t streams_lock;
	struct stream *streams; /* protected by streams_lock */
	size_t nstreams;
	struct create_wait *waits; /* protected by streams_lock */
	size_t nwaits, waits_unanswered;
	bool stopping;

	pthread_mutex_t conns_lock;
	struct conn *conns; /* protected by conns_lock */
	unsigned long cut;  /* connections cut since the last log line (main thread) */
	double cut_logged_at;

	pthread_mutex_t log_lock;
	struct { /* libmicrohttpd's recent messages; protected by log_lock */
		char text[160];
		double at;
		unsigned long repeated;
	} mhd_log[MHD_LOG_RECENT];
};

struct request {
	enum metrics_route route;
	double started; /* monotonic seconds the headers arrived */
	char id[JOB_ID_LEN + 1];
	bool id_valid;
	bool head;     /* a HEAD request: the answer's headers, never a body */
	bool answered; /* a response was queued before the body was read */
	bool too_large;
	struct buf body;
	struct create_wait *wait; /* a job submission under way */
};

/* A job submission under way: the connection is suspended until a
 * submission thread calls on_submitted, or api_stop gives up on it. */
struct create_wait {
	struct api *api;
	struct MHD_Connection *conn;
	int refs; /* the request's and the submission's; protected by streams_lock */
	bool done, orphaned;
	struct job *job; /* the outcome: a job, or NULL and je */
	bool existing;
	struct job_error je;
	struct create_wait *prev, *next; /* in api->waits, protected by streams_lock */
};

struct stream {
	struct api *api;
	struct job *job;
	struct MHD_Connection *conn;
	struct buf buf; /* the event being sent */
	size_t sent;
	double next_progress, next_keepalive;
	bool suspended, final_sent;
	struct stream *prev, *next; /* protected by api->streams_lock */
};

/* ---- api_respond.c: answers ------------------------------------------------ */

/* Queues resp (taken over) with status, and counts the answer in the
 * metrics of req's route. */
enum MHD_Result api_queue(struct MHD_Connection *c, struct request *req, unsigned status,
			  struct MHD_Response *resp);
/* Answers with `data` (taken over). */
enum MHD_Result api_respond_data(struct MHD_Connection *c, struct request *req, unsigned status,
				 const char *content_type, char *data, size_t len,
				 const char *retry_after, const char *location);
/* Answers with `body` (a reference taken over) and an optional Location. */
enum MHD_Result api_respond_json(struct MHD_Connection *c, struct request *req, unsigned status,
				 json_t *body, const char *location);
/* Answers {"error": {"code", "message", "field"}} with the catalogue's
 * status for the code (and Retry-After for the codes that have one). */
enum MHD_Result api_respond_error(struct MHD_Connection *c, struct request *req,
				  const struct job_error *je);
enum MHD_Result api_respond_errorf(struct MHD_Connection *c, struct request *req, const char *field,
				   enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* ---- api.c ---------------------------------------------------------------------- */

/* SHA-256 of data. */

/* ---- the route handlers ---------------------------------------------------------- */

enum MHD_Result api_handle_healthz(struct api *a, struct MHD_Connection *c, struct request *req);
enum MHD_Result api_handle_readyz(struct api *a, struct MHD_Connection *c, struct request *req);
enum MHD_Result api_handle_metrics(struct api *a, struct MHD_Connection *c, struct request *req);
enum MHD_Result api_handle_version(struct api *a, struct MHD_Connection *c, struct request *req);
enum MHD_Result api_handle_ui(struct api *a, struct MHD_Connection *c, struct request *req,
			      const char *url);

enum MHD_Result api_handle_create(struct api *a, struct MHD_Connection *c, struct request *req);
enum MHD_Result api_handle_list(struct api *a, struct MHD_Connection *c, struct request *req);
enum MHD_Result api_handle_get(struct api *a, struct MHD_Connection *c, struct request *req,
			       const char *url);
enum MHD_Result api_handle_delete(struct api *a, struct MHD_Connection *c, struct request *req,
				  const char *url);
enum MHD_Result api_handle_tensors(struct api *a, struct MHD_Connection *c, struct request *req,
				   const char *url);
/* Answers a resumed job submission. */
enum MHD_Result api_answer_submission(struct api *a, struct MHD_Connection *c, struct request *req);
/* Drops a reference to a submission's wait (streams_lock held); true when
 * it was the last, and api_wait_free is due. */
bool api_wait_release(struct create_wait *w);
void api_wait_free(struct create_wait *w);
/* The job req names (a new reference), or NULL. */
struct job *api_lookup(struct api *a, struct request *req);
enum MHD_Result api_job_not_found(struct MHD_Connection *c, struct request *req, const char *url);

enum MHD_Result api_handle_events(struct api *a, struct MHD_Connection *c, struct request *req,
				  const char *url);
/* Whether a parked stream has something to send now (streams_lock held). */
bool api_stream_due(const struct stream *s, double now);

#endif
