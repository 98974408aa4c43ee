/* SPDX-License-Identifier: MIT */
/*
 * api: routes and handlers on libmicrohttpd.  A request is routed when its
 * headers arrive (so a wrong token, a wrong media type or an oversized body
 * is answered before the body is read), its body is collected up to
 * API_BODY_MAX, and the handler answers with JSON built by jansson, or,
 * for the per-tensor listing, by copying precomputed fragments.  Server-Sent
 * Events streams suspend their connection whenever they have nothing to
 * send; the main loop resumes them through api_tick() when an event is due,
 * so no polling thread ever blocks.  A new job's connection is suspended
 * the same way while a submission thread of the registry reads and plans
 * its source, and resumed with the outcome.
 *
 * Slow or hostile clients: each connection must deliver a whole request
 * (headers and body) within the request timeout of opening or of its
 * previous answer, else the main loop shuts its socket down; one client
 * address may hold at most so many connections; a request whose body
 * length is ambiguous is refused and its connection closed; and an
 * optional second listener, with its own thread and connection budget,
 * serves /healthz, /readyz and /metrics whatever the main one suffers.
 */
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ckptconv/api.h"
#include "ckptconv/api_query.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/job.h"
#include "ckptconv/log.h"
#include "ckptconv/metrics.h"
#include "ckptconv/registry.h"
#include "ckptconv/ui.h"

#define PROGRESS_INTERVAL 0.5 /* seconds between progress events */
#define KEEPALIVE_INTERVAL 15.0
#define CONNECTION_MEMORY_LIMIT (64 * 1024)
#define CONNECTION_TIMEOUT 60
#define RETRY_QUEUE_FULL "5"
#define RETRY_DRAINING "30"
#define RETRY_NOT_READY "5"
/* The health listener: one polling thread and its own connection budget. */
#define HEALTH_CONNECTION_LIMIT 64
#define HEALTH_PER_IP_LIMIT 8
/* Seconds between log lines about connections cut at their deadline, and
 * between two lines of one libmicrohttpd message (a flood of refused
 * connections would flood the log). */
#define DEADLINE_LOG_INTERVAL 60.0
#define MHD_LOG_INTERVAL 10.0
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
	unsigned char token_digest[32];
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

/* Whether this polling thread has taken its priority yet. */
static __thread bool thread_prioritised;

/* Lowers the calling polling thread's priority by a->nice, once: under CPU
 * contention the conversions come first, status answers second. */
static void prioritise_thread(const struct api *a)
{
	id_t tid = (id_t)gettid();
	int current;

	thread_prioritised = true;
	if (a->nice <= 0)
		return;
	errno = 0;
	current = getpriority(PRIO_PROCESS, tid);
	if (errno == 0 &&
	    setpriority(PRIO_PROCESS, tid, current + a->nice > 19 ? 19 : current + a->nice) == 0)
		return;
	log_warn("cannot lower the HTTP threads' priority: %s", strerror(errno));
}

struct request {
	enum metrics_route route;
	double started; /* monotonic seconds the headers arrived */
	char id[JOB_ID_LEN + 1];
	bool id_valid;
	bool answered; /* a response was queued before the body was read */
	bool too_large;
	struct job_buf body;
	struct create_wait *wait; /* a job submission under way */
};

/* ---- connections and their deadline ----------------------------------------- */

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct api *a = cls;
	struct conn *k = *socket_context;
	const union MHD_ConnectionInfo *info;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		k = xcalloc(1, sizeof(*k));
		k->fd = info ? info->connect_fd : -1;
		k->deadline = a->request_timeout > 0 ? now_seconds() + a->request_timeout : 0;
		pthread_mutex_lock(&a->conns_lock);
		LIST_PUSH(a->conns, k);
		pthread_mutex_unlock(&a->conns_lock);
		*socket_context = k;
		return;
	}
	if (!k)
		return;
	/* Called before libmicrohttpd closes the socket: once k is off the
	 * list, api_tick can no longer shut its descriptor down. */
	pthread_mutex_lock(&a->conns_lock);
	LIST_UNLINK(a->conns, k);
	pthread_mutex_unlock(&a->conns_lock);
	free(k);
	*socket_context = NULL;
}

/* Starts (waiting for a request) or stops (answering) the connection's
 * deadline. */
static void set_deadline(struct api *a, struct MHD_Connection *c, bool waiting)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *k = info ? info->socket_context : NULL;

	if (!k)
		return;
	pthread_mutex_lock(&a->conns_lock);
	k->deadline = waiting && a->request_timeout > 0 ? now_seconds() + a->request_timeout : 0;
	pthread_mutex_unlock(&a->conns_lock);
}

/* Shuts down the sockets of connections past their deadline: the polling
 * thread then sees the end of the stream and closes the connection. */
