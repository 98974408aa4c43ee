/* SPDX-License-Identifier: MIT */
/*
 * s3_call: running S3 requests.  Every request is addressed and signed
 * (s3_sign.c) and run on a "lane": a curl multi handle with its own
 * connection cache and a few easy handles, borrowed from the client for
 * the duration of one call.  A call may be several requests run in
 * parallel (the chunks of a ranged read); requests that fail transiently
 * are retried together after an exponential, jittered delay.  Answers are
 * checked before their bytes are used: a ranged GET must come back 206
 * with the Content-Range asked for, and never writes past the caller's
 * buffer.
 *
 * Answers that send a request elsewhere are followed at once, without
 * counting as an attempt: a redirect (307 TemporaryRedirect for that one
 * request, 301 PermanentRedirect or AuthorizationHeaderMalformed naming
 * the bucket's region, which later requests for the bucket then use too),
 * at most S3_REDIRECTS_MAX times and only to a host credentials may go to
 * (s3_route_allowed); and RequestTimeTooSkewed, after which every request
 * of the process to that endpoint is signed with the time the server sent,
 * once per request: refused again, it is clock_skew.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/s3.h"
#include "ckptconv/sigv4.h"
#include "ckptconv/util.h"
#include "s3_internal.h"

#define RESPONSE_MAX (16 * MIB)		       /* XML answers (a listing page) */
#define UNRANGED_ANSWER_MAX ((size_t)64 << 10) /* a 200 to a ranged GET */

void s3_call_init(struct call *k, struct s3_client *c, const char *op, const char *method,
		  const char *bucket, const char *key)
{
	memset(k, 0, sizeof(*k));
	k->client = c;
	k->op = op;
	k->method = method;
	k->bucket = bucket;
	k->key = key;
	k->named = key;
}

static void call_attempt_reset(struct call *k)
{
	aws_credentials_release(k->credentials);
	k->credentials = NULL;
	curl_slist_free_all(k->headers);
	k->headers = NULL;
	s3_target_fini(&k->target);
	memset(&k->target, 0, sizeof(k->target));
	buf_fini(&k->answer);
	k->body_pos = k->dst_pos = 0;
	k->status = 0;
	k->overflow = k->has_content_range = k->has_length = false;
	k->etag[0] = k->version_id[0] = k->date[0] = k->bucket_region[0] = k->location[0] = '\0';
	k->errbuf[0] = '\0';
}

void s3_call_fini(struct call *k)
{
	call_attempt_reset(k);
}

