/* SPDX-License-Identifier: MIT */
/*
 * client: talks to the daemon for `ckptconv jobs`.  One libcurl handle per
 * client keeps the connection open between requests.  Answers are read
 * into memory up to a bound; an event stream is cut into lines and events
 * as its bytes arrive, so each progress event is handed over at once.
 */
#include <curl/curl.h>
#include <string.h>

#include "ckptconv/client.h"
#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "ckptconv/util.h"

#define CONNECT_TIMEOUT_S 10L
#define REQUEST_TIMEOUT_S 60L
#define STREAM_SILENCE_S 60L   /* the daemon sends a keepalive every 15 s */
#define ANSWER_MAX (64u << 20) /* a page of 10,000 tensors is a few MB */
#define EVENT_MAX (1u << 20)   /* one event's data */
#define EVENT_NAME_MAX 64

struct client {
	char *base;  /* no trailing slash */
	char *token; /* NULL: none */
	CURL *curl;
};

int client_new(const char *server, const char *token, struct client **out, struct err *e)
{
	struct client *c;
	size_t n;

	*out = NULL;
	if (strncmp(server, "http://", 7) != 0 && strncmp(server, "https://", 8) != 0)
		return err_set(e, ERR_USAGE_ERROR, "the server %s is not an http:// or https:// URL",
			       server);
	c = xcalloc(1, sizeof(*c));
	c->base = xstrdup(server);
	n = strlen(c->base);
	while (n > 8 && c->base[n - 1] == '/')
		c->base[--n] = '\0';
	c->token = token ? xstrdup(token) : NULL;
	c->curl = curl_easy_init();
	if (!c->curl) {
		client_free(c);
		return err_set(e, ERR_INTERNAL_ERROR, "cannot initialise libcurl");
	}
	*out = c;
	return 0;
}

void client_free(struct client *c)
{
	if (!c)
		return;
	if (c->token) {
		explicit_bzero(c->token, strlen(c->token));
		free(c->token);
	}
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->base);
	free(c);
}

/* The headers of a request; the caller frees them. */
static struct curl_slist *request_headers(const struct client *c, const char *accept,
					  bool json_body, const char *idempotency_key)
{
	struct curl_slist *h = NULL;
	struct buf line = {0};

	h = curl_slist_append(h, accept);
	h = curl_slist_append(h, "Expect:");
	if (json_body)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (idempotency_key) {
		buf_printf(&line, "Idempotency-Key: %s", idempotency_key);
		h = curl_slist_append(h, line.data);
		line.len = 0;
	}
	if (c->token) {
		buf_printf(&line, "Authorization: Bearer %s", c->token);
		h = curl_slist_append(h, line.data);
		explicit_bzero(line.data, line.len);
	}
	buf_fini(&line);
	return h;
}

/* Options every transfer shares. */
static void common_options(struct client *c, const char *path, struct buf *url, char *errbuf)
{
	curl_easy_reset(c->curl);
	buf_printf(url, "%s%s", c->base, path);
	curl_easy_setopt(c->curl, CURLOPT_URL, url->data);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "ckptconv/" PACKAGE_VERSION);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
	errbuf[0] = '\0';
}

/* An answer's body, read into memory up to ANSWER_MAX bytes. */
struct answer {
	struct buf body;
	bool too_big; /* the server sent more: the transfer was cut */
};

static size_t collect(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct answer *a = userdata;
	size_t n = size * nmemb;

	if (a->body.len + n > ANSWER_MAX) {
		a->too_big = true;
		return 0;
	}
	buf_append(&a->body, data, n);
	return n;
}

static int too_big_error(const char *url, struct err *e)
{
	return err_set(e, ERR_SERVER_BAD_RESPONSE, "%s: the answer is over %u MiB", url,
		       ANSWER_MAX >> 20);
}

/* e from an error answer {"error": {"code", "message", "field"}}. */
static int answer_error(long status, const struct answer *a, const char *url, struct err *e)
{
	const struct buf *body = &a->body;
	json_t *doc = json_loadb(body->data ? body->data : "", body->len, 0, NULL);
	json_t *error = json_object_get(doc, "error");
	const char *code = json_string_value(json_object_get(error, "code"));
	const char *message = json_string_value(json_object_get(error, "message"));
	const char *field = json_string_value(json_object_get(error, "field"));
	enum err_code known = err_code_parse(code);

	if (a->too_big)
		too_big_error(url, e);
	else if (!code || !message)
		err_set(e, ERR_SERVER_BAD_RESPONSE, "%s answered HTTP %ld without an error body", url,
			status);
	else if (!known)
		err_set(e, ERR_SERVER_BAD_RESPONSE,
			"%s answered HTTP %ld with the unknown code %s: %s", url, status, code,
			message);
	else if (field && *field)
		err_set(e, known, "%s (field %s)", message, field);
	else
		err_set(e, known, "%s", message);
	json_decref(doc);
	return -1;
}

