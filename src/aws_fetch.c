/* SPDX-License-Identifier: MIT */
/*
 * aws_fetch: one exchange with a credentials service: the request built,
 * sent with libcurl on an easy handle of its own (these exchanges are rare:
 * once per source and refresh), its answer collected up to a bound and
 * parsed: STS's XML with expat, the JSON of the container endpoint and
 * the instance metadata service with jansson.  Headers that carry a token
 * are wiped once sent.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <expat.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/aws_fetch.h"
#include "ckptconv/err.h"
#include "ckptconv/sigv4.h"
#include "ckptconv/util.h"

#define STS_API_VERSION "2011-06-15"

/* ---- answers ---- */

int aws_credential_text_check(const char *source, const char *what, const char *value,
			      struct err *e)
{
	const unsigned char *p;

	if (!value || !*value)
		return err_set(e, ERR_S3_CREDENTIALS, "%s: the %s is malformed: it is empty", source,
			       what);
	for (p = (const unsigned char *)value; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return err_set(e, ERR_S3_CREDENTIALS,
				       "%s: the %s is malformed: byte %zu is %s (0x%02x), not "
				       "printable ASCII",
				       source, what, (size_t)(p - (const unsigned char *)value) + 1,
				       *p < 0x20 || *p == 0x7f ? "a control character" :
								 "outside ASCII",
				       *p);
	return 0;
}

bool aws_parse_time(const char *text, time_t *out)
{
	struct tm tm = {0};
	const char *p;
	int n = 0;
	time_t t;

	if (!text ||
	    sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
	    n != 19)
		return false;
	p = text + n;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
		return false;
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_year < 1970)
		return false;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return false;
	*out = t;
	return true;
}

/* A service's text for an error: at most size - 1 bytes of it, each
 * control character (a CR or LF would forge a log line) made '?'. */
static const char *service_text(const char *text, char *buf, size_t size)
{
	size_t i;

	for (i = 0; text[i] && i + 1 < size; i++)
		buf[i] = (unsigned char)text[i] < 0x20 || text[i] == 0x7f ? '?' : text[i];
	buf[i] = '\0';
	return buf;
}

/* Overwrites every copy of `secret` in an answer with '*' (a service that
 * echoes the token it was sent must not put it in an error). */
static void scrub(char *data, size_t len, const char *secret)
{
	size_t n = secret ? strlen(secret) : 0;
	char *p = data, *end = data + len;

	if (!data || n < 4)
		return;
	while ((size_t)(end - p) >= n && (p = memmem(p, (size_t)(end - p), secret, n))) {
		memset(p, '*', n);
		p += n;
	}
}

/* The fields of STS's answer, collected by element path. */
struct sts_walk {
	char path[256];
	size_t depth_len[16];
	int depth;
	bool too_deep;
	char *text;
	size_t text_len;
	char *fields[6]; /* AccessKeyId, SecretAccessKey, SessionToken, Expiration, Code, Message */
	bool is_error;
};

static const char *const sts_paths[6] = {
	"AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials/AccessKeyId",
	"AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials/"
	"SecretAccessKey",
	"AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials/"
	"SessionToken",
	"AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials/Expiration",
	"ErrorResponse/Error/Code",
	"ErrorResponse/Error/Message",
};

static void XMLCALL sts_start(void *data, const XML_Char *name, const XML_Char **attrs)
{
	struct sts_walk *w = data;
	size_t len = strlen(w->path);

	(void)attrs;
	if (w->too_deep || w->depth >= 16 || len + strlen(name) + 2 > sizeof(w->path)) {
		w->too_deep = true;
		return;
	}
	w->depth_len[w->depth++] = len;
	snprintf(w->path + len, sizeof(w->path) - len, "%s%s", len ? "/" : "", name);
	if (strcmp(w->path, "ErrorResponse") == 0)
		w->is_error = true;
	w->text_len = 0;
}

static void XMLCALL sts_end(void *data, const XML_Char *name)
{
	struct sts_walk *w = data;
	size_t i;

	(void)name;
	if (w->too_deep)
		return;
	for (i = 0; i < 6; i++)
		if (strcmp(w->path, sts_paths[i]) == 0) {
			free(w->fields[i]);
			w->fields[i] = xmalloc(w->text_len + 1);
			memcpy(w->fields[i], w->text ? w->text : "", w->text_len);
			w->fields[i][w->text_len] = '\0';
		}
	w->path[w->depth_len[--w->depth]] = '\0';
	w->text_len = 0;
}