static void cut_slow_connections(struct api *a, double now)
{
	struct conn *k;

	pthread_mutex_lock(&a->conns_lock);
	for (k = a->conns; k; k = k->next) {
		if (k->deadline > 0 && now >= k->deadline && k->fd >= 0) {
			shutdown(k->fd, SHUT_RDWR);
			k->deadline = 0;
			a->cut++;
		}
	}
	pthread_mutex_unlock(&a->conns_lock);
	if (a->cut && now - a->cut_logged_at >= DEADLINE_LOG_INTERVAL) {
		json_t *f = json_pack("{s:I, s:f}", "connections", (json_int_t)a->cut,
				      "request_timeout", a->request_timeout);

		log_msg(LOG_WARN, f, "closed %lu connections that sent no whole request in time",
			a->cut);
		json_decref(f);
		a->cut = 0;
		a->cut_logged_at = now;
	}
}

/* ---- helpers ---------------------------------------------------------------- */

static void sha256(const void *data, size_t len, unsigned char out[32])
{
	unsigned int n = 32;

	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

bool api_token_matches(const char *header, const char *token)
{
	unsigned char want[32], got[32];
	const char *given;

	if (!header || !token || strncasecmp(header, "Bearer ", 7) != 0)
		return false;
	for (given = header + 7; *given == ' '; given++)
		;
	sha256(token, strlen(token), want);
	sha256(given, strlen(given), got);
	return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}

static bool authorized(const struct api *a, struct MHD_Connection *c)
{
	const char *header;
	unsigned char got[32];
	const char *given;

	if (!a->has_token)
		return true;
	header = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!header || strncasecmp(header, "Bearer ", 7) != 0)
		return false;
	for (given = header + 7; *given == ' '; given++)
		;
	sha256(given, strlen(given), got);
	return CRYPTO_memcmp(a->token_digest, got, sizeof(got)) == 0;
}

static enum MHD_Result queue(struct MHD_Connection *c, struct request *req, unsigned status,
			     struct MHD_Response *resp)
{
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	rc = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	metrics_http_observe(req->route, status, now_seconds() - req->started);
	if (status >= 500 && status != 503)
		log_msg(LOG_WARN, NULL, "answered %u on %s", status,
			metrics_route_name(req->route));
	return rc;
}

/* The Allow header of a route. */
static const char *allowed_methods(enum metrics_route route)
{
	switch (route) {
	case ROUTE_JOBS_LIST:
	case ROUTE_JOBS_CREATE:
		return "GET, POST";
	case ROUTE_JOB_GET:
	case ROUTE_JOB_DELETE:
		return "GET, DELETE";
	default:
		return "GET";
	}
}

/* Answers with `data` (taken over). */
static enum MHD_Result respond_data(struct MHD_Connection *c, struct request *req, unsigned status,
				    const char *content_type, char *data, size_t len,
				    const char *retry_after, const char *location)
{
	struct MHD_Response *resp;

	resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(data);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (retry_after)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
	if (location)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allowed_methods(req->route));
	return queue(c, req, status, resp);
}

/* Answers with `body` (a reference taken over) and an optional Location. */
static enum MHD_Result respond_json(struct MHD_Connection *c, struct request *req, unsigned status,
				    json_t *body, const char *location)
{
	char *text = json_dumps(body, JSON_COMPACT);
	size_t len;

	json_decref(body);
	if (!text)
		return MHD_NO;
	len = strlen(text);
	text = xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	return respond_data(c, req, status, "application/json", text, len, NULL, location);
}

static const char *retry_after_for(const char *code)
{
	if (strcmp(code, "queue_full") == 0)
		return RETRY_QUEUE_FULL;
	if (strcmp(code, "draining") == 0)
		return RETRY_DRAINING;
	if (strcmp(code, "not_ready") == 0)
		return RETRY_NOT_READY;
	return NULL;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, struct request *req,
				     const struct job_error *je)
{
	const char *code = je->err.code ? je->err.code : "internal_error";
	json_t *error = json_pack("{s:s, s:s}", "code", code, "message",
				  je->err.code ? je->err.msg : "internal error");
	unsigned status = (unsigned)err_http_status(code);
	json_t *body;
	char *text;
	size_t len;

	if (je->field[0])
		json_object_set_new(error, "field", json_string(je->field));
	metrics_api_error(code);
	body = json_pack("{s:o}", "error", error);
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return MHD_NO;
	len = strlen(text);
	text = xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	return respond_data(c, req, status, "application/json", text, len, retry_after_for(code),
			    NULL);
}

static enum MHD_Result respond_errorf(struct MHD_Connection *c, struct request *req,
				      const char *field, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static enum MHD_Result respond_errorf(struct MHD_Connection *c, struct request *req,
				      const char *field, const char *code, const char *fmt, ...)
{
	struct job_error je = {0};
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	job_error_set(&je, field, code, "%s", msg);
	return respond_error(c, req, &je);
}

/* The query string's arguments, as libmicrohttpd decoded them; they point
 * into the connection's memory. */
struct query_args {
	struct api_query_arg *args;
	size_t n;
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct query_args *q = cls;

	(void)kind;
	if (!key)
		return MHD_YES;
	q->args = xrealloc(q->args, (q->n + 1) * sizeof(*q->args));
	q->args[q->n].name = key;
	q->args[q->n].value = value;
	q->n++;
	return MHD_YES;
}

static void query_args_get(struct MHD_Connection *c, struct query_args *q)
{
	memset(q, 0, sizeof(*q));
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, q);
}