static int transfer_error(CURLcode res, const char *errbuf, const char *url, struct err *e)
{
	return err_set(e, ERR_SERVER_UNREACHABLE, "%s: %s", url,
		       errbuf[0] ? errbuf : curl_easy_strerror(res));
}

int client_call(struct client *c, const char *method, const char *path, const json_t *body,
		const char *idempotency_key, long *status, json_t **answer, struct err *e)
{
	char errbuf[CURL_ERROR_SIZE];
	struct buf url = {0};
	struct answer in = {0};
	struct curl_slist *headers;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_error_t jerr;
	CURLcode res;
	int rc = -1;

	*status = 0;
	*answer = NULL;
	common_options(c, path, &url, errbuf);
	headers = request_headers(c, "Accept: application/json", text != NULL, idempotency_key);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
	/* refused before reading when the server says its length */
	curl_easy_setopt(c->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ANSWER_MAX);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &in);
	if (text)
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, text);
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	res = curl_easy_perform(c->curl);
	if (in.too_big || res == CURLE_FILESIZE_EXCEEDED) {
		too_big_error(url.data, e);
		goto out;
	}
	if (res != CURLE_OK) {
		transfer_error(res, errbuf, url.data, e);
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
	if (*status < 200 || *status > 299) {
		answer_error(*status, &in, url.data, e);
		goto out;
	}
	if (*status == 204) {
		rc = 0;
		goto out;
	}
	*answer = json_loadb(in.body.data ? in.body.data : "", in.body.len, 0, &jerr);
	if (!*answer) {
		err_set(e, ERR_SERVER_BAD_RESPONSE, "%s answered HTTP %ld with invalid JSON: %s",
			url.data, *status, jerr.text);
		goto out;
	}
	rc = 0;
out:
	curl_slist_free_all(headers);
	free(text);
	buf_fini(&in.body);
	buf_fini(&url);
	return rc;
}

int client_job_error(const json_t *job, struct err *e)
{
	const json_t *error = json_object_get(job, "error");
	const char *code = json_string_value(json_object_get(error, "code"));
	const char *message = json_string_value(json_object_get(error, "message"));
	const char *tensor = json_string_value(json_object_get(error, "tensor"));
	enum err_code known = err_code_parse(code);

	if (!json_is_object(error))
		return 0;
	if (known)
		err_set(e, known, "%s", message ? message : "");
	else
		err_set(e, ERR_SERVER_BAD_RESPONSE, "the job failed with the unknown code %s: %s",
			code ? code : "(none)", message ? message : "");
	err_set_tensor(e, tensor);
	return -1;
}

/* ---- the shape of a job ---------------------------------------------------- */

enum {
	T_STRING = 1,
	T_NULL = 2,
	T_OBJECT = 4,
	T_INTEGER = 8,
	T_NUMBER = 16, /* an integer or a real */
	T_BOOL = 32,
	T_ARRAY = 64,
};

/* A member of an object as docs/openapi.yaml describes it. */
struct member_rule {
	const char *name;
	unsigned types;
	const char *wanted; /* the types in words */
	bool required;	    /* the rest may be absent (an older daemon) */
};

static const struct member_rule job_rules[] = {
	{"id", T_STRING, "a string", true},
	{"state", T_STRING, "a string", true},
	{"created_at", T_STRING, "a string", false},
	{"started_at", T_STRING | T_NULL, "a string or null", false},
	{"finished_at", T_STRING | T_NULL, "a string or null", false},
	{"source", T_STRING | T_NULL, "a string or null", false},
	{"destination", T_STRING, "a string", false},
	{"to", T_STRING | T_NULL, "a string or null", false},
	{"options", T_OBJECT, "an object", false},
	{"labels", T_OBJECT, "an object", false},
	{"progress", T_OBJECT, "an object", false},
	{"result", T_OBJECT | T_NULL, "an object or null", false},
	{"error", T_OBJECT | T_NULL, "an object or null", false},
	{"cancel_requested", T_BOOL, "true or false", false},
	{"restarts", T_INTEGER, "an integer", false},
	{"credentials_source", T_STRING | T_NULL, "a string or null", false},
	{NULL, 0, NULL, false},
};