static void XMLCALL sts_chars(void *data, const XML_Char *s, int len)
{
	struct sts_walk *w = data;

	if (len <= 0 || w->text_len + (size_t)len > AWS_FETCH_ANSWER_MAX)
		return;
	w->text = xrealloc(w->text, w->text_len + (size_t)len + 1);
	memcpy(w->text + w->text_len, s, (size_t)len);
	w->text_len += (size_t)len;
}

int aws_sts_answer_parse(const char *body, size_t len, long status, const char *where,
			 struct aws_credentials_answer *out, struct err *e)
{
	struct sts_walk w = {0};
	XML_Parser p;
	bool xml;
	size_t i;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	while (len && isspace((unsigned char)*body))
		body++, len--;
	p = XML_ParserCreate("UTF-8");
	if (!p)
		abort();
	XML_SetUserData(p, &w);
	XML_SetElementHandler(p, sts_start, sts_end);
	XML_SetCharacterDataHandler(p, sts_chars);
	xml = len <= INT32_MAX && XML_Parse(p, body, (int)len, 1) == XML_STATUS_OK && !w.too_deep;
	XML_ParserFree(p);
	if (status != 200 || w.is_error) {
		char code[65], message[201];

		if (xml && w.fields[4])
			err_set(e, ERR_S3_CREDENTIALS,
				"web identity (STS at %s): AssumeRoleWithWebIdentity answered HTTP "
				"%ld %s (%s)",
				where, status, service_text(w.fields[4], code, sizeof(code)),
				service_text(w.fields[5] ? w.fields[5] : "no message", message,
					     sizeof(message)));
		else
			err_set(e, ERR_S3_CREDENTIALS,
				"web identity (STS at %s): AssumeRoleWithWebIdentity answered HTTP "
				"%ld",
				where, status);
		goto out;
	}
	if (!xml || !w.fields[0] || !*w.fields[0] || !w.fields[1] || !*w.fields[1] ||
	    !w.fields[2] || !*w.fields[2] || !w.fields[3]) {
		err_set(e, ERR_S3_CREDENTIALS,
			"web identity (STS at %s): the answer is not an "
			"AssumeRoleWithWebIdentityResponse with Credentials (AccessKeyId, "
			"SecretAccessKey, SessionToken, Expiration)",
			where);
		goto out;
	}
	if (!aws_parse_time(w.fields[3], &out->expiration)) {
		err_set(e, ERR_S3_CREDENTIALS,
			"web identity (STS at %s): Expiration '%.40s' is not an ISO 8601 time",
			where, w.fields[3]);
		goto out;
	}
	out->access_key_id = w.fields[0];
	out->secret_access_key = w.fields[1];
	out->session_token = w.fields[2];
	w.fields[0] = w.fields[1] = w.fields[2] = NULL;
	rc = 0;
out:
	for (i = 0; i < 6; i++)
		secret_free(w.fields[i]);
	if (w.text) {
		explicit_bzero(w.text, w.text_len);
		free(w.text);
	}
	return rc;
}

static const char *json_field(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

int aws_credentials_json_parse(const char *body, size_t len, const char *source,
			       struct aws_credentials_answer *out, struct err *e)
{
	const char *key, *secret, *token, *expiration, *code;
	json_t *o = json_loadb(body, len, 0, NULL);
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o)) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: the answer is not a JSON object", source);
		goto out;
	}
	code = json_field(o, "Code");
	if (code && strcmp(code, "Success") != 0) {
		char code_text[65], message[201];

		err_set(e, ERR_S3_CREDENTIALS, "%s: the answer's Code is %s (%s)", source,
			service_text(code, code_text, sizeof(code_text)),
			service_text(json_field(o, "Message") ? json_field(o, "Message") :
								"no message",
				     message, sizeof(message)));
		goto out;
	}
	key = json_field(o, "AccessKeyId");
	secret = json_field(o, "SecretAccessKey");
	token = json_field(o, "Token");
	expiration = json_field(o, "Expiration");
	if (!key || !*key || !secret || !*secret || !token || !*token || !expiration) {
		err_set(e, ERR_S3_CREDENTIALS,
			"%s: the answer lacks a string AccessKeyId, SecretAccessKey, Token or "
			"Expiration",
			source);
		goto out;
	}
	if (!aws_parse_time(expiration, &out->expiration)) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: Expiration '%.40s' is not an ISO 8601 time",
			source, expiration);
		goto out;
	}
	out->access_key_id = xstrdup(key);
	out->secret_access_key = xstrdup(secret);
	out->session_token = xstrdup(token);
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/* ---- endpoints ---- */