/* "s3://bucket/key" for messages. */
static void call_name(const struct call *k, char *buf, size_t len)
{
	snprintf(buf, len, "s3://%s/%s", k->bucket, k->named ? k->named : "");
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
	struct call *k = arg;
	size_t len = size * n;
	char buf[512], *v;
	unsigned long long first, last, total;

	if (len >= sizeof(buf))
		return len;
	memcpy(buf, line, len);
	buf[len] = '\0';
	if (strncmp(buf, "HTTP/", 5) == 0) {
		v = strchr(buf, ' ');
		k->status = v ? strtol(v + 1, NULL, 10) : 0;
		k->has_content_range = k->has_length = false;
		k->etag[0] = k->version_id[0] = k->date[0] = k->bucket_region[0] = k->location[0] = '\0';
		return len;
	}
	v = strchr(buf, ':');
	if (!v)
		return len;
	*v++ = '\0';
	v += strspn(v, " \t");
	v[strcspn(v, "\r\n")] = '\0';
	if (strcasecmp(buf, "content-range") == 0) {
		if (sscanf(v, "bytes %llu-%llu/%llu", &first, &last, &total) == 3) {
			k->has_content_range = true;
			k->range_first = first;
			k->range_last = last;
			k->range_total = total;
		} else if (sscanf(v, "bytes %llu-%llu/*", &first, &last) == 2) {
			k->has_content_range = true;
			k->range_first = first;
			k->range_last = last;
			k->range_total = UINT64_MAX;
		}
	} else if (strcasecmp(buf, "content-length") == 0) {
		k->has_length = true;
		k->content_length = strtoull(v, NULL, 10);
	} else if (strcasecmp(buf, "etag") == 0) {
		snprintf(k->etag, sizeof(k->etag), "%s", v);
	} else if (strcasecmp(buf, "date") == 0) {
		snprintf(k->date, sizeof(k->date), "%s", v);
	} else if (strcasecmp(buf, "x-amz-bucket-region") == 0) {
		snprintf(k->bucket_region, sizeof(k->bucket_region), "%s", v);
	} else if (strcasecmp(buf, "location") == 0) {
		snprintf(k->location, sizeof(k->location), "%s", v);
	} else if (strcasecmp(buf, "x-amz-version-id") == 0) {
		snprintf(k->version_id, sizeof(k->version_id), "%s", v);
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct call *k = arg;
	size_t len = size * n;
	size_t cap = k->ranged ? UNRANGED_ANSWER_MAX : RESPONSE_MAX;

	if (k->ranged && k->status == 206) {
		if (len > k->len - k->dst_pos) {
			k->overflow = true;
			return 0;
		}
		memcpy(k->dst + k->dst_pos, data, len);
		k->dst_pos += len;
		return len;
	}
	if (k->answer.len + len > cap) {
		k->overflow = true;
		return 0;
	}
	buf_append(&k->answer, data, len);
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
	struct call *k = arg;
	size_t len = size * n, left = k->body_len - k->body_pos;

	if (len > left)
		len = left;
	if (len)
		memcpy(buf, (const char *)k->body + k->body_pos, len);
	k->body_pos += len;
	return len;
}

/* curl rewinds the body when it sends a request again on a new connection
 * (a reused connection that the server had closed). */
static int on_seek(void *arg, curl_off_t offset, int origin)
{
	struct call *k = arg;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > k->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	k->body_pos = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

static void add_header(struct call *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_header(struct call *k, const char *fmt, ...)
{
	struct curl_slist *l;
	va_list ap;
	char *h;

	va_start(ap, fmt);
	if (vasprintf(&h, fmt, ap) < 0)
		abort();
	va_end(ap);
	l = curl_slist_append(k->headers, h);
	memset(h, 0, strlen(h));
	free(h);
	if (!l)
		abort();
	k->headers = l;
}

/* ---- the clock requests are signed with ---- */

/* One offset per endpoint for the whole process (AWS is one endpoint):
 * slots are made on first use and kept; past CLOCK_ENDPOINTS endpoints
 * the last slot is shared. */
#define CLOCK_ENDPOINTS 16
static struct {
	char endpoint[256];
	_Atomic long long offset; /* seconds added to time() */
} clocks[CLOCK_ENDPOINTS];
static size_t nclocks;
static pthread_mutex_t clocks_lock = PTHREAD_MUTEX_INITIALIZER; /* protects nclocks, names */

_Atomic long long *s3_clock_for(const char *endpoint)
{
	_Atomic long long *offset = NULL;
	size_t i;

	pthread_mutex_lock(&clocks_lock);
	for (i = 0; i < nclocks && !offset; i++)
		if (strcmp(clocks[i].endpoint, endpoint) == 0)
			offset = &clocks[i].offset;
	if (!offset && nclocks < CLOCK_ENDPOINTS) {
		snprintf(clocks[nclocks].endpoint, sizeof(clocks[nclocks].endpoint), "%s",
			 endpoint);
		offset = &clocks[nclocks++].offset;
	}
	if (!offset)
		offset = &clocks[CLOCK_ENDPOINTS - 1].offset;
	pthread_mutex_unlock(&clocks_lock);
	return offset;
}

time_t s3_clock_now(const struct s3_client *c)
{
	return time(NULL) + (time_t)atomic_load(c->clock_offset);
}

long long s3_clock_correct(const struct s3_client *c, time_t server_time)
{
	long long offset = (long long)(server_time - time(NULL));

	atomic_store(c->clock_offset, offset);
	return offset;
}

/* The route of a bucket S3 said lives elsewhere, for a request not yet
 * routed. */
static void route_from_client(struct call *k)
{
	struct s3_client *c = k->client;

	if (k->routed)
		return;
	pthread_mutex_lock(&c->moved_lock);
	if (c->moved_bucket[0] && strcmp(c->moved_bucket, k->bucket) == 0) {
		k->route = c->moved;
		k->routed = true;
	}
	pthread_mutex_unlock(&c->moved_lock);
}

/* Configures k->easy for one attempt, signed now. */
static int call_setup(struct call *k)
{
	struct s3_client *c = k->client;
	char amz_date[SIGV4_AMZ_DATE_SIZE], range[64] = "";
	time_t now = s3_clock_now(c);
	struct sigv4_header extra[4];
	size_t nextra = 0;
	CURL *h = k->easy;
	char *auth;

	call_attempt_reset(k);
	if (aws_credentials_get(c->credentials, &k->credentials, &k->err))
		return -1;
	route_from_client(k);
	s3_target_build_at(c, k->routed ? &k->route : NULL, k->bucket, k->key, k->params,
			   k->nparams, &k->target);
	if (k->ranged)
		snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, k->off,
			 k->off + k->len - 1);
	if (k->ranged)
		extra[nextra++] = (struct sigv4_header){"range", range};
	if (k->crc32c[0]) {
		extra[nextra++] = (struct sigv4_header){"x-amz-checksum-crc32c", k->crc32c};
		extra[nextra++] = (struct sigv4_header){"x-amz-sdk-checksum-algorithm", "CRC32C"};
	}
	if (k->crc32c_parts)
		extra[nextra++] = (struct sigv4_header){"x-amz-checksum-algorithm", "CRC32C"};
	auth = s3_authorization_in(c, k->routed ? k->route.region : NULL, k->credentials, k->method,
				   &k->target, extra, nextra, k->payload_hash, now);
	if (!auth)
		return err_set(&k->err, ERR_INTERNAL_ERROR, "signing the request failed");
	sigv4_amz_date(now, amz_date);
	add_header(k, "Host: %s", k->target.host);
	add_header(k, "x-amz-date: %s", amz_date);
	add_header(k, "x-amz-content-sha256: %s", k->payload_hash);
	if (k->credentials->session_token)
		add_header(k, "x-amz-security-token: %s", k->credentials->session_token);
	add_header(k, "Authorization: %s", auth);
	memset(auth, 0, strlen(auth));
	free(auth);
	if (k->ranged)
		add_header(k, "Range: %s", range);
	if (k->if_match)
		add_header(k, "If-Match: %s", k->if_match);
	if (k->crc32c[0]) {
		add_header(k, "x-amz-checksum-crc32c: %s", k->crc32c);
		add_header(k, "x-amz-sdk-checksum-algorithm: CRC32C");
	}
	if (k->crc32c_parts)
		add_header(k, "x-amz-checksum-algorithm: CRC32C");
	add_header(k, "Expect:");
	if (k->content_type)
		add_header(k, "Content-Type: %s", k->content_type);
	else
		add_header(k, "Content-Type:");

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	curl_easy_setopt(h, CURLOPT_URL, k->target.url);
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, k->headers);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->stall_timeout);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L << 10);
	curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, k->errbuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, k);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
	curl_easy_setopt(h, CURLOPT_PRIVATE, k);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (c->ca_bundle)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_bundle);
	if (strcmp(k->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(k->method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, k);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, k);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)k->body_len);
	} else if (strcmp(k->method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, k->body ? k->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)k->body_len);
	} else if (strcmp(k->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, k->method);
	}
	return 0;
}