static const struct member_rule progress_rules[] = {
	{"tensors_total", T_INTEGER, "an integer", false},
	{"tensors_done", T_INTEGER, "an integer", false},
	{"bytes_total", T_INTEGER, "an integer", false},
	{"bytes_done", T_INTEGER, "an integer", false},
	{"percent", T_NUMBER, "a number", false},
	{"bytes_per_second", T_INTEGER, "an integer", false},
	{"elapsed_seconds", T_NUMBER, "a number", false},
	{"eta_seconds", T_INTEGER | T_NULL, "an integer or null", false},
	{"in_flight", T_ARRAY, "an array", false},
	{NULL, 0, NULL, false},
};

static const struct member_rule result_rules[] = {
	{"files", T_ARRAY, "an array", false},
	{"tensors", T_INTEGER, "an integer", false},
	{"bytes", T_INTEGER, "an integer", false},
	{"file_bytes", T_INTEGER, "an integer", false},
	{"warnings", T_ARRAY, "an array", false},
	{NULL, 0, NULL, false},
};

static const struct member_rule error_rules[] = {
	{"code", T_STRING, "a string", true},
	{"message", T_STRING, "a string", true},
	{"tensor", T_STRING | T_NULL, "a string or null", false},
	{NULL, 0, NULL, false},
};

static unsigned type_of(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return T_STRING;
	case JSON_NULL:
		return T_NULL;
	case JSON_OBJECT:
		return T_OBJECT;
	case JSON_INTEGER:
		return T_INTEGER | T_NUMBER;
	case JSON_REAL:
		return T_NUMBER;
	case JSON_TRUE:
	case JSON_FALSE:
		return T_BOOL;
	case JSON_ARRAY:
		return T_ARRAY;
	}
	return 0;
}

static const char *type_words(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return "a string";
	case JSON_NULL:
		return "null";
	case JSON_OBJECT:
		return "an object";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_ARRAY:
		return "an array";
	}
	return "unknown";
}

static int shape_error(const char *field, const char *what, struct err *e)
{
	return err_set(e, ERR_SERVER_BAD_RESPONSE, "the answer's %s is %s", field, what);
}

/* The members of o that `rules` name, each of its types; `prefix` names o
 * ("" for the answer itself, "jobs[3]."). */
static int check_members(const json_t *o, const struct member_rule *rules, const char *prefix,
			 struct err *e)
{
	char field[96], what[64];
	const json_t *v;

	for (; rules->name; rules++) {
		snprintf(field, sizeof(field), "%s%s", prefix, rules->name);
		v = json_object_get(o, rules->name);
		if (!v && rules->required)
			return shape_error(field, "missing", e);
		if (v && !(type_of(v) & rules->types)) {
			snprintf(what, sizeof(what), "%s, not %s", type_words(v), rules->wanted);
			return shape_error(field, what, e);
		}
	}
	return 0;
}

int client_check_job(const json_t *job, const char *prefix, struct err *e)
{
	char field[96];
	const char *key, *state;
	const json_t *v;

	if (!json_is_object(job)) {
		/* "jobs[3]." names jobs[3] */
		snprintf(field, sizeof(field), "%.*s", *prefix ? (int)strlen(prefix) - 1 : 3,
			 *prefix ? prefix : "job");
		return shape_error(field, "not an object", e);
	}
	if (check_members(job, job_rules, prefix, e) < 0)
		return -1;
	state = json_string_value(json_object_get(job, "state"));
	if (job_state_parse(state) < 0) {
		snprintf(field, sizeof(field), "%sstate", prefix);
		return err_set(e, ERR_SERVER_BAD_RESPONSE,
			       "the answer's %s is '%.64s', not a job state", field, state);
	}
	json_object_foreach((json_t *)json_object_get(job, "labels"), key, v) {
		if (!json_is_string(v)) {
			snprintf(field, sizeof(field), "%slabels.%.40s", prefix, key);
			return shape_error(field, "not a string", e);
		}
	}
	snprintf(field, sizeof(field), "%sprogress.", prefix);
	if (check_members(json_object_get(job, "progress"), progress_rules, field, e) < 0)
		return -1;
	snprintf(field, sizeof(field), "%sresult.", prefix);
	if (check_members(json_object_get(job, "result"), result_rules, field, e) < 0)
		return -1;
	snprintf(field, sizeof(field), "%serror.", prefix);
	if (json_is_object(json_object_get(job, "error")) &&
	    check_members(json_object_get(job, "error"), error_rules, field, e) < 0)
		return -1;
	return 0;
}

int client_check_page(const json_t *page, struct err *e)
{
	static const struct member_rule page_rules[] = {
		{"jobs", T_ARRAY, "an array", true},
		{"next_cursor", T_STRING | T_NULL, "a string or null", false},
		{NULL, 0, NULL, false},
	};
	char prefix[32];
	const json_t *job;
	size_t i;

	if (!json_is_object(page))
		return shape_error("page", "not an object", e);
	if (check_members(page, page_rules, "", e) < 0)
		return -1;
	json_array_foreach(json_object_get(page, "jobs"), i, job) {
		snprintf(prefix, sizeof(prefix), "jobs[%zu].", i);
		if (client_check_job(job, prefix, e) < 0)
			return -1;
	}
	return 0;
}