char *aws_sts_regional_endpoint(const char *region)
{
	const char *p;
	char *url;

	if (!region || !*region)
		return xstrdup("https://sts.amazonaws.com");
	if (strlen(region) > 64)
		return NULL;
	for (p = region; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
			return NULL;
	if (asprintf(&url, "https://sts.%s.amazonaws.com%s", region,
		     strncmp(region, "cn-", 3) == 0 ? ".cn" : "") < 0)
		abort();
	return url;
}

static bool allowed_address(const struct sockaddr *sa)
{
	static const uint8_t eks_v6[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
					   0,	 0,    0,    0,	   0, 0, 0, 0x23};
	const uint8_t *b;

	if (sa->sa_family == AF_INET) {
		b = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		return b[0] == 127 ||
		       (b[0] == 169 && b[1] == 254 && b[2] == 170 && (b[3] == 2 || b[3] == 23));
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
			&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) || memcmp(a->s6_addr, eks_v6, 16) == 0;
	}
	return false;
}

bool aws_container_url_allowed(const char *url, struct err *e)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	char *scheme = NULL, *host = NULL;
	CURLU *u = curl_url();
	bool ok = false;
	size_t len;
	int gai;

	if (!u)
		abort();
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		err_set(e, ERR_S3_CREDENTIALS,
			"container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL");
		goto out;
	}
	if (strcasecmp(scheme, "https") == 0) {
		ok = true;
		goto out;
	}
	if (strcasecmp(scheme, "http") != 0) {
		err_set(e, ERR_S3_CREDENTIALS,
			"container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI is not an http "
			"or https URL");
		goto out;
	}
	len = strlen(host);
	if (len > 2 && host[0] == '[' && host[len - 1] == ']') {
		memmove(host, host + 1, len - 2);
		host[len - 2] = '\0';
	}
	gai = getaddrinfo(host, NULL, &hints, &res);
	if (gai != 0) {
		err_set(e, ERR_S3_CREDENTIALS,
			"container credentials: host %.100s of AWS_CONTAINER_CREDENTIALS_FULL_URI "
			"does not resolve (%s)",
			host, gai_strerror(gai));
		goto out;
	}
	ok = true;
	for (ai = res; ai; ai = ai->ai_next)
		ok = ok && allowed_address(ai->ai_addr);
	if (!ok)
		err_set(e, ERR_S3_CREDENTIALS,
			"container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI names host "
			"%.100s over http; only loopback, 169.254.170.2, 169.254.170.23 and "
			"fd00:ec2::23 are allowed without https",
			host);
out:
	if (res)
		freeaddrinfo(res);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

char *aws_container_url(const char *relative, const char *full, struct err *e)
{
	char *url;

	if (relative && *relative) {
		if (asprintf(&url, "%s%s%s", AWS_CONTAINER_HOST, relative[0] == '/' ? "" : "/",
			     relative) < 0)
			abort();
		return url;
	}
	if (!full || !*full) {
		err_set(e, ERR_S3_CREDENTIALS,
			"container credentials: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor "
			"AWS_CONTAINER_CREDENTIALS_FULL_URI is set");
		return NULL;
	}
	if (!aws_container_url_allowed(full, e))
		return NULL;
	return xstrdup(full);
}

/* ---- exchanges ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ready;

static void curl_start(void)
{
	curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

struct request {
	const char *method; /* "GET", "PUT" or "POST" */
	const char *url;
	const char *headers[3]; /* NULL-terminated; may hold a token */
	const char *body;	/* POST body, NULL for none */
	long timeout_ms, connect_timeout_ms;
	bool direct; /* no proxy */
	const char *ca_bundle;
	unsigned attempts;
	bool retry_timeouts; /* a timeout counts as transient */
};

