/* SPDX-License-Identifier: MIT */
/*
 * api: the server on libmicrohttpd.  A request is routed when its headers
 * arrive (so a wrong token, a wrong media type or an oversized body is
 * answered before the body is read), its body is collected up to
 * API_BODY_MAX, and the route's handler answers (api_health.c,
 * api_jobs.c, api_events.c).  Server-Sent Events streams and job
 * submissions suspend their connection while they wait; the main loop
 * resumes the streams through api_tick() when an event is due, the
 * registry's submission threads the submissions, so no polling thread
 * ever blocks.
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
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ckptconv/log.h"
#include "ckptconv/registry.h"
#include "api_internal.h"

#define CONNECTION_MEMORY_LIMIT (64 * 1024)
#define CONNECTION_TIMEOUT 60
/* The health listener: one polling thread and its own connection budget. */
#define HEALTH_CONNECTION_LIMIT 64
#define HEALTH_PER_IP_LIMIT 8
/* Seconds between log lines about connections cut at their deadline, and
 * between two lines of one libmicrohttpd message (a flood of refused
 * connections would flood the log). */
#define DEADLINE_LOG_INTERVAL 60.0
#define MHD_LOG_INTERVAL 10.0

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

void api_tick(struct api *a)
{
	double now = now_seconds();
	struct stream *s;

	cut_slow_connections(a, now);
	pthread_mutex_lock(&a->streams_lock);
	for (s = a->streams; s; s = s->next) {
		if (s->suspended && api_stream_due(s, now)) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
	}
	pthread_mutex_unlock(&a->streams_lock);
}

/* ---- the token ------------------------------------------------------------------- */

bool api_token_matches(const char *header, const char *token)
{
	unsigned char want[SHA256_BYTES], got[SHA256_BYTES];
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
	unsigned char got[SHA256_BYTES];
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

static bool json_media_type(const char *type)
{
	size_t n = strlen("application/json");

	if (!type || strncasecmp(type, "application/json", n) != 0)
		return false;
	return type[n] == '\0' || type[n] == ';' || type[n] == ' ';
}

/* The headers that say how long a request's body is. */
struct framing {
	unsigned content_length, transfer_encoding, host;
	bool other_coding; /* a Transfer-Encoding other than exactly "chunked" */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct framing *f = cls;
	size_t n;

	(void)kind;
	if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		f->host++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
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

/* Why the request's framing is wrong, or NULL: no Host where HTTP/1.1
 * requires one, or a body length that is ambiguous (RFC 9112, section 6).
 * libmicrohttpd reads the first Content-Length and ignores the others,
 * and lets Transfer-Encoding win over Content-Length, so a proxy in front
 * that reads the other header would take part of the body for a second
 * request: such requests are refused, and answering before the
 * body is read makes libmicrohttpd close the connection after the answer,
 * so no byte of the body is ever read as a request. */
static const char *framing_problem(struct MHD_Connection *c, const char *version)
{
	struct framing f = {0};

	MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
	/* RFC 9112, section 3.2: an HTTP/1.1 request without Host, and any
	 * request with more than one, is answered 400. */
	if (f.host == 0 && version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
		return "an HTTP/1.1 request must have a Host header (RFC 9112, section 3.2)";
	if (f.host > 1)
		return "the request has more than one Host header (RFC 9112, section 3.2)";
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
			 const char *url, const char *version, enum method m, bool allowed,
			 enum MHD_Result *rc)
{
	struct api *a = l->api;
	const char *length, *framing = framing_problem(c, version);

	if (framing) {
		*rc = api_respond_errorf(c, req, "", ERR_MALFORMED_REQUEST, "%s", framing);
		return true;
	}
	if (l->health_only && req->route != ROUTE_HEALTHZ && req->route != ROUTE_READYZ &&
	    req->route != ROUTE_METRICS) {
		*rc = api_respond_errorf(
			c, req, "", ERR_NOT_FOUND,
			"this listener serves only /healthz, /readyz and /metrics");
		return true;
	}
	if ((route_needs_token(req->route) || strncmp(url, "/v1/", 4) == 0) && !authorized(a, c)) {
		*rc = api_respond_errorf(
			c, req, "", ERR_UNAUTHORIZED,
			"this route needs an Authorization: Bearer token, and the one given is %s",
			MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION) ?
				"wrong" :
				"missing");
		return true;
	}
	if (req->route == ROUTE_OTHER) {
		*rc = api_respond_errorf(c, req, "", ERR_NOT_FOUND, "no route %.200s", url);
		return true;
	}
	if (!allowed) {
		*rc = api_respond_errorf(c, req, "", ERR_METHOD_NOT_ALLOWED,
					 "%.200s does not accept this method", url);
		return true;
	}
	if (m != METHOD_POST)
		return false;
	if (registry_draining(a->reg)) {
		*rc = api_respond_errorf(c, req, "", ERR_DRAINING,
					 "the service is shutting down and accepts no new jobs");
		return true;
	}
	length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (length && strtoull(length, NULL, 10) > API_BODY_MAX) {
		*rc = api_respond_errorf(c, req, "", ERR_PAYLOAD_TOO_LARGE,
					 "the request body is larger than %d bytes", API_BODY_MAX);
		return true;
	}
	if (!json_media_type(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							 MHD_HTTP_HEADER_CONTENT_TYPE))) {
		*rc = api_respond_errorf(
			c, req, "", ERR_UNSUPPORTED_MEDIA_TYPE,
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
		return api_handle_healthz(a, c, req);
	case ROUTE_READYZ:
		return api_handle_readyz(a, c, req);
	case ROUTE_METRICS:
		return api_handle_metrics(a, c, req);
	case ROUTE_VERSION:
		return api_handle_version(a, c, req);
	case ROUTE_JOBS_CREATE:
		return api_handle_create(a, c, req);
	case ROUTE_JOBS_LIST:
		return api_handle_list(a, c, req);
	case ROUTE_JOB_GET:
		return api_handle_get(a, c, req, url);
	case ROUTE_JOB_DELETE:
		return api_handle_delete(a, c, req, url);
	case ROUTE_JOB_TENSORS:
		return api_handle_tensors(a, c, req, url);
	case ROUTE_JOB_EVENTS:
		return api_handle_events(a, c, req, url);
	case ROUTE_UI:
		return api_handle_ui(a, c, req, url);
	default:
		return api_respond_errorf(c, req, "", ERR_NOT_FOUND, "no route %.200s", url);
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

	if (!thread_prioritised && !l->health_only)
		prioritise_thread(a);
	if (!req) {
		req = xcalloc(1, sizeof(*req));
		req->started = now_seconds();
		*con_cls = req;
		req->head = strcmp(method, "HEAD") == 0;
		m = method_of(method);
		req->route = route_of(url, m, req, &allowed);
		if (refuse_early(l, c, req, url, version, m, allowed, &rc)) {
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
				buf_append(&req->body, upload_data, *upload_size);
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (req->wait)
		return api_answer_submission(a, c, req);
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
		last = api_wait_release(w);
		pthread_mutex_unlock(&a->streams_lock);
		if (last)
			api_wait_free(w);
	}
	buf_fini(&req->body);
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
		return err_set(e, ERR_INTERNAL_ERROR, "the HTTP server%s could not start",
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
