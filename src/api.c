/* SPDX-License-Identifier: MIT */
/*
 * api: routes and handlers on libmicrohttpd.  A request is routed when its
 * headers arrive (so a wrong token, a wrong media type or an oversized body
 * is answered before the body is read), its body is collected up to
 * API_BODY_MAX, and the handler answers with JSON built by jansson, or,
 * for the per-tensor listing, by copying precomputed fragments.  Server-Sent
 * Events streams suspend their connection whenever they have nothing to
 * send; the main loop resumes them through api_tick() when an event is due,
 * so no polling thread ever blocks.
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
#include <unistd.h>

#include "ckptconv/api.h"
#include "ckptconv/api_query.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/job.h"
#include "ckptconv/log.h"
#include "ckptconv/metrics.h"
#include "ckptconv/registry.h"

#define PROGRESS_INTERVAL 0.5 /* seconds between progress events */
#define KEEPALIVE_INTERVAL 15.0
#define CONNECTION_MEMORY_LIMIT (64 * 1024)
#define CONNECTION_TIMEOUT 60
#define RETRY_QUEUE_FULL "5"
#define RETRY_DRAINING "30"
#define RETRY_NOT_READY "5"

struct stream;

struct api {
	struct MHD_Daemon *daemon;
	int listen_fd;
	bool has_token;
	int nice;
	unsigned char token_digest[32];
	struct registry *reg;
	struct exec_pool *pool;
	const struct job_policy *policy;

	pthread_mutex_t streams_lock;
	struct stream *streams; /* protected by streams_lock */
	size_t nstreams;
	bool stopping;
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
	char id[JOB_ID_LEN + 1];
	bool id_valid;
	bool answered; /* a response was queued before the body was read */
	bool too_large;
	struct job_buf body;
};

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
	metrics_http_observe(req->route, status);
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

static enum MHD_Result handle_create(struct api *a, struct MHD_Connection *c, struct request *req)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_error_t jerr;
	json_t *body;
	struct job *j = NULL;
	char *src = NULL, *dst = NULL, digest[65];
	const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	bool existing = false;
	enum MHD_Result rc;

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
	if (job_spec_check(&spec, a->policy, &src, &dst, &je) < 0 ||
	    registry_submit(a->reg, &spec, src, dst, key, digest, &j, &existing, &je) < 0)
		rc = respond_error(c, req, &je);
	else
		rc = answer_created(a, c, req, j, existing);
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
	if (s->prev)
		s->prev->next = s->next;
	else
		a->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
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
	s->next = a->streams;
	if (a->streams)
		a->streams->prev = s;
	a->streams = s;
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
	return r != ROUTE_HEALTHZ && r != ROUTE_READYZ && r != ROUTE_METRICS;
}

/* Checks made as soon as the headers are in; answers and returns true when
 * the request is refused. */
static bool refuse_early(struct api *a, struct MHD_Connection *c, struct request *req,
			 const char *url, enum method m, bool allowed, enum MHD_Result *rc)
{
	const char *length;

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
	default:
		return respond_errorf(c, req, "", "not_found", "no route %.200s", url);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_size, void **con_cls)
{
	struct api *a = cls;
	struct request *req = *con_cls;
	enum MHD_Result rc;
	enum method m;
	bool allowed;

	(void)version;
	if (!thread_prioritised)
		prioritise_thread(a);
	if (!req) {
		req = xcalloc(1, sizeof(*req));
		*con_cls = req;
		m = method_of(method);
		req->route = route_of(url, m, req, &allowed);
		if (refuse_early(a, c, req, url, m, allowed, &rc)) {
			req->answered = true;
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
	if (req->answered)
		return MHD_YES;
	req->answered = true;
	return dispatch(a, c, req, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct request *req = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (!req)
		return;
	job_buf_fini(&req->body);
	free(req);
	*con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	log_msg(LOG_WARN, NULL, "http: %s", msg);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int api_start(const struct api_config *cfg, struct api **out, struct err *e)
{
	struct api *a = xcalloc(1, sizeof(*a));
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;

	*out = NULL;
	a->listen_fd = cfg->listen_fd;
	a->reg = cfg->reg;
	a->pool = cfg->pool;
	a->policy = cfg->policy;
	a->nice = cfg->nice;
	if (cfg->token) {
		a->has_token = true;
		sha256(cfg->token, strlen(cfg->token), a->token_digest);
	}
	pthread_mutex_init(&a->streams_lock, NULL);
	a->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
		MHD_OPTION_LISTEN_SOCKET, (MHD_socket)cfg->listen_fd, MHD_OPTION_THREAD_POOL_SIZE,
		(unsigned int)(cfg->threads ? cfg->threads : 1), MHD_OPTION_CONNECTION_LIMIT,
		(unsigned int)cfg->connection_limit, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		(size_t)CONNECTION_MEMORY_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned int)CONNECTION_TIMEOUT, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
		MHD_OPTION_END);
	if (!a->daemon) {
		pthread_mutex_destroy(&a->streams_lock);
		free(a);
		return err_set(e, "internal_error", "the HTTP server could not start");
	}
	*out = a;
	return 0;
}

void api_stop(struct api *a)
{
	struct stream *s;
	double deadline;
	MHD_socket fd;

	if (!a)
		return;
	fd = MHD_quiesce_daemon(a->daemon);
	pthread_mutex_lock(&a->streams_lock);
	a->stopping = true;
	for (s = a->streams; s; s = s->next) {
		if (s->suspended) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
	}
	pthread_mutex_unlock(&a->streams_lock);
	/* Let the resumed streams end before the daemon goes. */
	deadline = now_seconds() + 1.0;
	for (;;) {
		size_t n;

		pthread_mutex_lock(&a->streams_lock);
		n = a->nstreams;
		pthread_mutex_unlock(&a->streams_lock);
		if (n == 0 || now_seconds() > deadline)
			break;
		usleep(10000);
	}
	MHD_stop_daemon(a->daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	pthread_mutex_destroy(&a->streams_lock);
	free(a);
}