/* ---- health, readiness, metrics, version ------------------------------------------ */

static enum MHD_Result handle_healthz(struct api *a, struct MHD_Connection *c, struct request *req)
{
	(void)a;
	return respond_json(c, req, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL);
}

static enum MHD_Result handle_readyz(struct api *a, struct MHD_Connection *c, struct request *req)
{
	const char *why = NULL;

	if (!registry_ready(a->reg, &why))
		return respond_errorf(c, req, "", "not_ready", "not ready: %s",
				      why ? why : "starting");
	return respond_json(c, req, MHD_HTTP_OK, json_pack("{s:s}", "status", "ready"), NULL);
}

static enum MHD_Result handle_metrics(struct api *a, struct MHD_Connection *c, struct request *req)
{
	size_t len;
	char *text = metrics_render(a->reg, a->pool, &len);

	return respond_data(c, req, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
			    len, NULL, NULL);
}

static enum MHD_Result handle_version(struct api *a, struct MHD_Connection *c, struct request *req)
{
	(void)a;
	return respond_json(c, req, MHD_HTTP_OK,
			    json_pack("{s:s, s:s, s:s}", "name", PACKAGE_NAME, "version",
				      PACKAGE_VERSION, "api", "v1"),
			    NULL);
}

/* The jobs page (ui.h); it needs no token, the API calls it makes do. */
static enum MHD_Result handle_ui(struct api *a, struct MHD_Connection *c, struct request *req,
				 const char *url)
{
	unsigned status;
	struct MHD_Response *resp = ui_response(
		url, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH),
		&status);

	(void)a;
	if (!resp)
		return respond_errorf(c, req, "", "not_found", "no route %.200s", url);
	return queue(c, req, status, resp);
}

/* ---- jobs ------------------------------------------------------------------------ */

static bool json_media_type(const char *type)
{
	size_t n = strlen("application/json");

	if (!type || strncasecmp(type, "application/json", n) != 0)
		return false;
	return type[n] == '\0' || type[n] == ';' || type[n] == ' ';
}

/* Printable ASCII, 1 to 255 characters. */
static bool idempotency_key_valid(const char *key)
{
	size_t n = strlen(key);
	size_t i;

	if (n == 0 || n > 255)
		return false;
	for (i = 0; i < n; i++)
		if (key[i] < 0x21 || key[i] > 0x7e)
			return false;
	return true;
}