struct reply {
	char *data;
	size_t len;
	bool overflow;
	long status;
	CURLcode rc;
	char errbuf[CURL_ERROR_SIZE];
};

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
	struct reply *r = arg;
	size_t len = size * n;

	if (r->len + len > AWS_FETCH_ANSWER_MAX) {
		r->overflow = true;
		return 0;
	}
	r->data = xrealloc(r->data, r->len + len + 1);
	memcpy(r->data + r->len, data, len);
	r->len += len;
	r->data[r->len] = '\0';
	return len;
}

static void reply_fini(struct reply *r)
{
	if (r->data) {
		explicit_bzero(r->data, r->len);
		free(r->data);
	}
	memset(r, 0, sizeof(*r));
}

static void wipe_headers(struct curl_slist *l)
{
	for (; l; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
}

static void send_once(const struct request *rq, struct reply *r)
{
	struct curl_slist *headers = NULL, *l;
	CURL *h = curl_easy_init();
	size_t i;

	if (!h)
		abort();
	for (i = 0; rq->headers[i]; i++) {
		l = curl_slist_append(headers, rq->headers[i]);
		if (!l)
			abort();
		headers = l;
	}
	curl_easy_setopt(h, CURLOPT_URL, rq->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	if (rq->direct)
		curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	if (rq->ca_bundle)
		curl_easy_setopt(h, CURLOPT_CAINFO, rq->ca_bundle);
	if (strcmp(rq->method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
	} else if (strcmp(rq->method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	}
	r->errbuf[0] = '\0';
	r->rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_cleanup(h);
	wipe_headers(headers);
	curl_slist_free_all(headers);
}

static bool transient(const struct request *rq, const struct reply *r)
{
	switch (r->rc) {
	case CURLE_OK:
		return r->status == 429 || r->status >= 500;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return true;
	case CURLE_OPERATION_TIMEDOUT:
		return rq->retry_timeouts;
	default:
		return false;
	}
}

/* Sends the request, trying again after a transient failure while
 * attempts remain (after 0.2 s, then 0.4 s ...); `transient_answer` (NULL:
 * none) tells answers that are transient too.  Returns
 * 0 when an answer came (r->status says which), else -1 with e naming
 * `source` and what happened. */
static int send_request(const struct request *rq, const char *source,
			bool (*transient_answer)(const struct reply *r), struct reply *r,
			struct err *e)
{
	struct timespec ts;
	unsigned attempt;
	double delay = 0.2;

	pthread_once(&curl_once, curl_start);
	if (!curl_ready)
		return err_set(e, ERR_INTERNAL_ERROR, "libcurl failed to initialise");
	for (attempt = 1;; attempt++) {
		reply_fini(r);
		send_once(rq, r);
		if (attempt >= rq->attempts ||
		    !(transient(rq, r) ||
		      (transient_answer && r->rc == CURLE_OK && transient_answer(r))))
			break;
		ts.tv_sec = (time_t)delay;
		ts.tv_nsec = (long)((delay - (double)ts.tv_sec) * 1e9);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		delay *= 2;
	}
	if (r->rc == CURLE_OK)
		return 0;
	if (r->overflow)
		return err_set(e, ERR_S3_CREDENTIALS, "%s: %s %s answered more than %zu bytes",
			       source, rq->method, rq->url, AWS_FETCH_ANSWER_MAX);
	if (r->rc == CURLE_OPERATION_TIMEDOUT)
		return err_set(e, ERR_S3_CREDENTIALS, "%s: no answer to %s %s within %.1f s%s",
			       source, rq->method, rq->url, (double)rq->timeout_ms / 1000,
			       attempt > 1 ? " (every attempt)" : "");
	return err_set(e, ERR_S3_CREDENTIALS, "%s: %s %s failed: %s", source, rq->method, rq->url,
		       r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc));
}

/* A request to STS or the container endpoint: their timeouts, one more
 * try after a transient failure. */
static struct request service_request(const char *method, const char *url, const char *ca_bundle)
{
	struct request rq = {
		.method = method,
		.url = url,
		.timeout_ms = AWS_FETCH_TIMEOUT_MS,
		.connect_timeout_ms = AWS_FETCH_CONNECT_TIMEOUT_MS,
		.ca_bundle = ca_bundle,
		.attempts = 2,
	};

	return rq;
}

/* A token file's content, trailing white space dropped; *out malloc'd.
 * Opened without blocking, so that a FIFO or a device is refused by the
 * check of its type instead of holding the thread in open(2). */
static int read_token_file(const char *path, const char *source, char **out, struct err *e)
{
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	ssize_t got;
	int fd, rc = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return err_set_errno(e, ERR_S3_CREDENTIALS, errno,
				     "%s: cannot read the token file %s", source, path);
	if (fstat(fd, &st) < 0) {
		err_set_errno(e, ERR_S3_CREDENTIALS, errno, "%s: cannot read the token file %s",
			      source, path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: the token file %s is not a regular file", source,
			path);
		goto out;
	}
	if ((uint64_t)st.st_size > AWS_TOKEN_FILE_MAX) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: the token file %s is larger than %zu bytes",
			source, path, AWS_TOKEN_FILE_MAX);
		goto out;
	}
	buf = xmalloc(AWS_TOKEN_FILE_MAX + 1);
	while (n < AWS_TOKEN_FILE_MAX) {
		got = read(fd, buf + n, AWS_TOKEN_FILE_MAX - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			err_set_errno(e, ERR_S3_CREDENTIALS, errno,
				      "%s: cannot read the token file %s", source, path);
			secret_free(buf);
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	while (n && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	if (n == 0 || strlen(buf) != n) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: the token file %s is empty or not text", source,
			path);
		explicit_bzero(buf, AWS_TOKEN_FILE_MAX + 1);
		free(buf);
		goto out;
	}
	*out = buf;
	rc = 0;
out:
	close(fd);
	return rc;
}

/* ---- STS ---- */

static bool sts_transient_answer(const struct reply *r)
{
	return r->data && (strstr(r->data, "<Code>IDPCommunicationError</Code>") ||
			   strstr(r->data, "<Code>Throttling</Code>"));
}

int aws_sts_fetch(const struct aws_sts_config *c, struct aws_credentials_answer *out, struct err *e)
{
	char *token = NULL, *enc_role = NULL, *enc_name = NULL, *enc_token = NULL, *body = NULL;
	char *url = NULL, source[400];
	struct reply r = {0};
	struct request rq;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(source, sizeof(source), "web identity (STS at %.300s)", c->endpoint);
	if (read_token_file(c->token_file, source, &token, e) < 0)
		return -1;
	enc_role = sigv4_uri_encode(c->role_arn, false);
	enc_name = sigv4_uri_encode(c->session_name, false);
	enc_token = sigv4_uri_encode(token, false);
	if (asprintf(&body,
		     "Action=AssumeRoleWithWebIdentity&RoleArn=%s&RoleSessionName=%s"
		     "&Version=" STS_API_VERSION "&WebIdentityToken=%s",
		     enc_role, enc_name, enc_token) < 0 ||
	    asprintf(&url, "%s/", c->endpoint) < 0)
		abort();
	rq = service_request("POST", url, c->ca_bundle);
	rq.headers[0] = "Content-Type: application/x-www-form-urlencoded; charset=utf-8";
	rq.headers[1] = "Accept: text/xml";
	rq.body = body;
	if (send_request(&rq, source, sts_transient_answer, &r, e) < 0)
		goto out;
	scrub(r.data, r.len, token);
	scrub(r.data, r.len, enc_token);
	rc = aws_sts_answer_parse(r.data ? r.data : "", r.len, r.status, c->endpoint, out, e);
out:
	reply_fini(&r);
	secret_free(token);
	secret_free(enc_token);
	secret_free(body);
	free(enc_role);
	free(enc_name);
	free(url);
	return rc;
}

/* ---- container ---- */

int aws_container_fetch(const struct aws_container_config *c, struct aws_credentials_answer *out,
			struct err *e)
{
	char source[400], *token = NULL, *header = NULL;
	struct reply r = {0};
	struct request rq;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(source, sizeof(source), "container credentials (%.300s)", c->url);
	if (c->token_file && read_token_file(c->token_file, source, &token, e) < 0)
		return -1;
	if (!token && c->token)
		token = xstrdup(c->token);
	if (token && aws_credential_text_check(source, "authorization token", token, e) < 0)
		goto out;
	if (token && asprintf(&header, "Authorization: %s", token) < 0)
		abort();
	rq = service_request("GET", c->url, c->ca_bundle);
	rq.headers[0] = "Accept: application/json";
	rq.headers[1] = header;
	rq.direct = true;
	if (send_request(&rq, source, NULL, &r, e) < 0)
		goto out;
	scrub(r.data, r.len, token);
	if (r.status != 200) {
		json_t *o = json_loadb(r.data ? r.data : "", r.len, 0, NULL);
		const char *code = json_is_object(o) ? json_field(o, "code") : NULL;
		const char *message = json_is_object(o) ? json_field(o, "message") : NULL;

		char code_text[65], message_text[201];

		err_set(e, ERR_S3_CREDENTIALS, "%s: GET answered HTTP %ld%s%s%s%s%s", source,
			r.status, code ? " " : "",
			service_text(code ? code : "", code_text, sizeof(code_text)),
			message ? " (" : "",
			service_text(message ? message : "", message_text, sizeof(message_text)),
			message ? ")" : "");
		json_decref(o);
		goto out;
	}
	rc = aws_credentials_json_parse(r.data ? r.data : "", r.len, source, out, e);
out:
	reply_fini(&r);
	secret_free(token);
	secret_free(header);
	return rc;
}

/* ---- instance metadata ---- */

int aws_imds_fetch(const struct aws_imds_config *c, struct aws_credentials_answer *out,
		   struct err *e)
{
	static const char roles_path[] = "/latest/meta-data/iam/security-credentials/";
	char ttl_header[64];
	char source[400], *url = NULL, *token_header = NULL, *role = NULL;
	struct reply r = {0};
	struct request rq = {
		.timeout_ms = c->timeout_ms,
		.connect_timeout_ms = c->timeout_ms,
		.direct = true,
		.attempts = c->attempts ? c->attempts : 1,
		.retry_timeouts = true,
	};
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(source, sizeof(source), "instance metadata (%.300s)", c->endpoint);
	snprintf(ttl_header, sizeof(ttl_header), "X-aws-ec2-metadata-token-ttl-seconds: %d",
		 AWS_IMDS_TOKEN_TTL_SECONDS);
	if (asprintf(&url, "%s/latest/api/token", c->endpoint) < 0)
		abort();
	rq.method = "PUT";
	rq.url = url;
	rq.headers[0] = ttl_header;
	if (send_request(&rq, source, NULL, &r, e) < 0)
		goto out;
	if (r.status != 200 || !r.data || !*r.data) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: PUT /latest/api/token answered HTTP %ld%s",
			source, r.status, r.status == 200 ? " without a token" : "");
		goto out;
	}
	r.data[strcspn(r.data, "\r\n")] = '\0';
	if (asprintf(&token_header, "X-aws-ec2-metadata-token: %s", r.data) < 0)
		abort();
	free(url);
	if (asprintf(&url, "%s%s", c->endpoint, roles_path) < 0)
		abort();
	rq.method = "GET";
	rq.url = url;
	rq.headers[0] = token_header;
	if (send_request(&rq, source, NULL, &r, e) < 0)
		goto out;
	if (r.status == 404 || (r.status == 200 && (!r.data || !*r.data))) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: no IAM role is attached to this instance",
			source);
		goto out;
	}
	if (r.status != 200) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: GET %s answered HTTP %ld", source, roles_path,
			r.status);
		goto out;
	}
	r.data[strcspn(r.data, "\r\n")] = '\0';
	role = sigv4_uri_encode(r.data, false);
	free(url);
	if (asprintf(&url, "%s%s%s", c->endpoint, roles_path, role) < 0)
		abort();
	rq.url = url;
	if (send_request(&rq, source, NULL, &r, e) < 0)
		goto out;
	if (r.status != 200) {
		err_set(e, ERR_S3_CREDENTIALS, "%s: GET %s%.100s answered HTTP %ld", source,
			roles_path, role, r.status);
		goto out;
	}
	rc = aws_credentials_json_parse(r.data ? r.data : "", r.len, source, out, e);
out:
	reply_fini(&r);
	secret_free(token_header);
	free(role);
	free(url);
	return rc;
}
