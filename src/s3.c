/* SPDX-License-Identifier: MIT */
/*
 * s3: the S3 client.  Settings resolve thread > process > environment;
 * every request is addressed (path-style or virtual-hosted), signed with
 * sigv4 and run on a "lane": a curl multi handle with its own connection
 * cache and a few easy handles, borrowed from the client's pool for the
 * duration of one call so connections are reused across calls without
 * sharing a connection cache between threads.  A call may be several
 * requests run in parallel (the chunks of a ranged read); requests that
 * fail transiently are retried together after an exponential, jittered
 * delay.  Answers are checked before their bytes are used: a ranged GET
 * must come back 206 with the Content-Range asked for, and never writes
 * past the caller's buffer.  XML answers are parsed with expat.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <expat.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/s3.h"
#include "ckptconv/sigv4.h"
#include "ckptconv/util.h"

#define MIB ((uint64_t)1 << 20)
#define DEFAULT_REGION "us-east-1"
#define DEFAULT_PART_SIZE (64 * MIB)
#define MIN_PART_SIZE (5 * MIB)
#define DEFAULT_RANGE_SIZE (8 * MIB)
#define MIN_RANGE_SIZE ((size_t)64 << 10)
#define DEFAULT_MAX_ATTEMPTS 5
#define DEFAULT_BACKOFF_BASE 0.2
#define DEFAULT_BACKOFF_CAP 5.0
#define DEFAULT_CONNECT_TIMEOUT 10
#define DEFAULT_STALL_TIMEOUT 30
#define LANE_HANDLES 8			       /* parallel requests of one call */
#define RESPONSE_MAX (16 * MIB)		       /* XML answers (a listing page) */
#define UNRANGED_ANSWER_MAX ((size_t)64 << 10) /* a 200 to a ranged GET */
#define SETTING_MAX 512

/* ---- settings ---- */

struct settings_copy {
	char endpoint_url[SETTING_MAX];
	char region[SETTING_MAX];
	char addressing_style[SETTING_MAX];
};

static pthread_mutex_t defaults_lock = PTHREAD_MUTEX_INITIALIZER;
static struct settings_copy process_settings;	    /* protected by defaults_lock */
static struct aws_credentials *process_credentials; /* protected by defaults_lock */
static __thread struct settings_copy thread_settings;

enum style { STYLE_AUTO, STYLE_PATH, STYLE_VIRTUAL };

static bool is_set(const char *v)
{
	return v && *v;
}

static int parse_style(const char *text, enum style *out, struct err *e)
{
	if (!is_set(text) || strcmp(text, "auto") == 0)
		*out = STYLE_AUTO;
	else if (strcmp(text, "path") == 0)
		*out = STYLE_PATH;
	else if (strcmp(text, "virtual") == 0)
		*out = STYLE_VIRTUAL;
	else
		return err_set(e, "s3_config", "addressing style '%s' is not path, virtual or auto",
			       text);
	return 0;
}

static int check_region(const char *region, struct err *e)
{
	const char *p;

	if (strlen(region) > 64)
		return err_set(e, "s3_config", "the region name is longer than 64 characters");
	for (p = region; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
			return err_set(e, "s3_config", "region '%s' is not a region name", region);
	return 0;
}

struct endpoint {
	bool https;
	char *authority; /* host[:port], lower case, default port dropped */
};

static bool host_char(unsigned char c)
{
	return isalnum(c) || c == '.' || c == '-' || c == '_';
}

static int endpoint_parse(const char *url, struct endpoint *out, struct err *e)
{
	const char *p, *host, *host_end, *port = NULL;
	unsigned long port_number = 0;
	size_t scheme_len;
	char *q;

	out->authority = NULL;
	if (strchr(url, '@')) /* never echo credentials put in a URL */
		return err_set(e, "s3_config", "the endpoint URL must not hold user information");
	if (strncasecmp(url, "https://", 8) == 0) {
		out->https = true;
		scheme_len = 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		out->https = false;
		scheme_len = 7;
	} else {
		return err_set(e, "s3_config",
			       "endpoint '%.200s' is not an http:// or https:// URL", url);
	}
	host = url + scheme_len;
	if (*host == '[') {
		host_end = strchr(host, ']');
		if (!host_end)
			goto bad;
		for (p = host + 1; p < host_end; p++)
			if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
				goto bad;
		host_end++;
	} else {
		for (host_end = host; host_char((unsigned char)*host_end); host_end++)
			;
	}
	if (host_end == host)
		goto bad;
	p = host_end;
	if (*p == ':') {
		port = ++p;
		while (isdigit((unsigned char)*p))
			p++;
		if (p == port || p - port > 5)
			goto bad;
		port_number = strtoul(port, NULL, 10);
		if (port_number == 0 || port_number > 65535)
			goto bad;
	}
	if (*p == '/')
		p++;
	if (*p != '\0')
		goto bad;
	if (port && port_number == (out->https ? 443UL : 80UL))
		port = NULL;
	if (port) {
		if (asprintf(&out->authority, "%.*s:%lu", (int)(host_end - host), host,
			     port_number) < 0)
			abort();
	} else {
		out->authority = xmalloc((size_t)(host_end - host) + 1);
		memcpy(out->authority, host, (size_t)(host_end - host));
		out->authority[host_end - host] = '\0';
	}
	for (q = out->authority; *q; q++)
		*q = (char)tolower((unsigned char)*q);
	return 0;
bad:
	return err_set(e, "s3_config",
		       "endpoint '%.200s' is not scheme://host[:port] (no user, path or query)",
		       url);
}

char *s3_endpoint_normalize(const char *url, struct err *e)
{
	struct endpoint ep;
	char *out;

	if (!url || endpoint_parse(url, &ep, e))
		return NULL;
	if (asprintf(&out, "%s://%s", ep.https ? "https" : "http", ep.authority) < 0)
		abort();
	free(ep.authority);
	return out;
}

int s3_settings_check(const struct s3_settings *s, struct err *e)
{
	struct endpoint ep;
	enum style style;

	if (!s)
		return 0;
	if (is_set(s->endpoint_url)) {
		if (strlen(s->endpoint_url) >= SETTING_MAX)
			return err_set(e, "s3_config", "the endpoint URL is too long");
		if (endpoint_parse(s->endpoint_url, &ep, e))
			return -1;
		free(ep.authority);
	}
	if (is_set(s->region) && check_region(s->region, e))
		return -1;
	if (is_set(s->addressing_style) && parse_style(s->addressing_style, &style, e))
		return -1;
	return 0;
}

static void copy_setting(char *dst, const char *src)
{
	snprintf(dst, SETTING_MAX, "%s", is_set(src) ? src : "");
}

static void settings_copy_from(struct settings_copy *dst, const struct s3_settings *s)
{
	copy_setting(dst->endpoint_url, s ? s->endpoint_url : NULL);
	copy_setting(dst->region, s ? s->region : NULL);
	copy_setting(dst->addressing_style, s ? s->addressing_style : NULL);
}

int s3_set_defaults(const struct s3_settings *s, struct err *e)
{
	if (s3_settings_check(s, e))
		return -1;
	pthread_mutex_lock(&defaults_lock);
	settings_copy_from(&process_settings, s);
	pthread_mutex_unlock(&defaults_lock);
	return 0;
}

void s3_set_credentials(struct aws_credentials *p)
{
	struct aws_credentials *old;

	pthread_mutex_lock(&defaults_lock);
	old = process_credentials;
	process_credentials = p ? aws_credentials_ref(p) : NULL;
	pthread_mutex_unlock(&defaults_lock);
	aws_credentials_unref(old);
}

const char *s3_credentials_source(void)
{
	const char *source = NULL;

	pthread_mutex_lock(&defaults_lock);
	if (process_credentials)
		source = aws_credentials_source(process_credentials);
	pthread_mutex_unlock(&defaults_lock);
	return source;
}

int s3_set_thread_settings(const struct s3_settings *s, struct err *e)
{
	if (s3_settings_check(s, e))
		return -1;
	settings_copy_from(&thread_settings, s);
	return 0;
}

/* The first set value of: this thread's, the process's, then env names. */
static char *resolve(const char *thread_value, const char *process_value, const char *env1,
		     const char *env2)
{
	const char *v = NULL;

	if (is_set(thread_value))
		v = thread_value;
	else if (is_set(process_value))
		v = process_value;
	else if (env1 && is_set(getenv(env1)))
		v = getenv(env1);
	else if (env2 && is_set(getenv(env2)))
		v = getenv(env2);
	return v ? xstrdup(v) : NULL;
}

/* ---- locations ---- */

static bool valid_bucket(const char *b, size_t len)
{
	size_t i;

	if (len < 3 || len > 63)
		return false;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)b[i]) && b[i] != '.' && b[i] != '-' && b[i] != '_')
			return false;
	return true;
}