static bool retryable_curl_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_SEND_FAIL_REWIND:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		return true;
	default:
		return false;
	}
}

static bool retryable_s3_code(const char *code)
{
	return strcmp(code, "SlowDown") == 0 || strcmp(code, "RequestTimeout") == 0 ||
	       strcmp(code, "InternalError") == 0 || strcmp(code, "ServiceUnavailable") == 0 ||
	       strcmp(code, "OperationAborted") == 0;
}

static void call_fail(struct call *k, enum call_state state, enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void call_fail(struct call *k, enum call_state state, enum err_code code, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX], name[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	call_name(k, name, sizeof(name));
	err_clear(&k->err);
	err_set(&k->err, code, "%s: %s", name, msg);
	k->state = state;
}

/* A region name as S3 spells them ("eu-west-1"). */
static bool check_region_name(const char *region)
{
	const char *p;

	for (p = region; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
			return false;
	return p != region && p - region < 64;
}

/* The bucket is in another region and the request cannot go there. */
static void wrong_region(struct call *k, const char *region, const char *what,
			 const char *authority, const char *why)
{
	const char *configured = k->client->region;

	if (!region[0])
		call_fail(k, CALL_FAILED, ERR_S3_WRONG_REGION,
			  "%s: the bucket is not in region %s as configured, and S3 named no "
			  "region%s%s%s%s",
			  what, configured, authority ? "; not followed to " : "",
			  authority ? authority : "", why ? ": " : "", why ? why : "");
	else if (authority)
		call_fail(k, CALL_FAILED, ERR_S3_WRONG_REGION,
			  "%s: the bucket is in region %s, not %s; not followed to %s (%s): set "
			  "the region to %s (AWS_REGION, --s3-region) and an endpoint of it",
			  what, region, configured, authority, why, region);
	else
		call_fail(k, CALL_FAILED, ERR_S3_WRONG_REGION,
			  "%s: the bucket is in region %s, not %s, and S3 still redirects after "
			  "%u redirects: set the region to %s (AWS_REGION, --s3-region)",
			  what, region, configured, k->redirects, region);
}

/* "https://host:port/path" -> its scheme and host[:port], lower case. */
static bool location_parse(const char *url, bool *https, char *authority, size_t len)
{
	size_t n;

	if (strncasecmp(url, "https://", 8) == 0) {
		*https = true;
		url += 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		*https = false;
		url += 7;
	} else {
		return false;
	}
	n = strcspn(url, "/?#");
	if (n == 0 || n >= len)
		return false;
	for (size_t i = 0; i < n; i++)
		authority[i] = (char)tolower((unsigned char)url[i]);
	authority[n] = '\0';
	return true;
}

static bool route_equal(const struct route *a, const struct route *b)
{
	return strcmp(a->authority, b->authority) == 0 && a->https == b->https &&
	       strcmp(a->region, b->region) == 0;
}

/* Remembers that the bucket lives at `route`, for the client's later
 * requests; says so once. */
static void route_remember(struct call *k)
{
	struct s3_client *c = k->client;
	bool told;

	pthread_mutex_lock(&c->moved_lock);
	told = strcmp(c->moved_bucket, k->bucket) == 0 && route_equal(&c->moved, &k->route);
	snprintf(c->moved_bucket, sizeof(c->moved_bucket), "%s", k->bucket);
	c->moved = k->route;
	pthread_mutex_unlock(&c->moved_lock);
	if (!told)
		log_warn("s3://%s: the bucket is in region %s, not %s as configured; requests go "
			 "to %s (set AWS_REGION=%s to go there at once)",
			 k->bucket, k->route.region[0] ? k->route.region : c->region, c->region,
			 k->route.authority[0] ? k->route.authority :
			 c->custom_endpoint    ? c->endpoint_authority :
						 "its regional endpoint",
			 k->route.region[0] ? k->route.region : c->region);
}

/* S3 sends the request elsewhere: 307 TemporaryRedirect (to Location, or
 * <Endpoint>) for this request; 301 PermanentRedirect (to <Endpoint> and
 * the region of x-amz-bucket-region) or 400 AuthorizationHeaderMalformed
 * (naming the <Region>) for the bucket.  False when the answer is none of
 * these. */
static bool follow_redirect(struct call *k, const struct s3_error_answer *x, const char *what)
{
	struct s3_client *c = k->client;
	bool temporary = k->status == 307 || strcmp(x->code, "TemporaryRedirect") == 0;
	bool permanent = k->status == 301 || strcmp(x->code, "PermanentRedirect") == 0;
	bool region_named = strcmp(x->code, "AuthorizationHeaderMalformed") == 0 && x->region[0];
	const char *region = x->region[0] ? x->region : k->bucket_region;
	struct route next;
	char authority[256] = "", why[300], name[300];
	bool https;

	if (!temporary && !permanent && !region_named)
		return false;
	route_from_client(k);
	next = k->routed ? k->route : (struct route){.region = ""};
	https = next.authority[0] ? next.https : c->https;
	if (temporary && k->location[0]) {
		if (!location_parse(k->location, &https, authority, sizeof(authority))) {
			call_fail(k, CALL_FAILED, ERR_S3_ERROR,
				  "%s to '%.200s', which is not an http(s) URL", what, k->location);
			return true;
		}
	} else if (x->endpoint[0]) {
		snprintf(authority, sizeof(authority), "%s", x->endpoint);
		for (char *p = authority; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	if (region[0] && check_region_name(region))
		snprintf(next.region, sizeof(next.region), "%s", region);
	if (authority[0]) {
		if (!s3_route_allowed(c, k->bucket, authority, https, why, sizeof(why))) {
			if (temporary)
				call_fail(k, CALL_FAILED, ERR_S3_ERROR,
					  "%s to %s://%s, not followed: %s", what,
					  https ? "https" : "http", authority, why);
			else
				wrong_region(k, next.region, what, authority, why);
			return true;
		}
		snprintf(next.authority, sizeof(next.authority), "%s", authority);
		next.https = https;
	}
	/* A 307 to where the request went is sent again (some gateways ask
	 * so while they settle); a 301 to there would only come back. */
	if (!temporary &&
	    (k->routed ? route_equal(&next, &k->route) :
			 !next.authority[0] &&
				 (!next.region[0] || strcmp(next.region, c->region) == 0))) {
		wrong_region(k, next.region, what, NULL, NULL);
		return true;
	}
	if (k->redirects >= S3_REDIRECTS_MAX) {
		if (temporary)
			call_fail(k, CALL_FAILED, ERR_S3_ERROR,
				  "%s; not followed: redirected %u times already, at most %d are "
				  "followed",
				  what, k->redirects, S3_REDIRECTS_MAX);
		else
			wrong_region(k, next.region, what, NULL, NULL);
		return true;
	}
	k->route = next;
	k->routed = true;
	k->redirects++;
	k->state = CALL_RESEND;
	if (temporary) {
		call_name(k, name, sizeof(name));
		log_info("%s: %s; sent again to %s", name, what,
			 next.authority[0] ? next.authority : "the endpoint");
	} else {
		route_remember(k);
	}
	return true;
}

#define SERVER_TIME_MIN ((time_t)946684800)	/* 2000-01-01T00:00:00Z */
#define SERVER_TIME_MAX ((time_t)253402300799) /* 9999-12-31T23:59:59Z */

/* S3 refused the request time (RequestTimeTooSkewed): the clock is set to
 * the server's (<ServerTime>, else the Date header) and the request sent
 * again, once. */
static void correct_clock(struct call *k, const struct s3_error_answer *x, const char *what)
{
	time_t server = (time_t)-1, local = time(NULL);
	struct tm tm = {0};
	char name[300];
	long long before = (long long)(s3_clock_now(k->client) - local), offset;

	if (x->server_time[0] &&
	    sscanf(x->server_time, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6) {
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		server = timegm(&tm);
	}
	if (server == (time_t)-1 && k->date[0])
		server = (time_t)curl_getdate(k->date, NULL);
	/* A time SigV4 cannot spell (x-amz-date has four-digit years) or
	 * before S3 existed is no time to sign with. */
	if (server != (time_t)-1 && (server < SERVER_TIME_MIN || server > SERVER_TIME_MAX)) {
		call_fail(k, CALL_FAILED, ERR_CLOCK_SKEW,
			  "%s, with a server time out of range (%s): not taken; this machine's "
			  "clock or the server's is wrong",
			  what, x->server_time[0] ? x->server_time : k->date);
		return;
	}
	if (server == (time_t)-1) {
		call_fail(k, CALL_FAILED, ERR_CLOCK_SKEW,
			  "%s, without its own time (no ServerTime, no Date): this machine's "
			  "clock is wrong",
			  what);
		return;
	}
	if (k->skew_corrections > 0) {
		call_fail(k, CALL_FAILED, ERR_CLOCK_SKEW,
			  "%s, again after signing with the server's time: this machine's clock is "
			  "%lld s off the server's (%s)",
			  what, (long long)(server - local),
			  x->server_time[0] ? x->server_time : k->date);
		return;
	}
	offset = s3_clock_correct(k->client, server);
	if (llabs(offset - before) > 1) {
		call_name(k, name, sizeof(name));
		log_warn("%s: %s: this machine's clock is %lld s %s the server's; requests are "
			 "signed with the server's time from now on",
			 name, what, llabs(offset), offset > 0 ? "behind" : "ahead of");
	}
	k->skew_corrections++;
	k->state = CALL_RESEND;
}

/* The words for where the credentials came from. */
static const char *source_words(const char *source)
{
	if (strcmp(source, AWS_SOURCE_ENVIRONMENT) == 0)
		return "the environment (AWS_SESSION_TOKEN)";
	if (strcmp(source, AWS_SOURCE_SHARED_FILES) == 0)
		return "the shared files (aws_session_token of the profile)";
	if (strcmp(source, AWS_SOURCE_WEB_IDENTITY) == 0)
		return "web identity (STS AssumeRoleWithWebIdentity)";
	if (strcmp(source, AWS_SOURCE_CONTAINER) == 0)
		return "the container credentials endpoint";
	if (strcmp(source, AWS_SOURCE_INSTANCE_METADATA) == 0)
		return "instance metadata";
	return *source ? source : "the credentials provider";
}

/* ExpiredToken: credentials from a source that refreshes them are
 * refreshed and the request retried; the environment's and the shared
 * files' are read once, so their token stays expired. */
static void expired_token(struct call *k, const char *what)
{
	const char *source = k->credentials && k->credentials->source ? k->credentials->source : "";
	bool fixed = strcmp(source, AWS_SOURCE_ENVIRONMENT) == 0 ||
		     strcmp(source, AWS_SOURCE_SHARED_FILES) == 0;

	if (fixed) {
		call_fail(k, CALL_FAILED, ERR_S3_CREDENTIALS,
			  "%s: the session token of the credentials from %s has expired; give "
			  "new temporary credentials",
			  what, source_words(source));
		return;
	}
	/* The service holds them expired (its clock runs ahead of ours):
	 * refreshed before the next attempt. */
	aws_credentials_expire(k->client->credentials, k->credentials);
	call_fail(k, CALL_RETRY, ERR_S3_CREDENTIALS,
		  "%s: the session token of the credentials from %s has expired; refreshed", what,
		  source_words(source));
}

/* Decides what an error answer means: an HTTP error status, or a 200
 * whose body is an <Error>, which is retried alike when its code is a
 * transient one (InternalError, SlowDown, ...). */
static void classify_error(struct call *k, const struct s3_error_answer *error)
{
	struct s3_error_answer x = *error;
	enum err_code code;
	char what[300];
	if (x.code[0])
		snprintf(what, sizeof(what), "%s answered %ld %s (%s)", k->op, k->status, x.code,
			 x.message[0] ? x.message : "no message");
	else
		snprintf(what, sizeof(what), "%s answered HTTP %ld", k->op, k->status);
	/* If-Match no longer holds: the object was replaced since its first
	 * read, and every retry would be answered alike. */
	if (k->status == 412 && k->if_match) {
		call_fail(k, CALL_FAILED, ERR_SOURCE_CHANGED,
			  "changed while the job read it (%s: the ETag is no longer %s);"
			  " nothing of the job is published, run it again on the new version",
			  what, k->if_match);
		return;
	}
	if (k->status == 429 || k->status >= 500 || retryable_s3_code(x.code)) {
		call_fail(k, CALL_RETRY, ERR_S3_UNAVAILABLE, "%s", what);
		return;
	}
	if (follow_redirect(k, &x, what))
		return;
	if (strcmp(x.code, "RequestTimeTooSkewed") == 0) {
		correct_clock(k, &x, what);
		return;
	}
	if (strcmp(x.code, "ExpiredToken") == 0) {
		expired_token(k, what);
		return;
	}
	if (k->status == 403 || strcmp(x.code, "AccessDenied") == 0)
		code = ERR_S3_ACCESS_DENIED;
	else if (strcmp(x.code, "NoSuchBucket") == 0)
		code = ERR_S3_NO_SUCH_BUCKET;
	else if (k->status == 404 && (strcmp(x.code, "NoSuchKey") == 0 || !x.code[0]))
		code = ERR_SOURCE_NOT_FOUND;
	else if (k->status == 416)
		code = ERR_FILE_TRUNCATED;
	else
		code = ERR_S3_ERROR;
	call_fail(k, CALL_FAILED, code, "%s", what);
}

/* The <Error> of an answer's body, if it is one. */
static bool answer_error(const struct call *k, struct s3_error_answer *x)
{
	s3_error_answer_parse(k->answer.data ? k->answer.data : "", k->answer.len, x);
	return x->is_error;
}

static void check_ranged_answer(struct call *k)
{
	uint64_t last = k->off + k->len - 1;

	if (k->status == 200) {
		/* A server that ignores Range sends the whole object: usable
		 * only when that is exactly the bytes asked for. */
		if (!k->overflow && k->off == 0 && k->answer.len == k->len) {
			memcpy(k->dst, k->answer.data, k->len);
			k->state = CALL_DONE;
			return;
		}
		call_fail(
			k, CALL_FAILED, ERR_S3_BAD_RESPONSE,
			"the server ignored the Range header (answered 200 to a request for bytes "
			"%" PRIu64 "-%" PRIu64 ")",
			k->off, last);
		return;
	}
	if (k->status != 206 || !k->has_content_range) {
		call_fail(k, CALL_FAILED, ERR_S3_BAD_RESPONSE,
			  "answered %ld without a Content-Range to a ranged GET", k->status);
		return;
	}
	if (k->range_first == k->off && k->range_last < last && k->range_total != UINT64_MAX &&
	    k->range_total <= last) {
		call_fail(k, CALL_FAILED, ERR_FILE_TRUNCATED,
			  "the object is %" PRIu64
			  " bytes, too short for %zu bytes at offset %" PRIu64,
			  k->range_total, k->len, k->off);
		return;
	}
	if (k->range_first != k->off || k->range_last != last || k->dst_pos != k->len) {
		call_fail(k, CALL_FAILED, ERR_S3_BAD_RESPONSE,
			  "asked for bytes %" PRIu64 "-%" PRIu64 ", got Content-Range %" PRIu64
			  "-%" PRIu64 " with %zu bytes",
			  k->off, last, k->range_first, k->range_last, k->dst_pos);
		return;
	}
	k->state = CALL_DONE;
}

/* Decides what one finished attempt means. */
static void call_finish(struct call *k, CURLcode rc)
{
	struct s3_error_answer x;

	if (rc != CURLE_OK && k->overflow) {
		if (k->ranged && k->status == 200)
			call_fail(
				k, CALL_FAILED, ERR_S3_BAD_RESPONSE,
				"the server ignored the Range header (answered 200 with the whole "
				"object)");
		else
			call_fail(k, CALL_FAILED, ERR_S3_BAD_RESPONSE,
				  "the answer is larger than the %s asked for",
				  k->ranged ? "range" : "client accepts");
		return;
	}
	if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
		call_fail(k, CALL_FAILED, ERR_S3_CONFIG,
			  "%s: %s (is AWS_CA_BUNDLE the endpoint's certificate authority?)", k->op,
			  k->errbuf[0] ? k->errbuf : curl_easy_strerror(rc));
		return;
	}
	if (rc != CURLE_OK) {
		call_fail(k, retryable_curl_error(rc) ? CALL_RETRY : CALL_FAILED,
			  retryable_curl_error(rc) ? ERR_S3_UNAVAILABLE : ERR_S3_ERROR, "%s: %s", k->op,
			  k->errbuf[0] ? k->errbuf : curl_easy_strerror(rc));
		return;
	}
	if (k->status < 200 || k->status > 299) {
		answer_error(k, &x);
		classify_error(k, &x);
		return;
	}
	if (k->error_in_ok && answer_error(k, &x)) {
		classify_error(k, &x);
		return;
	}
	/* A server that ignores If-Match still names the version it sent. */
	if (k->if_match && k->etag[0] && strcmp(k->etag, k->if_match) != 0) {
		call_fail(k, CALL_FAILED, ERR_SOURCE_CHANGED,
			  "changed while the job read it (ETag %s -> %s); nothing of the job is"
			  " published, run it again on the new version",
			  k->if_match, k->etag);
		return;
	}
	if (k->ranged) {
		check_ranged_answer(k);
		return;
	}
	k->state = CALL_DONE;
}

/* One line per request at debug level: what it was and how long it took. */
static void log_request(const struct call *k)
{
	char name[300];

	call_name(k, name, sizeof(name));
	log_msg(LOG_DEBUG, NULL, "%s %s: HTTP %ld, %zu bytes out, %zu in, %.3f s", k->op, name,
		k->status, k->body_len, k->ranged ? k->dst_pos : k->answer.len,
		now_seconds() - k->started);
}

/* Jitter: one xorshift generator for the process, advanced atomically, so
 * that no S3 state is kept per thread. */
static double jitter_unit(void)
{
	static _Atomic uint64_t state;
	uint64_t old = atomic_load(&state), x;

	do {
		x = old ? old
			: (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)&state << 16) ^
				  0x9e3779b97f4a7c15ULL;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	} while (!atomic_compare_exchange_weak(&state, &old, x));
	return (double)(x >> 11) / (double)(1ULL << 53);
}

/* Half the exponential delay plus up to half again at random. */
static void backoff_sleep(const struct s3_client *c, unsigned failures)
{
	double d = c->backoff_base;
	struct timespec ts;
	unsigned i;

	for (i = 1; i < failures && d < c->backoff_cap; i++)
		d *= 2;
	if (d > c->backoff_cap)
		d = c->backoff_cap;
	d = d / 2 + jitter_unit() * d / 2;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Runs every call not yet done, at most LANE_HANDLES at once. */
static void run_round(struct lane *lane, struct call **calls, size_t n)
{
	struct call *active[LANE_HANDLES] = {0};
	size_t next = 0, running = 0;
	int still, slot, queued;
	struct call *k;
	CURLMsg *msg;

	for (;;) {
		for (slot = 0; slot < LANE_HANDLES && next < n; slot++) {
			if (active[slot])
				continue;
			while (next < n && calls[next]->state == CALL_DONE)
				next++;
			if (next == n)
				break;
			k = calls[next++];
			if (!lane->easy[slot] && !(lane->easy[slot] = curl_easy_init()))
				abort();
			k->easy = lane->easy[slot];
			k->state = CALL_PENDING;
			err_clear(&k->err);
			if (call_setup(k)) {
				k->state = CALL_FAILED;
				continue;
			}
			k->started = now_seconds();
			curl_multi_add_handle(lane->multi, k->easy);
			active[slot] = k;
			running++;
		}
		if (running == 0)
			break;
		curl_multi_perform(lane->multi, &still);
		while ((msg = curl_multi_info_read(lane->multi, &queued))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			for (slot = 0; slot < LANE_HANDLES; slot++) {
				if (!active[slot] || active[slot]->easy != msg->easy_handle)
					continue;
				k = active[slot];
				curl_multi_remove_handle(lane->multi, k->easy);
				call_finish(k, msg->data.result);
				log_request(k);
				active[slot] = NULL;
				running--;
				break;
			}
		}
		if (running > 0 && still > 0)
			curl_multi_poll(lane->multi, NULL, 0, 1000, NULL);
	}
}

/* Runs the calls to completion with bounded retries.  On failure e holds
 * the first permanent error, or s3_unavailable naming the last transient
 * one. */
int s3_perform(struct s3_client *c, struct call **calls, size_t n, struct err *e)
{
	struct lane *lane = s3_lane_get(c);
	size_t i, retry, resend;
	unsigned attempt;
	struct call *last_retry = NULL;
	int rc = -1;

	for (attempt = 1;;) {
		run_round(lane, calls, n);
		retry = resend = 0;
		for (i = 0; i < n; i++) {
			if (calls[i]->state == CALL_FAILED) {
				err_copy(e, &calls[i]->err);
				goto out;
			}
			if (calls[i]->state == CALL_RETRY) {
				retry++;
				last_retry = calls[i];
			}
			resend += calls[i]->state == CALL_RESEND;
		}
		if (retry == 0 && resend == 0)
			break;
		if (retry == 0)
			continue; /* sent elsewhere or signed anew: not an attempt */
		if (attempt >= c->max_attempts) {
			/* s3_unavailable, or s3_credentials for a token
			 * that stayed expired */
			err_set(e, last_retry->err.code, "%s; gave up after %u attempts",
				last_retry->err.msg, attempt);
			goto out;
		}
		log_warn("%s; retrying (attempt %u of %u)", last_retry->err.msg, attempt + 1,
			 c->max_attempts);
		backoff_sleep(c, attempt);
		attempt++;
	}
	rc = 0;
out:
	s3_lane_put(c, lane);
	return rc;
}

int s3_perform_one(struct call *k, struct err *e)
{
	struct call *calls[1] = {k};

	s3_payload_hash_of(k->client, k->body, k->body_len, k->payload_hash);
	return s3_perform(k->client, calls, 1, e);
}