static void request_digest(const json_t *body, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char d[32];
	char *canonical = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	int i;

	sha256(canonical ? canonical : "", canonical ? strlen(canonical) : 0, d);
	free(canonical);
	for (i = 0; i < 32; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[64] = '\0';
}

static enum MHD_Result answer_created(struct api *a, struct MHD_Connection *c, struct request *req,
				      struct job *j, bool existing)
{
	char location[64];
	json_t *body = registry_job_json(a->reg, j);

	snprintf(location, sizeof(location), "/v1/jobs/%s", j->id);
	job_unref(j);
	return respond_json(c, req, existing ? MHD_HTTP_OK : MHD_HTTP_CREATED, body, location);
}

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

/* Drops a reference (streams_lock held); true when it was the last. */
static bool wait_release(struct create_wait *w)
{
	return --w->refs == 0;
}

static void wait_free(struct create_wait *w)
{
	job_unref(w->job);
	free(w);
}

static void on_submitted(void *arg, struct job *j, bool existing, const struct job_error *je)
{
	struct create_wait *w = arg;
	struct api *a = w->api;
	bool last;

	pthread_mutex_lock(&a->streams_lock);
	w->job = j;
	w->existing = existing;
	if (!j && je)
		w->je = *je;
	w->done = true;
	a->waits_unanswered--;
	if (!w->orphaned)
		MHD_resume_connection(w->conn);
	last = wait_release(w);
	pthread_mutex_unlock(&a->streams_lock);
	if (last)
		wait_free(w);
}

/* Answers a resumed job submission. */
static enum MHD_Result answer_submission(struct api *a, struct MHD_Connection *c,
					 struct request *req)
{
	struct create_wait *w = req->wait;
	struct job_error je = {0};
	struct job *j;
	bool done, existing;

	pthread_mutex_lock(&a->streams_lock);
	done = w->done;
	j = w->job;
	w->job = NULL;
	existing = w->existing;
	je = w->je;
	pthread_mutex_unlock(&a->streams_lock);
	if (!done)
		return respond_errorf(
			c, req, "", "draining",
			"the service stopped before the job was created or refused; "
			"submit it again (with the same Idempotency-Key to find it if "
			"it was created)");
	if (!j)
		return respond_error(c, req, &je);
	return answer_created(a, c, req, j, existing);
}

static enum MHD_Result handle_create(struct api *a, struct MHD_Connection *c, struct request *req)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_error_t jerr;
	json_t *body;
	struct job *prior = NULL;
	struct create_wait *w;
	char *src = NULL, *dst = NULL, digest[65];
	const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	enum MHD_Result rc;
	int submitted;

	if (req->too_large)
		return respond_errorf(c, req, "", "payload_too_large",
				      "the request body is larger than %d bytes", API_BODY_MAX);
	if (key && !idempotency_key_valid(key))
		return respond_errorf(
			c, req, "Idempotency-Key", "invalid_field",
			"Idempotency-Key must be 1 to 255 printable ASCII characters");
	body = json_loadb(req->body.data ? req->body.data : "", req->body.len,
			  JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return respond_errorf(c, req, "", "invalid_json",
				      "the body is not valid JSON: %s (line %d, column %d)",
				      jerr.text, jerr.line, jerr.column);
	request_digest(body, digest);
	if (job_spec_parse(body, &spec, &je) < 0) {
		json_decref(body);
		return respond_error(c, req, &je);
	}
	json_decref(body);
	if (job_spec_check(&spec, a->policy, &src, &dst, &je) < 0) {
		rc = respond_error(c, req, &je);
		goto out;
	}
	/* Reading and planning the source (and compiling the exclude
	 * pattern) happen on a submission thread; this connection waits,
	 * suspended, and the polling thread goes on serving others. */
	w = xcalloc(1, sizeof(*w));
	w->api = a;
	w->conn = c;
	w->refs = 2;
	pthread_mutex_lock(&a->streams_lock);
	if (a->stopping)
		submitted = job_error_set(&je, "", "draining",
					  "the service is shutting down and accepts no new jobs");
	else
		submitted = registry_submit_async(a->reg, &spec, src, dst, key, digest,
						  on_submitted, w, &prior, &je);
	if (submitted == 0) {
		MHD_suspend_connection(c);
		req->wait = w;
		LIST_PUSH(a->waits, w);
		a->nwaits++;
		a->waits_unanswered++;
	}
	pthread_mutex_unlock(&a->streams_lock);
	if (submitted == 0)
		rc = MHD_YES;
	else if (submitted == 1)
		rc = answer_created(a, c, req, prior, true);
	else
		rc = respond_error(c, req, &je);
	if (submitted != 0)
		free(w);
out:
	job_spec_fini(&spec);
	free(src);
	free(dst);
	return rc;
}

static enum MHD_Result handle_list(struct api *a, struct MHD_Connection *c, struct request *req)
{
	struct job_error je = {0};
	struct api_jobs_query q;
	struct registry_filter f;
	struct query_args args;
	enum MHD_Result rc;

	query_args_get(c, &args);
	if (api_jobs_query_parse(args.args, args.n, &q, &je) < 0) {
		rc = respond_error(c, req, &je);
		goto out;
	}
	f.state = q.state;
	f.limit = (size_t)q.limit;
	f.before_seq = q.cursor;
	f.label_keys = q.label_keys;
	f.label_values = q.label_values;
	f.nlabels = q.nlabels;
	rc = respond_json(c, req, MHD_HTTP_OK, registry_list(a->reg, &f), NULL);
out:
	api_jobs_query_fini(&q);
	free(args.args);
	return rc;
}

static struct job *lookup(struct api *a, struct request *req)
{
	return req->id_valid ? registry_get(a->reg, req->id) : NULL;
}

static enum MHD_Result job_not_found(struct MHD_Connection *c, struct request *req, const char *url)
{
	return respond_errorf(c, req, "", "job_not_found", "no job matches %.100s", url);
}

static enum MHD_Result handle_get(struct api *a, struct MHD_Connection *c, struct request *req,
				  const char *url)
{
	struct job *j = lookup(a, req);
	char *text;
	size_t len = 0;

	if (!j)
		return job_not_found(c, req, url);
	text = registry_job_text(a->reg, j, &len);
	job_unref(j);
	if (!text)
		return MHD_NO;
	return respond_data(c, req, MHD_HTTP_OK, "application/json", text, len, NULL, NULL);
}

static enum MHD_Result handle_delete(struct api *a, struct MHD_Connection *c, struct request *req,
				     const char *url)
{
	struct job_error je = {0};
	enum registry_delete_outcome outcome;
	json_t *body = NULL;
	struct MHD_Response *resp;

	if (!req->id_valid)
		return job_not_found(c, req, url);
	if (registry_delete(a->reg, req->id, &outcome, &body, &je) < 0)
		return respond_error(c, req, &je);
	if (outcome == REGISTRY_DELETED) {
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
		return queue(c, req, MHD_HTTP_NO_CONTENT, resp);
	}
	return respond_json(c, req,
			    outcome == REGISTRY_CANCELLING ? MHD_HTTP_ACCEPTED : MHD_HTTP_OK, body,
			    NULL);
}

static enum MHD_Result handle_tensors(struct api *a, struct MHD_Connection *c, struct request *req,
				      const char *url)
{
	struct job_error je = {0};
	struct api_tensors_query q;
	struct job_buf out = {0};
	struct query_args args;
	struct job *j;
	int rc;

	query_args_get(c, &args);
	rc = api_tensors_query_parse(args.args, args.n, &q, &je);
	free(args.args);
	if (rc < 0)
		return respond_error(c, req, &je);
	j = lookup(a, req);
	if (!j)
		return job_not_found(c, req, url);
	registry_tensors(a->reg, j, q.state, (size_t)q.offset, (size_t)q.limit, &out);
	job_unref(j);
	job_buf_append(&out, "\n", 1);
	return respond_data(c, req, MHD_HTTP_OK, "application/json", out.data, out.len, NULL, NULL);
}

/* ---- event streams ---------------------------------------------------------------- */

struct stream {
	struct api *api;
	struct job *job;
	struct MHD_Connection *conn;
	struct job_buf buf; /* the event being sent */
	size_t sent;
	double next_progress, next_keepalive;
	bool suspended, final_sent;
	struct stream *prev, *next; /* protected by api->streams_lock */
};

static void stream_event(struct stream *s, const char *event, json_t *data)
{
	char *text = json_dumps(data, JSON_COMPACT);

	json_decref(data);
	job_buf_printf(&s->buf, "event: %s\ndata: %s\n\n", event, text ? text : "null");
	free(text);
}

/* Builds the next event if one is due (streams_lock held); false if none. */
static bool stream_fill(struct stream *s)
{
	struct registry *reg = s->api->reg;
	enum job_state state = registry_job_state(reg, s->job);
	double now = now_seconds();

	s->buf.len = 0;
	s->sent = 0;
	if (job_state_finished(state)) {
		stream_event(s, "state", registry_job_json(reg, s->job));
		s->final_sent = true;
		return true;
	}
	if (state == JOB_RUNNING && now >= s->next_progress) {
		stream_event(s, "progress", registry_progress_json(reg, s->job));
		s->next_progress = now + PROGRESS_INTERVAL;
		s->next_keepalive = now + KEEPALIVE_INTERVAL;
		return true;
	}
	if (now >= s->next_keepalive) {
		job_buf_puts(&s->buf, ": keepalive\n\n");
		s->next_keepalive = now + KEEPALIVE_INTERVAL;
		return true;
	}
	return false;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct stream *s = cls;
	struct api *a = s->api;
	ssize_t n;

	(void)pos;
	pthread_mutex_lock(&a->streams_lock);
	for (;;) {
		if (s->sent < s->buf.len) {
			size_t len = s->buf.len - s->sent < max ? s->buf.len - s->sent : max;

			memcpy(out, s->buf.data + s->sent, len);
			s->sent += len;
			n = (ssize_t)len;
			break;
		}
		if (s->final_sent || a->stopping) {
			n = MHD_CONTENT_READER_END_OF_STREAM;
			break;
		}
		if (stream_fill(s))
			continue;
		MHD_suspend_connection(s->conn);
		s->suspended = true;
		n = 0;
		break;
	}
	pthread_mutex_unlock(&a->streams_lock);
	return n;
}

static void stream_free(void *cls)
{
	struct stream *s = cls;
	struct api *a = s->api;

	pthread_mutex_lock(&a->streams_lock);
	LIST_UNLINK(a->streams, s);
	a->nstreams--;
	pthread_mutex_unlock(&a->streams_lock);
	job_unref(s->job);
	job_buf_fini(&s->buf);
	free(s);
}

static enum MHD_Result handle_events(struct api *a, struct MHD_Connection *c, struct request *req,
				     const char *url)
{
	struct MHD_Response *resp;
	struct stream *s;
	struct job *j = lookup(a, req);

	if (!j)
		return job_not_found(c, req, url);
	s = xcalloc(1, sizeof(*s));
	s->api = a;
	s->job = j;
	s->conn = c;
	s->next_keepalive = now_seconds() + KEEPALIVE_INTERVAL;
	pthread_mutex_lock(&a->streams_lock);
	LIST_PUSH(a->streams, s);
	a->nstreams++;
	pthread_mutex_unlock(&a->streams_lock);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s,
						 stream_free);
	if (!resp) {
		stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	return queue(c, req, MHD_HTTP_OK, resp);
}

/* Whether a parked stream has something to send now (streams_lock held). */
static bool stream_due(const struct stream *s, double now)
{
	enum job_state state;

	if (s->api->stopping || now >= s->next_keepalive)
		return true;
	state = registry_job_state(s->api->reg, s->job);
	return job_state_finished(state) || (state == JOB_RUNNING && now >= s->next_progress);
}

void api_tick(struct api *a)
{
	double now = now_seconds();
	struct stream *s;

	cut_slow_connections(a, now);
	pthread_mutex_lock(&a->streams_lock);
	for (s = a->streams; s; s = s->next) {
		if (s->suspended && stream_due(s, now)) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
	}
	pthread_mutex_unlock(&a->streams_lock);
}

/* ---- routing ----------------------------------------------------------------------- */

enum method { METHOD_GET, METHOD_POST, METHOD_DELETE, METHOD_OTHER };

static enum method method_of(const char *m)
{
	if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
		return METHOD_GET;
	if (strcmp(m, "POST") == 0)
		return METHOD_POST;
	if (strcmp(m, "DELETE") == 0)
		return METHOD_DELETE;
	return METHOD_OTHER;
}

static bool id_chars_valid(const char *id, size_t len)
{
	size_t i;

	if (len != JOB_ID_LEN)
		return false;
	for (i = 0; i < len; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	return true;
}

/* Routes url; *allowed receives whether the method fits the route. */
static enum metrics_route route_of(const char *url, enum method m, struct request *req,
				   bool *allowed)
{
	const char *rest, *slash;
	size_t idlen;

	*allowed = m == METHOD_GET;
	if (strcmp(url, "/healthz") == 0)
		return ROUTE_HEALTHZ;
	if (strcmp(url, "/readyz") == 0)
		return ROUTE_READYZ;
	if (strcmp(url, "/metrics") == 0)
		return ROUTE_METRICS;
	if (strcmp(url, "/v1/version") == 0)
		return ROUTE_VERSION;
	if (strcmp(url, "/") == 0 || strcmp(url, "/ui") == 0 || strncmp(url, "/ui/", 4) == 0)
		return ROUTE_UI;
	if (strcmp(url, "/v1/jobs") == 0) {
		*allowed = m == METHOD_GET || m == METHOD_POST;
		return m == METHOD_POST ? ROUTE_JOBS_CREATE : ROUTE_JOBS_LIST;
	}
	if (strncmp(url, "/v1/jobs/", 9) != 0)
		return ROUTE_OTHER;
	rest = url + 9;
	slash = strchr(rest, '/');
	idlen = slash ? (size_t)(slash - rest) : strlen(rest);
	if (idlen == 0)
		return ROUTE_OTHER;
	req->id_valid = id_chars_valid(rest, idlen);
	if (req->id_valid) {
		memcpy(req->id, rest, idlen);
		req->id[idlen] = '\0';
	}
	if (!slash) {
		*allowed = m == METHOD_GET || m == METHOD_DELETE;
		return m == METHOD_DELETE ? ROUTE_JOB_DELETE : ROUTE_JOB_GET;
	}
	if (strcmp(slash, "/tensors") == 0)
		return ROUTE_JOB_TENSORS;
	if (strcmp(slash, "/events") == 0)
		return ROUTE_JOB_EVENTS;
	return ROUTE_OTHER;
}

static bool route_needs_token(enum metrics_route r)
{
	return r != ROUTE_HEALTHZ && r != ROUTE_READYZ && r != ROUTE_METRICS && r != ROUTE_UI;
}

/* The headers that say how long a request's body is. */
struct framing {
	unsigned content_length, transfer_encoding;
	bool other_coding; /* a Transfer-Encoding other than exactly "chunked" */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct framing *f = cls;
	size_t n;

	(void)kind;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		f->content_length++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->transfer_encoding++;
		n = value ? strlen(value) : 0;
		while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
			n--;
		if (n != 7 || strncasecmp(value, "chunked", 7) != 0)
			f->other_coding = true;
	}
	return MHD_YES;
}

/* Why the request's body length is ambiguous (RFC 9112, section 6), or
 * NULL.  libmicrohttpd reads the first Content-Length and ignores the
 * others, and lets Transfer-Encoding win over Content-Length, so a proxy
 * in front that reads the other header would take part of the body for a
 * second request: such requests are refused, and answering before the
 * body is read makes libmicrohttpd close the connection after the answer,
 * so no byte of the body is ever read as a request. */
static const char *framing_problem(struct MHD_Connection *c)
{
	struct framing f = {0};

	MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
	if (f.content_length > 1)
		return "the request has more than one Content-Length header";
	if (f.transfer_encoding && f.content_length)
		return "the request has both Transfer-Encoding and Content-Length";
	if (f.transfer_encoding > 1 || f.other_coding)
		return "the request's only Transfer-Encoding may be chunked";
	return NULL;
}

/* Checks made as soon as the headers are in; answers and returns true when
 * the request is refused. */
static bool refuse_early(struct listener *l, struct MHD_Connection *c, struct request *req,
			 const char *url, enum method m, bool allowed, enum MHD_Result *rc)
{
	struct api *a = l->api;
	const char *length, *framing = framing_problem(c);

	if (framing) {
		*rc = respond_errorf(c, req, "", "malformed_request", "%s", framing);
		return true;
	}
	if (l->health_only && req->route != ROUTE_HEALTHZ && req->route != ROUTE_READYZ &&
	    req->route != ROUTE_METRICS) {
		*rc = respond_errorf(c, req, "", "not_found",
				     "this listener serves only /healthz, /readyz and /metrics");
		return true;
	}
	if ((route_needs_token(req->route) || strncmp(url, "/v1/", 4) == 0) && !authorized(a, c)) {
		*rc = respond_errorf(
			c, req, "", "unauthorized",
			"this route needs an Authorization: Bearer token, and the one given is %s",
			MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION) ?
				"wrong" :
				"missing");
		return true;
	}
	if (req->route == ROUTE_OTHER) {
		*rc = respond_errorf(c, req, "", "not_found", "no route %.200s", url);
		return true;
	}
	if (!allowed) {
		*rc = respond_errorf(c, req, "", "method_not_allowed",
				     "%.200s does not accept this method", url);
		return true;
	}
	if (m != METHOD_POST)
		return false;
	if (registry_draining(a->reg)) {
		*rc = respond_errorf(c, req, "", "draining",
				     "the service is shutting down and accepts no new jobs");
		return true;
	}
	length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (length && strtoull(length, NULL, 10) > API_BODY_MAX) {
		*rc = respond_errorf(c, req, "", "payload_too_large",
				     "the request body is larger than %d bytes", API_BODY_MAX);
		return true;
	}
	if (!json_media_type(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							 MHD_HTTP_HEADER_CONTENT_TYPE))) {
		*rc = respond_errorf(
			c, req, "", "unsupported_media_type",
			"the request body must be sent as Content-Type: application/json");
		return true;
	}
	return false;
}