/* ---- event streams ---------------------------------------------------------- */

struct stream {
	struct client *client;
	client_event_fn fn;
	void *ctx;
	long status; /* 0 until known */
	struct buf line, data;
	struct answer error_body;
	char event[EVENT_NAME_MAX];
	bool stopped, failed;
	struct err *e;
	const char *url;
};

/* Hands the event gathered so far to fn; false to end the transfer. */
static bool dispatch(struct stream *s)
{
	json_t *data;
	json_error_t jerr;
	bool go_on = true;

	if (s->data.len == 0)
		goto out;
	data = json_loadb(s->data.data, s->data.len, 0, &jerr);
	if (!data) {
		err_set(s->e, ERR_SERVER_BAD_RESPONSE, "%s: event '%s' carries invalid JSON: %s",
			s->url, s->event[0] ? s->event : "message", jerr.text);
		s->failed = true;
		go_on = false;
		goto out;
	}
	if (s->fn(s->ctx, s->event[0] ? s->event : "message", data) != 0) {
		s->stopped = true;
		go_on = false;
	}
	json_decref(data);
out:
	s->data.len = 0;
	s->event[0] = '\0';
	return go_on;
}

/* One line of the stream, without its end of line. */
static bool take_line(struct stream *s, const char *line, size_t len)
{
	const char *colon, *value;
	size_t name_len, value_len;

	if (len == 0)
		return dispatch(s);
	if (line[0] == ':')
		return true;
	colon = memchr(line, ':', len);
	name_len = colon ? (size_t)(colon - line) : len;
	value = colon ? colon + 1 : line + len;
	value_len = len - (size_t)(value - line);
	if (value_len && value[0] == ' ') {
		value++;
		value_len--;
	}
	if (name_len == 5 && memcmp(line, "event", 5) == 0) {
		snprintf(s->event, sizeof(s->event), "%.*s", (int)value_len, value);
	} else if (name_len == 4 && memcmp(line, "data", 4) == 0) {
		if (s->data.len)
			buf_append(&s->data, "\n", 1);
		buf_append(&s->data, value, value_len);
	}
	return true;
}

static size_t stream_bytes(char *bytes, size_t size, size_t nmemb, void *userdata)
{
	struct stream *s = userdata;
	size_t n = size * nmemb, i;

	if (!s->status)
		curl_easy_getinfo(s->client->curl, CURLINFO_RESPONSE_CODE, &s->status);
	if (s->status != 200)
		return collect(bytes, size, nmemb, &s->error_body);
	for (i = 0; i < n; i++) {
		char ch = bytes[i];

		if (ch == '\n') {
			size_t len = s->line.len;

			if (len && s->line.data[len - 1] == '\r')
				len--;
			if (!take_line(s, s->line.data ? s->line.data : "", len))
				return 0;
			s->line.len = 0;
			continue;
		}
		if (s->line.len + s->data.len >= EVENT_MAX) {
			err_set(s->e, ERR_SERVER_BAD_RESPONSE, "%s: an event is over %u bytes",
				s->url, EVENT_MAX);
			s->failed = true;
			return 0;
		}
		buf_append(&s->line, &ch, 1);
	}
	return n;
}

int client_follow(struct client *c, const char *path, client_event_fn fn, void *ctx, struct err *e)
{
	char errbuf[CURL_ERROR_SIZE];
	struct buf url = {0};
	struct curl_slist *headers;
	struct stream s = {.client = c, .fn = fn, .ctx = ctx, .e = e};
	CURLcode res;
	int rc = -1;

	common_options(c, path, &url, errbuf);
	s.url = url.data;
	headers = request_headers(c, "Accept: text/event-stream", false, NULL);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_TIME, STREAM_SILENCE_S);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, stream_bytes);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
	res = curl_easy_perform(c->curl);
	if (s.stopped) {
		rc = 0;
		goto out;
	}
	if (s.failed)
		goto out;
	if (!s.status)
		curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &s.status);
	if (s.status && s.status != 200) {
		answer_error(s.status, &s.error_body, url.data, e);
		goto out;
	}
	if (res != CURLE_OK) {
		transfer_error(res, errbuf, url.data, e);
		goto out;
	}
	rc = 0;
out:
	curl_slist_free_all(headers);
	buf_fini(&s.line);
	buf_fini(&s.data);
	buf_fini(&s.error_body.body);
	buf_fini(&url);
	return rc;
}