static bool valid_prefix(const char *prefix)
{
	const char *seg = prefix, *end;
	size_t n;

	for (end = prefix; *end; end++)
		if ((unsigned char)*end < 0x20 || *end == 0x7f)
			return false;
	while (*seg) {
		end = strchr(seg, '/');
		n = end ? (size_t)(end - seg) : strlen(seg);
		if (n == 0 || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		if (!end)
			break;
		seg = end + 1;
	}
	return true;
}

int s3_location_parse(const char *location, char **bucket, char **prefix, struct err *e)
{
	const char *b, *slash;
	size_t blen, plen;
	char *p;

	*bucket = *prefix = NULL;
	if (!location || strncmp(location, "s3://", 5) != 0)
		return err_set(e, "invalid_location", "%s: not an s3:// location",
			       location ? location : "(null)");
	b = location + 5;
	slash = strchr(b, '/');
	blen = slash ? (size_t)(slash - b) : strlen(b);
	if (!valid_bucket(b, blen))
		return err_set(e, "invalid_location", "%s: '%.*s' is not a bucket name", location,
			       (int)blen, b);
	if (slash && !valid_prefix(slash + 1))
		return err_set(
			e, "invalid_location",
			"%s: the prefix has an empty, '.' or '..' segment or a control character",
			location);
	*bucket = xmalloc(blen + 1);
	memcpy(*bucket, b, blen);
	(*bucket)[blen] = '\0';
	plen = slash ? strlen(slash + 1) : 0;
	p = xmalloc(plen + 2);
	memcpy(p, slash ? slash + 1 : "", plen);
	if (plen && p[plen - 1] != '/')
		p[plen++] = '/';
	p[plen] = '\0';
	*prefix = p;
	return 0;
}

bool s3_location_within(const char *location, const char *allowed)
{
	char *lb, *lp, *ab, *ap;
	bool inside = false;

	if (s3_location_parse(location, &lb, &lp, NULL))
		return false;
	if (s3_location_parse(allowed, &ab, &ap, NULL))
		goto out_location;
	/* Both prefixes end in '/' (or are empty), so a plain prefix test is
	 * a test at a '/' boundary. */
	inside = strcmp(lb, ab) == 0 && strncmp(lp, ap, strlen(ap)) == 0;
	free(ab);
	free(ap);
out_location:
	free(lb);
	free(lp);
	return inside;
}

/* ---- the client ---- */

/* A curl multi handle with its own connection cache, and its easy handles;
 * used by one call at a time. */
struct lane {
	CURLM *multi;
	CURL *easy[LANE_HANDLES];
	struct lane *next;
};

struct s3_client {
	bool https;
	bool custom_endpoint;
	char *endpoint_authority; /* host[:port] of a custom endpoint */
	char *region;
	enum style style;
	struct aws_credentials *credentials;
	char *ca_bundle;
	unsigned max_attempts;
	double backoff_base, backoff_cap;
	size_t range_size;
	unsigned max_keys; /* 0: the server's default */
	uint64_t part_size;
	long connect_timeout, stall_timeout;
	CURLSH *share; /* DNS cache and TLS sessions */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t lanes_lock; /* protects idle_lanes */
	struct lane *idle_lanes;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ready;

static void curl_start(void)
{
	curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct s3_client *c = arg;

	(void)h;
	(void)access;
	pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	struct s3_client *c = arg;

	(void)h;
	pthread_mutex_unlock(&c->share_locks[data]);
}

static uint64_t env_u64(const char *name, uint64_t fallback, uint64_t min, uint64_t max)
{
	const char *v = getenv(name);
	uint64_t n;

	if (!is_set(v) || size_parse(v, &n, NULL))
		return fallback;
	return n < min ? min : n > max ? max : n;
}

static int client_configure(struct s3_client *c, struct err *e)
{
	const struct aws_credentials_snapshot *credentials;
	struct settings_copy process;
	char *endpoint, *style;
	struct endpoint ep;
	int rc = -1;

	pthread_mutex_lock(&defaults_lock);
	process = process_settings;
	pthread_mutex_unlock(&defaults_lock);

	endpoint = resolve(thread_settings.endpoint_url, process.endpoint_url,
			   "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	c->region =
		resolve(thread_settings.region, process.region, "AWS_REGION", "AWS_DEFAULT_REGION");
	if (!c->region)
		c->region = xstrdup(DEFAULT_REGION);
	style = resolve(thread_settings.addressing_style, process.addressing_style,
			"CKPTCONV_S3_ADDRESSING_STYLE", NULL);
	if (check_region(c->region, e) || parse_style(style, &c->style, e))
		goto out;
	if (endpoint) {
		if (endpoint_parse(endpoint, &ep, e))
			goto out;
		c->https = ep.https;
		c->custom_endpoint = true;
		c->endpoint_authority = ep.authority;
	} else {
		c->https = true;
	}
	/* The process's provider, or one of the client's own; credentials
	 * are obtained now so that a store without any fails when opened. */
	pthread_mutex_lock(&defaults_lock);
	c->credentials = process_credentials ? aws_credentials_ref(process_credentials) :
					       aws_credentials_new();
	pthread_mutex_unlock(&defaults_lock);
	if (aws_credentials_get(c->credentials, &credentials, e))
		goto out;
	aws_credentials_release(credentials);
	c->ca_bundle = resolve(NULL, NULL, "AWS_CA_BUNDLE", NULL);
	c->max_attempts =
		(unsigned)env_u64("CKPTCONV_S3_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, 1, 100);
	c->range_size = (size_t)env_u64("CKPTCONV_S3_RANGE_SIZE", DEFAULT_RANGE_SIZE,
					MIN_RANGE_SIZE, (uint64_t)1 << 30);
	c->part_size = env_u64("CKPTCONV_S3_PART_SIZE", DEFAULT_PART_SIZE, MIN_PART_SIZE,
			       (uint64_t)5 << 30);
	c->max_keys = (unsigned)env_u64("CKPTCONV_S3_MAX_KEYS", 0, 1, 1000);
	c->connect_timeout =
		(long)env_u64("CKPTCONV_S3_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, 1, 600);
	c->stall_timeout =
		(long)env_u64("CKPTCONV_S3_STALL_TIMEOUT", DEFAULT_STALL_TIMEOUT, 1, 3600);
	c->backoff_base = DEFAULT_BACKOFF_BASE;
	c->backoff_cap = DEFAULT_BACKOFF_CAP;
	rc = 0;
out:
	free(endpoint);
	free(style);
	return rc;
}

int s3_client_new(struct s3_client **out, struct err *e)
{
	struct s3_client *c;
	int i;

	*out = NULL;
	pthread_once(&curl_once, curl_start);
	if (!curl_ready)
		return err_set(e, "internal_error", "libcurl failed to initialise");
	c = xcalloc(1, sizeof(*c));
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->lanes_lock, NULL);
	c->share = curl_share_init();
	if (!c->share) {
		s3_client_free(c);
		return err_set(e, "internal_error", "libcurl could not create a share handle");
	}
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	if (client_configure(c, e)) {
		s3_client_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

static void lane_free(struct lane *l)
{
	int i;

	for (i = 0; i < LANE_HANDLES; i++)
		if (l->easy[i])
			curl_easy_cleanup(l->easy[i]);
	if (l->multi)
		curl_multi_cleanup(l->multi);
	free(l);
}

void s3_client_free(struct s3_client *c)
{
	struct lane *l;
	int i;

	if (!c)
		return;
	while ((l = c->idle_lanes)) {
		c->idle_lanes = l->next;
		lane_free(l);
	}
	if (c->share)
		curl_share_cleanup(c->share);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_locks[i]);
	pthread_mutex_destroy(&c->lanes_lock);
	free(c->endpoint_authority);
	free(c->region);
	aws_credentials_unref(c->credentials);
	free(c->ca_bundle);
	free(c);
}

uint64_t s3_client_part_size(const struct s3_client *c)
{
	return c->part_size;
}

static struct lane *lane_get(struct s3_client *c)
{
	struct lane *l;

	pthread_mutex_lock(&c->lanes_lock);
	l = c->idle_lanes;
	if (l)
		c->idle_lanes = l->next;
	pthread_mutex_unlock(&c->lanes_lock);
	if (l)
		return l;
	l = xcalloc(1, sizeof(*l));
	l->multi = curl_multi_init();
	if (!l->multi)
		abort();
	curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, (long)LANE_HANDLES);
	return l;
}

static void lane_put(struct s3_client *c, struct lane *l)
{
	pthread_mutex_lock(&c->lanes_lock);
	l->next = c->idle_lanes;
	c->idle_lanes = l;
	pthread_mutex_unlock(&c->lanes_lock);
}

/* ---- addressing and signing ---- */

struct text {
	char *s;
	size_t len, cap;
};

static void text_add(struct text *t, const void *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->s = xrealloc(t->s, t->cap);
	}
	memcpy(t->s + t->len, s, n);
	t->len += n;
	t->s[t->len] = '\0';
}

static void text_reset(struct text *t)
{
	free(t->s);
	memset(t, 0, sizeof(*t));
}

/* Whether a bucket name can be a DNS label set under the endpoint (no
 * dots, so TLS wildcard certificates still match). */
static bool dns_compatible(const char *bucket)
{
	const char *p;

	for (p = bucket; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
			return false;
	return bucket[0] != '-';
}

static bool use_virtual(const struct s3_client *c, const char *bucket)
{
	if (c->style == STYLE_VIRTUAL)
		return true;
	if (c->style == STYLE_PATH)
		return false;
	return !c->custom_endpoint && dns_compatible(bucket);
}

struct target {
	char *host;
	char *path;  /* encoded */
	char *query; /* canonical */
	char *url;
};

static void target_fini(struct target *t)
{
	free(t->host);
	free(t->path);
	free(t->query);
	free(t->url);
}

static void target_build(const struct s3_client *c, const char *bucket, const char *key,
			 const struct sigv4_param *params, size_t nparams, struct target *t)
{
	char *base_host, *encoded_key = key ? sigv4_uri_encode(key, true) : NULL;

	if (c->custom_endpoint)
		base_host = xstrdup(c->endpoint_authority);
	else if (asprintf(&base_host, "s3.%s.amazonaws.com", c->region) < 0)
		abort();
	if (use_virtual(c, bucket)) {
		if (asprintf(&t->host, "%s.%s", bucket, base_host) < 0 ||
		    asprintf(&t->path, "/%s", encoded_key ? encoded_key : "") < 0)
			abort();
	} else {
		t->host = xstrdup(base_host);
		if ((encoded_key ? asprintf(&t->path, "/%s/%s", bucket, encoded_key) :
				   asprintf(&t->path, "/%s", bucket)) < 0)
			abort();
	}
	t->query = sigv4_canonical_query(params, nparams);
	if (asprintf(&t->url, "%s://%s%s%s%s", c->https ? "https" : "http", t->host, t->path,
		     *t->query ? "?" : "", t->query) < 0)
		abort();
	free(base_host);
	free(encoded_key);
}

static void payload_hash_of(const struct s3_client *c, const void *body, size_t len,
			    char out[SIGV4_SHA256_HEX_SIZE])
{
	if (c->https && len > 0)
		snprintf(out, SIGV4_SHA256_HEX_SIZE, "%s", SIGV4_UNSIGNED_PAYLOAD);
	else
		sigv4_sha256_hex(len ? body : "", len, out);
}

static char *authorization_for(const struct s3_client *c,
			       const struct aws_credentials_snapshot *credentials,
			       const char *method, const struct target *t, const char *range,
			       const char *payload_hash, time_t when)
{
	struct sigv4_credentials cred = {credentials->access_key_id, credentials->secret_access_key,
					 credentials->session_token};
	struct sigv4_header range_header = {"range", range};
	struct sigv4_request r = {
		.method = method,
		.host = t->host,
		.canonical_uri = t->path,
		.canonical_query = t->query,
		.headers = range ? &range_header : NULL,
		.nheaders = range ? 1 : 0,
		.payload_hash = payload_hash,
		.region = c->region,
		.service = "s3",
		.when = when,
	};

	return sigv4_sign(&r, &cred);
}

int s3_sign_request(struct s3_client *c, const char *method, const char *bucket, const char *key,
		    const struct sigv4_param *params, size_t nparams, const char *range,
		    const void *body, size_t len, time_t when, struct s3_signed_request *out,
		    struct err *e)
{
	const struct aws_credentials_snapshot *credentials;
	char hash[SIGV4_SHA256_HEX_SIZE];
	struct target t = {0};

	memset(out, 0, sizeof(*out));
	if (aws_credentials_get(c->credentials, &credentials, e))
		return -1;
	target_build(c, bucket, key, params, nparams, &t);
	payload_hash_of(c, body, len, hash);
	out->authorization = authorization_for(c, credentials, method, &t, range, hash, when);
	aws_credentials_release(credentials);
	if (!out->authorization) {
		target_fini(&t);
		return err_set(e, "internal_error", "signing the request failed");
	}
	out->url = t.url;
	out->host = t.host;
	out->payload_hash = xstrdup(hash);
	free(t.path);
	free(t.query);
	return 0;
}

void s3_signed_request_fini(struct s3_signed_request *r)
{
	free(r->url);
	free(r->host);
	free(r->payload_hash);
	free(r->authorization);
	memset(r, 0, sizeof(*r));
}

/* ---- XML answers ---- */

typedef void (*xml_field_fn)(void *arg, const char *path, const char *text);

struct xml_walk {
	char path[512];
	size_t depth_len[32];
	int depth;
	bool too_deep;
	struct text text;
	xml_field_fn fn;
	void *arg;
};

static void XMLCALL xml_start(void *data, const XML_Char *name, const XML_Char **attrs)
{
	struct xml_walk *w = data;
	size_t len = strlen(w->path);

	(void)attrs;
	if (w->depth >= 32 || len + strlen(name) + 2 > sizeof(w->path)) {
		w->too_deep = true;
		w->depth++;
		return;
	}
	w->depth_len[w->depth++] = len;
	snprintf(w->path + len, sizeof(w->path) - len, "%s%s", len ? "/" : "", name);
	w->text.len = 0;
	if (w->text.s)
		w->text.s[0] = '\0';
}

static void XMLCALL xml_end(void *data, const XML_Char *name)
{
	struct xml_walk *w = data;

	(void)name;
	w->depth--;
	if (w->depth >= 32 || w->too_deep)
		return;
	w->fn(w->arg, w->path, w->text.s ? w->text.s : "");
	w->path[w->depth_len[w->depth]] = '\0';
	w->text.len = 0;
	if (w->text.s)
		w->text.s[0] = '\0';
}

static void XMLCALL xml_chars(void *data, const XML_Char *s, int len)
{
	struct xml_walk *w = data;

	if (len > 0 && w->text.len + (size_t)len <= 1 << 20)
		text_add(&w->text, s, (size_t)len);
}

/* Calls fn(path, text) at the end of every element ("A/B/C").  Leading
 * white space is skipped: S3 sends some to keep the connection open while
 * a long operation (CompleteMultipartUpload) works, before the XML
 * declaration. */
static bool xml_walk(const char *body, size_t len, xml_field_fn fn, void *arg)
{
	struct xml_walk w = {.fn = fn, .arg = arg};
	XML_Parser p;
	bool ok;

	while (len && (*body == ' ' || *body == '\t' || *body == '\r' || *body == '\n')) {
		body++;
		len--;
	}
	p = XML_ParserCreate("UTF-8");
	if (!p)
		abort();
	XML_SetUserData(p, &w);
	XML_SetElementHandler(p, xml_start, xml_end);
	XML_SetCharacterDataHandler(p, xml_chars);
	ok = len <= INT32_MAX && XML_Parse(p, body, (int)len, 1) == XML_STATUS_OK && !w.too_deep;
	XML_ParserFree(p);
	text_reset(&w.text);
	return ok;
}

static void error_field(void *arg, const char *path, const char *text)
{
	struct s3_error_answer *x = arg;

	if (strcmp(path, "Error") == 0)
		x->is_error = true;
	else if (strcmp(path, "Error/Code") == 0)
		snprintf(x->code, sizeof(x->code), "%s", text);
	else if (strcmp(path, "Error/Message") == 0)
		snprintf(x->message, sizeof(x->message), "%s", text);
}

bool s3_error_answer_parse(const char *body, size_t len, struct s3_error_answer *out)
{
	memset(out, 0, sizeof(*out));
	return xml_walk(body, len, error_field, out);
}

/* ---- calls ---- */

/* Passes an error recorded elsewhere on to e (first error wins). */
static void err_copy(struct err *e, const struct err *from)
{
	if (e && !err_is_set(e))
		*e = *from;
}

enum call_state { CALL_PENDING, CALL_DONE, CALL_RETRY, CALL_FAILED };

struct call {
	struct s3_client *client;
	const char *op; /* the S3 operation, for messages */
	const char *method;
	const char *bucket;
	const char *key;
	const char *named; /* the key or prefix messages name */
	const struct sigv4_param *params;
	size_t nparams;
	const void *body;
	size_t body_len;
	const char *content_type;
	/* The operation may answer 200 with an <Error> body: S3 sends the
	 * status before the work is done (CompleteMultipartUpload, and
	 * CopyObject and UploadPartCopy were they used). */
	bool error_in_ok;
	bool ranged;
	uint64_t off;
	size_t len;
	unsigned char *dst;
	char payload_hash[SIGV4_SHA256_HEX_SIZE];

	/* one attempt */
	CURL *easy;
	const struct aws_credentials_snapshot *credentials; /* it is signed with */
	double started;
	struct curl_slist *headers;
	struct target target;
	size_t body_pos, dst_pos;
	long status;
	bool overflow;
	bool has_content_range;
	uint64_t range_first, range_last, range_total;
	bool has_length;
	uint64_t content_length;
	char etag[256];
	struct text answer;
	char errbuf[CURL_ERROR_SIZE];

	/* outcome */
	enum call_state state;
	struct err err;
};

static void call_init(struct call *k, struct s3_client *c, const char *op, const char *method,
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
	target_fini(&k->target);
	memset(&k->target, 0, sizeof(k->target));
	text_reset(&k->answer);
	k->body_pos = k->dst_pos = 0;
	k->status = 0;
	k->overflow = k->has_content_range = k->has_length = false;
	k->etag[0] = '\0';
	k->errbuf[0] = '\0';
}

static void call_fini(struct call *k)
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
		k->etag[0] = '\0';
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
	text_add(&k->answer, data, len);
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

/* Configures k->easy for one attempt, signed now. */
static int call_setup(struct call *k)
{
	struct s3_client *c = k->client;
	char amz_date[SIGV4_AMZ_DATE_SIZE], range[64] = "";
	time_t now = time(NULL);
	CURL *h = k->easy;
	char *auth;

	call_attempt_reset(k);
	if (aws_credentials_get(c->credentials, &k->credentials, &k->err))
		return -1;
	target_build(c, k->bucket, k->key, k->params, k->nparams, &k->target);
	if (k->ranged)
		snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, k->off,
			 k->off + k->len - 1);
	auth = authorization_for(c, k->credentials, k->method, &k->target, k->ranged ? range : NULL,
				 k->payload_hash, now);
	if (!auth)
		return err_set(&k->err, "internal_error", "signing the request failed");
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

static void call_fail(struct call *k, enum call_state state, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void call_fail(struct call *k, enum call_state state, const char *code, const char *fmt, ...)
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

/* Decides what an error answer means: an HTTP error status, or a 200
 * whose body is an <Error>, which is retried alike when its code is a
 * transient one (InternalError, SlowDown, ...). */
static void classify_error(struct call *k, const struct s3_error_answer *error)
{
	struct s3_error_answer x = *error;
	const char *code;
	char what[300];
	if (x.code[0])
		snprintf(what, sizeof(what), "%s answered %ld %s (%s)", k->op, k->status, x.code,
			 x.message[0] ? x.message : "no message");
	else
		snprintf(what, sizeof(what), "%s answered HTTP %ld", k->op, k->status);
	if (k->status == 429 || k->status >= 500 || retryable_s3_code(x.code)) {
		call_fail(k, CALL_RETRY, "s3_unavailable", "%s", what);
		return;
	}
	/* Credentials the service holds expired (its clock runs ahead of
	 * ours): refreshed before the next attempt. */
	if (strcmp(x.code, "ExpiredToken") == 0) {
		aws_credentials_expire(k->client->credentials, k->credentials);
		call_fail(k, CALL_RETRY, "s3_credentials", "%s", what);
		return;
	}
	if (k->status == 403 || strcmp(x.code, "AccessDenied") == 0)
		code = "s3_access_denied";
	else if (strcmp(x.code, "NoSuchBucket") == 0)
		code = "s3_no_such_bucket";
	else if (k->status == 404 && (strcmp(x.code, "NoSuchKey") == 0 || !x.code[0]))
		code = "source_not_found";
	else if (k->status == 416)
		code = "file_truncated";
	else
		code = "s3_error";
	call_fail(k, CALL_FAILED, code, "%s", what);
}

/* The <Error> of an answer's body, if it is one. */
static bool answer_error(const struct call *k, struct s3_error_answer *x)
{
	s3_error_answer_parse(k->answer.s ? k->answer.s : "", k->answer.len, x);
	return x->is_error;
}

static void check_ranged_answer(struct call *k)
{
	uint64_t last = k->off + k->len - 1;

	if (k->status == 200) {
		/* A server that ignores Range sends the whole object: usable
		 * only when that is exactly the bytes asked for. */
		if (!k->overflow && k->off == 0 && k->answer.len == k->len) {
			memcpy(k->dst, k->answer.s, k->len);
			k->state = CALL_DONE;
			return;
		}
		call_fail(
			k, CALL_FAILED, "s3_bad_response",
			"the server ignored the Range header (answered 200 to a request for bytes "
			"%" PRIu64 "-%" PRIu64 ")",
			k->off, last);
		return;
	}
	if (k->status != 206 || !k->has_content_range) {
		call_fail(k, CALL_FAILED, "s3_bad_response",
			  "answered %ld without a Content-Range to a ranged GET", k->status);
		return;
	}
	if (k->range_first == k->off && k->range_last < last && k->range_total != UINT64_MAX &&
	    k->range_total <= last) {
		call_fail(k, CALL_FAILED, "file_truncated",
			  "the object is %" PRIu64
			  " bytes, too short for %zu bytes at offset %" PRIu64,
			  k->range_total, k->len, k->off);
		return;
	}
	if (k->range_first != k->off || k->range_last != last || k->dst_pos != k->len) {
		call_fail(k, CALL_FAILED, "s3_bad_response",
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
				k, CALL_FAILED, "s3_bad_response",
				"the server ignored the Range header (answered 200 with the whole "
				"object)");
		else
			call_fail(k, CALL_FAILED, "s3_bad_response",
				  "the answer is larger than the %s asked for",
				  k->ranged ? "range" : "client accepts");
		return;
	}
	if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
		call_fail(k, CALL_FAILED, "s3_config",
			  "%s: %s (is AWS_CA_BUNDLE the endpoint's certificate authority?)", k->op,
			  k->errbuf[0] ? k->errbuf : curl_easy_strerror(rc));
		return;
	}
	if (rc != CURLE_OK) {
		call_fail(k, retryable_curl_error(rc) ? CALL_RETRY : CALL_FAILED,
			  retryable_curl_error(rc) ? "s3_unavailable" : "s3_error", "%s: %s", k->op,
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

/* A thread-local xorshift generator for jitter. */
static double jitter_unit(void)
{
	static __thread uint64_t state;
	uint64_t x;

	if (!state)
		state = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)&state << 16) ^
			0x9e3779b97f4a7c15ULL;
	x = state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	state = x;
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
static int perform(struct s3_client *c, struct call **calls, size_t n, struct err *e)
{
	struct lane *lane = lane_get(c);
	size_t i, retry;
	unsigned attempt;
	struct call *last_retry = NULL;
	int rc = -1;

	for (attempt = 1;; attempt++) {
		run_round(lane, calls, n);
		retry = 0;
		for (i = 0; i < n; i++) {
			if (calls[i]->state == CALL_FAILED) {
				err_copy(e, &calls[i]->err);
				goto out;
			}
			if (calls[i]->state == CALL_RETRY) {
				retry++;
				last_retry = calls[i];
			}
		}
		if (retry == 0)
			break;
		if (attempt >= c->max_attempts) {
			err_set(e, "s3_unavailable", "%s; gave up after %u attempts",
				last_retry->err.msg, attempt);
			goto out;
		}
		log_warn("%s; retrying (attempt %u of %u)", last_retry->err.msg, attempt + 1,
			 c->max_attempts);
		backoff_sleep(c, attempt);
	}
	rc = 0;
out:
	lane_put(c, lane);
	return rc;
}

static int perform_one(struct call *k, struct err *e)
{
	struct call *calls[1] = {k};

	payload_hash_of(k->client, k->body, k->body_len, k->payload_hash);
	return perform(k->client, calls, 1, e);
}

/* ---- operations ---- */

struct list_page {
	struct s3_listing *out;
	char *key;
	uint64_t size;
	bool truncated;
	char *next_token;
	bool is_listing;
};

static void list_field(void *arg, const char *path, const char *text)
{
	struct list_page *p = arg;
	struct s3_listing *l = p->out;

	if (strcmp(path, "ListBucketResult") == 0) {
		p->is_listing = true;
	} else if (strcmp(path, "ListBucketResult/Contents/Key") == 0) {
		free(p->key);
		p->key = xstrdup(text);
	} else if (strcmp(path, "ListBucketResult/Contents/Size") == 0) {
		p->size = strtoull(text, NULL, 10);
	} else if (strcmp(path, "ListBucketResult/Contents") == 0 && p->key) {
		l->objects = xrealloc(l->objects, (l->nobjects + 1) * sizeof(*l->objects));
		l->objects[l->nobjects].key = p->key;
		l->objects[l->nobjects].size = p->size;
		l->nobjects++;
		p->key = NULL;
		p->size = 0;
	} else if (strcmp(path, "ListBucketResult/CommonPrefixes/Prefix") == 0) {
		l->prefixes = xrealloc(l->prefixes, (l->nprefixes + 1) * sizeof(*l->prefixes));
		l->prefixes[l->nprefixes++] = xstrdup(text);
	} else if (strcmp(path, "ListBucketResult/IsTruncated") == 0) {
		p->truncated = strcmp(text, "true") == 0;
	} else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0) {
		free(p->next_token);
		p->next_token = xstrdup(text);
	}
}

int s3_list_answer_parse(const char *body, size_t len, const char *where, struct s3_listing *out,
			 bool *truncated, char **next_token, struct err *e)
{
	struct list_page page = {.out = out};
	int rc = -1;

	*truncated = false;
	*next_token = NULL;
	if (!xml_walk(body, len, list_field, &page) || !page.is_listing) {
		err_set(e, "s3_bad_response", "%s: the listing is not a ListBucketResult", where);
		goto out;
	}
	if (page.truncated && !page.next_token) {
		err_set(e, "s3_bad_response", "%s: a truncated listing has no continuation token",
			where);
		goto out;
	}
	*truncated = page.truncated;
	*next_token = page.next_token;
	page.next_token = NULL;
	rc = 0;
out:
	free(page.key);
	free(page.next_token);
	return rc;
}

void s3_listing_fini(struct s3_listing *l)
{
	size_t i;

	for (i = 0; i < l->nobjects; i++)
		free(l->objects[i].key);
	for (i = 0; i < l->nprefixes; i++)
		free(l->prefixes[i]);
	free(l->objects);
	free(l->prefixes);
	memset(l, 0, sizeof(*l));
}

static int list_page(struct s3_client *c, const char *bucket, const char *prefix,
		     const char *delimiter, char **token, struct s3_listing *out, bool *more,
		     struct err *e)
{
	struct sigv4_param params[5];
	char max_keys[16], *where = NULL, *next_token;
	size_t n = 0;
	struct call k;
	int rc = -1;

	params[n++] = (struct sigv4_param){"list-type", "2"};
	params[n++] = (struct sigv4_param){"prefix", prefix};
	if (delimiter)
		params[n++] = (struct sigv4_param){"delimiter", delimiter};
	if (c->max_keys) {
		snprintf(max_keys, sizeof(max_keys), "%u", c->max_keys);
		params[n++] = (struct sigv4_param){"max-keys", max_keys};
	}
	if (*token)
		params[n++] = (struct sigv4_param){"continuation-token", *token};
	call_init(&k, c, "ListObjectsV2", "GET", bucket, NULL);
	k.named = prefix;
	k.params = params;
	k.nparams = n;
	if (perform_one(&k, e))
		goto out;
	if (asprintf(&where, "s3://%s/%s", bucket, prefix) < 0)
		abort();
	if (s3_list_answer_parse(k.answer.s ? k.answer.s : "", k.answer.len, where, out, more,
				 &next_token, e))
		goto out;
	free(*token);
	*token = next_token;
	rc = 0;
out:
	free(where);
	call_fini(&k);
	return rc;
}

int s3_list(struct s3_client *c, const char *bucket, const char *prefix, const char *delimiter,
	    size_t limit, struct s3_listing *out, struct err *e)
{
	char *token = NULL;
	bool more = true;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	while (more && rc == 0) {
		rc = list_page(c, bucket, prefix, delimiter, &token, out, &more, e);
		if (limit && out->nobjects + out->nprefixes >= limit)
			break;
	}
	free(token);
	if (rc)
		s3_listing_fini(out);
	return rc;
}

int s3_head(struct s3_client *c, const char *bucket, const char *key, uint64_t *size, struct err *e)
{
	struct call k;
	int rc = -1;

	call_init(&k, c, "HeadObject", "HEAD", bucket, key);
	if (perform_one(&k, e))
		goto out;
	if (!k.has_length) {
		err_set(e, "s3_bad_response", "s3://%s/%s: HEAD answered without a Content-Length",
			bucket, key);
		goto out;
	}
	*size = k.content_length;
	rc = 0;
out:
	call_fini(&k);
	return rc;
}

int s3_get_range(struct s3_client *c, const char *bucket, const char *key, uint64_t off, void *buf,
		 size_t len, struct err *e)
{
	size_t n, i, chunk = c->range_size;
	struct call *calls, **ptrs;
	int rc;

	if (len == 0)
		return 0;
	n = (len + chunk - 1) / chunk;
	calls = xcalloc(n, sizeof(*calls));
	ptrs = xcalloc(n, sizeof(*ptrs));
	for (i = 0; i < n; i++) {
		call_init(&calls[i], c, "GetObject", "GET", bucket, key);
		calls[i].ranged = true;
		calls[i].off = off + i * chunk;
		calls[i].len = i + 1 < n ? chunk : len - i * chunk;
		calls[i].dst = (unsigned char *)buf + i * chunk;
		payload_hash_of(c, NULL, 0, calls[i].payload_hash);
		ptrs[i] = &calls[i];
	}
	rc = perform(c, ptrs, n, e);
	for (i = 0; i < n; i++)
		call_fini(&calls[i]);
	free(ptrs);
	free(calls);
	return rc;
}

int s3_put(struct s3_client *c, const char *bucket, const char *key, const void *body, size_t len,
	   struct err *e)
{
	struct call k;
	int rc;

	call_init(&k, c, "PutObject", "PUT", bucket, key);
	k.body = body;
	k.body_len = len;
	k.content_type = "application/octet-stream";
	rc = perform_one(&k, e);
	call_fini(&k);
	return rc;
}

int s3_delete(struct s3_client *c, const char *bucket, const char *key, struct err *e)
{
	struct err inner = {0};
	struct call k;
	int rc;

	call_init(&k, c, "DeleteObject", "DELETE", bucket, key);
	rc = perform_one(&k, &inner);
	if (rc && inner.code && strcmp(inner.code, "source_not_found") == 0)
		rc = 0;
	else if (rc)
		err_copy(e, &inner);
	call_fini(&k);
	return rc;
}

struct single_field {
	const char *path;
	char *value;
	bool is_error;
	struct s3_error_answer error;
};

static void single_field(void *arg, const char *path, const char *text)
{
	struct single_field *f = arg;

	error_field(&f->error, path, text);
	if (strcmp(path, f->path) == 0) {
		free(f->value);
		f->value = xstrdup(text);
	}
}

int s3_create_multipart_answer_parse(const char *body, size_t len, const char *where,
				     char **upload_id, struct err *e)
{
	struct single_field f = {.path = "InitiateMultipartUploadResult/UploadId"};

	*upload_id = NULL;
	if (!xml_walk(body, len, single_field, &f) || !f.value || !*f.value) {
		free(f.value);
		return err_set(e, "s3_bad_response",
			       "%s: CreateMultipartUpload answered no UploadId", where);
	}
	*upload_id = f.value;
	return 0;
}

int s3_complete_multipart_answer_parse(const char *body, size_t len, const char *where,
				       struct err *e)
{
	struct single_field f = {.path = "CompleteMultipartUploadResult/ETag"};
	int rc = 0;

	/* S3 may answer 200 and report a failure in the body. */
	if (!xml_walk(body, len, single_field, &f) || f.error.is_error)
		rc = err_set(e, f.error.is_error ? "s3_error" : "s3_bad_response",
			     "%s: CompleteMultipartUpload failed: %s (%s)", where,
			     f.error.code[0] ? f.error.code : "malformed answer",
			     f.error.message[0] ? f.error.message : "no message");
	free(f.value);
	return rc;
}

int s3_multipart_create(struct s3_client *c, const char *bucket, const char *key, char **upload_id,
			struct err *e)
{
	struct sigv4_param params[] = {{"uploads", ""}};
	char *where = NULL;
	struct call k;
	int rc = -1;

	*upload_id = NULL;
	call_init(&k, c, "CreateMultipartUpload", "POST", bucket, key);
	k.params = params;
	k.nparams = 1;
	k.content_type = "application/octet-stream";
	if (perform_one(&k, e))
		goto out;
	if (asprintf(&where, "s3://%s/%s", bucket, key) < 0)
		abort();
	rc = s3_create_multipart_answer_parse(k.answer.s ? k.answer.s : "", k.answer.len, where,
					      upload_id, e);
out:
	free(where);
	call_fini(&k);
	return rc;
}

int s3_multipart_upload_part(struct s3_client *c, const char *bucket, const char *key,
			     const char *upload_id, unsigned part_number, const void *body,
			     size_t len, char **etag, struct err *e)
{
	char number[16];
	struct sigv4_param params[] = {{"partNumber", number}, {"uploadId", upload_id}};
	struct call k;
	int rc = -1;

	*etag = NULL;
	snprintf(number, sizeof(number), "%u", part_number);
	call_init(&k, c, "UploadPart", "PUT", bucket, key);
	k.params = params;
	k.nparams = 2;
	k.body = body;
	k.body_len = len;
	k.content_type = "application/octet-stream";
	if (perform_one(&k, e))
		goto out;
	if (!k.etag[0]) {
		err_set(e, "s3_bad_response", "s3://%s/%s: UploadPart %u answered no ETag", bucket,
			key, part_number);
		goto out;
	}
	*etag = xstrdup(k.etag);
	rc = 0;
out:
	call_fini(&k);
	return rc;
}

static void xml_escape_into(struct text *t, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			text_add(t, "&amp;", 5);
			break;
		case '<':
			text_add(t, "&lt;", 4);
			break;
		case '>':
			text_add(t, "&gt;", 4);
			break;
		case '"':
			text_add(t, "&quot;", 6);
			break;
		default:
			text_add(t, s, 1);
		}
	}
}

int s3_multipart_complete(struct s3_client *c, const char *bucket, const char *key,
			  const char *upload_id, char *const *etags, size_t nparts, struct err *e)
{
	static const char head[] =
		"<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
	static const char tail[] = "</CompleteMultipartUpload>";
	struct sigv4_param params[] = {{"uploadId", upload_id}};
	struct text body = {0};
	char part[64], *where = NULL;
	size_t i;
	struct call k;
	int rc = -1;

	text_add(&body, head, strlen(head));
	for (i = 0; i < nparts; i++) {
		snprintf(part, sizeof(part), "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
		text_add(&body, part, strlen(part));
		xml_escape_into(&body, etags[i]);
		text_add(&body, "</ETag></Part>", 14);
	}
	text_add(&body, tail, strlen(tail));
	call_init(&k, c, "CompleteMultipartUpload", "POST", bucket, key);
	k.params = params;
	k.nparams = 1;
	k.body = body.s;
	k.body_len = body.len;
	k.content_type = "application/xml";
	k.error_in_ok = true;
	if (perform_one(&k, e))
		goto out;
	if (asprintf(&where, "s3://%s/%s", bucket, key) < 0)
		abort();
	rc = s3_complete_multipart_answer_parse(k.answer.s ? k.answer.s : "", k.answer.len, where,
						e);
out:
	free(where);
	text_reset(&body);
	call_fini(&k);
	return rc;
}

int s3_multipart_abort(struct s3_client *c, const char *bucket, const char *key,
		       const char *upload_id, struct err *e)
{
	struct sigv4_param params[] = {{"uploadId", upload_id}};
	struct err inner = {0};
	struct call k;
	int rc;

	call_init(&k, c, "AbortMultipartUpload", "DELETE", bucket, key);
	k.params = params;
	k.nparams = 1;
	rc = perform_one(&k, &inner);
	if (rc && (k.status == 405 || k.status == 501)) {
		rc = 1;
	} else if (rc && inner.code && strcmp(inner.code, "source_not_found") == 0) {
		rc = 0;
	} else if (rc) {
		err_copy(e, &inner);
	}
	call_fini(&k);
	return rc;
}