static enum MHD_Result dispatch(struct api *a, struct MHD_Connection *c, struct request *req,
				const char *url)
{
	switch (req->route) {
	case ROUTE_HEALTHZ:
		return handle_healthz(a, c, req);
	case ROUTE_READYZ:
		return handle_readyz(a, c, req);
	case ROUTE_METRICS:
		return handle_metrics(a, c, req);
	case ROUTE_VERSION:
		return handle_version(a, c, req);
	case ROUTE_JOBS_CREATE:
		return handle_create(a, c, req);
	case ROUTE_JOBS_LIST:
		return handle_list(a, c, req);
	case ROUTE_JOB_GET:
		return handle_get(a, c, req, url);
	case ROUTE_JOB_DELETE:
		return handle_delete(a, c, req, url);
	case ROUTE_JOB_TENSORS:
		return handle_tensors(a, c, req, url);
	case ROUTE_JOB_EVENTS:
		return handle_events(a, c, req, url);
	case ROUTE_UI:
		return handle_ui(a, c, req, url);
	default:
		return respond_errorf(c, req, "", "not_found", "no route %.200s", url);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_size, void **con_cls)
{
	struct listener *l = cls;
	struct api *a = l->api;
	struct request *req = *con_cls;
	enum MHD_Result rc;
	enum method m;
	bool allowed;

	(void)version;
	if (!thread_prioritised && !l->health_only)
		prioritise_thread(a);
	if (!req) {
		req = xcalloc(1, sizeof(*req));
		req->started = now_seconds();
		*con_cls = req;
		m = method_of(method);
		req->route = route_of(url, m, req, &allowed);
		if (refuse_early(l, c, req, url, m, allowed, &rc)) {
			req->answered = true;
			set_deadline(a, c, false);
			return rc;
		}
		return MHD_YES;
	}
	if (*upload_size) {
		if (!req->answered && !req->too_large) {
			if (req->body.len + *upload_size > API_BODY_MAX)
				req->too_large = true;
			else
				job_buf_append(&req->body, upload_data, *upload_size);
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (req->wait)
		return answer_submission(a, c, req);
	if (req->answered)
		return MHD_YES;
	req->answered = true;
	set_deadline(a, c, false);
	return dispatch(a, c, req, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct api *a = cls;
	struct request *req = *con_cls;
	struct create_wait *w;
	bool last = false;

	(void)toe;
	if (!req)
		return;
	w = req->wait;
	if (w) {
		pthread_mutex_lock(&a->streams_lock);
		LIST_UNLINK(a->waits, w);
		a->nwaits--;
		last = wait_release(w);
		pthread_mutex_unlock(&a->streams_lock);
		if (last)
			wait_free(w);
	}
	job_buf_fini(&req->body);
	free(req);
	*con_cls = NULL;
	/* A kept-alive connection has the request timeout again for its
	 * next request. */
	set_deadline(a, c, true);
}

/* Logs a message of libmicrohttpd, the same one at most every
 * MHD_LOG_INTERVAL seconds with the count of those left out. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct api *a = cls;
	double now = now_seconds();
	unsigned long repeated = 0;
	size_t n, i, slot = 0;
	char msg[512];
	json_t *f = NULL;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	pthread_mutex_lock(&a->log_lock);
	for (i = 0; i < MHD_LOG_RECENT; i++) {
		if (strncmp(a->mhd_log[i].text, msg, sizeof(a->mhd_log[i].text) - 1) == 0)
			break;
		if (a->mhd_log[i].at < a->mhd_log[slot].at)
			slot = i;
	}
	if (i < MHD_LOG_RECENT && now - a->mhd_log[i].at < MHD_LOG_INTERVAL) {
		a->mhd_log[i].repeated++;
		pthread_mutex_unlock(&a->log_lock);
		return;
	}
	if (i < MHD_LOG_RECENT) {
		slot = i;
		repeated = a->mhd_log[i].repeated;
	}
	snprintf(a->mhd_log[slot].text, sizeof(a->mhd_log[slot].text), "%s", msg);
	a->mhd_log[slot].at = now;
	a->mhd_log[slot].repeated = 0;
	pthread_mutex_unlock(&a->log_lock);
	if (repeated)
		f = json_pack("{s:I}", "repeated", (json_int_t)repeated);
	log_msg(LOG_WARN, f, "http: %s", msg);
	json_decref(f);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

/* Starts the daemon of one listener. */
static int start_listener(struct api *a, struct listener *l, const struct api_config *cfg, int fd,
			  bool health_only, struct err *e)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	unsigned threads = health_only ? 1 : (cfg->threads ? cfg->threads : 1);
	unsigned limit = health_only ? HEALTH_CONNECTION_LIMIT : cfg->connection_limit;
	unsigned per_ip = cfg->per_ip_limit;

	if (health_only && (per_ip == 0 || per_ip > HEALTH_PER_IP_LIMIT))
		per_ip = HEALTH_PER_IP_LIMIT;
	l->api = a;
	l->health_only = health_only;
	l->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
		MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE, threads,
		MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_LIMIT,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_NOTIFY_CONNECTION,
		on_connection, a, MHD_OPTION_END);
	if (!l->daemon)
		return err_set(e, "internal_error", "the HTTP server%s could not start",
			       health_only ? " of the health listener" : "");
	return 0;
}

int api_start(const struct api_config *cfg, struct api **out, struct err *e)
{
	struct api *a = xcalloc(1, sizeof(*a));

	*out = NULL;
	a->reg = cfg->reg;
	a->pool = cfg->pool;
	a->policy = cfg->policy;
	a->nice = cfg->nice;
	a->request_timeout = cfg->request_timeout;
	if (cfg->token) {
		a->has_token = true;
		sha256(cfg->token, strlen(cfg->token), a->token_digest);
	}
	pthread_mutex_init(&a->streams_lock, NULL);
	pthread_mutex_init(&a->conns_lock, NULL);
	pthread_mutex_init(&a->log_lock, NULL);
	if (start_listener(a, &a->main, cfg, cfg->listen_fd, false, e) < 0)
		goto fail;
	if (cfg->health_listen_fd >= 0 &&
	    start_listener(a, &a->health, cfg, cfg->health_listen_fd, true, e) < 0) {
		MHD_stop_daemon(a->main.daemon);
		goto fail;
	}
	*out = a;
	return 0;
fail:
	pthread_mutex_destroy(&a->log_lock);
	pthread_mutex_destroy(&a->conns_lock);
	pthread_mutex_destroy(&a->streams_lock);
	free(a);
	return -1;
}

static void stop_listener(struct listener *l)
{
	MHD_socket fd;

	if (!l->daemon)
		return;
	fd = MHD_quiesce_daemon(l->daemon);
	MHD_stop_daemon(l->daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

void api_stop(struct api *a)
{
	struct create_wait *w;
	struct stream *s;
	double deadline;
	MHD_socket fd;
	bool abandoned;

	if (!a)
		return;
	fd = MHD_quiesce_daemon(a->main.daemon);
	pthread_mutex_lock(&a->streams_lock);
	a->stopping = true;
	for (s = a->streams; s; s = s->next) {
		if (s->suspended) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
	}
	/* Submissions still being prepared (only when the service stops
	 * without waiting for them) are answered 503. */
	for (w = a->waits; w; w = w->next) {
		if (!w->done && !w->orphaned) {
			w->orphaned = true;
			MHD_resume_connection(w->conn);
		}
	}
	pthread_mutex_unlock(&a->streams_lock);
	/* Let the resumed streams and submissions end before the daemon goes. */
	deadline = now_seconds() + 1.0;
	for (;;) {
		size_t n;

		pthread_mutex_lock(&a->streams_lock);
		n = a->nstreams + a->nwaits;
		pthread_mutex_unlock(&a->streams_lock);
		if (n == 0 || now_seconds() > deadline)
			break;
		usleep(10000);
	}
	MHD_stop_daemon(a->main.daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	stop_listener(&a->health);
	pthread_mutex_lock(&a->streams_lock);
	abandoned = a->waits_unanswered > 0;
	pthread_mutex_unlock(&a->streams_lock);
	/* A submission thread still holding a wait calls back into the api
	 * later: then it is left in place for the process's exit. */
	if (abandoned)
		return;
	pthread_mutex_destroy(&a->log_lock);
	pthread_mutex_destroy(&a->conns_lock);
	pthread_mutex_destroy(&a->streams_lock);
	free(a);
}
