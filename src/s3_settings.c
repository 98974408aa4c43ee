/* SPDX-License-Identifier: MIT */
/*
 * s3_settings: what an S3 client talks to.  Settings resolve as given >
 * environment (AWS conventions); endpoint URLs are checked and
 * normalised; s3:// locations are parsed into bucket and prefix.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "ckptconv/util.h"
#include "s3_internal.h"

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
#define SETTING_MAX 512

/* ---- settings ---- */

static int parse_style(const char *text, enum style *out, struct err *e)
{
	if (!is_set(text) || strcmp(text, "auto") == 0)
		*out = STYLE_AUTO;
	else if (strcmp(text, "path") == 0)
		*out = STYLE_PATH;
	else if (strcmp(text, "virtual") == 0)
		*out = STYLE_VIRTUAL;
	else
		return err_set(e, ERR_S3_CONFIG, "addressing style '%s' is not path, virtual or auto",
			       text);
	return 0;
}

static int check_region(const char *region, struct err *e)
{
	const char *p;

	if (strlen(region) > 64)
		return err_set(e, ERR_S3_CONFIG, "the region name is longer than 64 characters");
	for (p = region; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
			return err_set(e, ERR_S3_CONFIG, "region '%s' is not a region name", region);
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
		return err_set(e, ERR_S3_CONFIG, "the endpoint URL must not hold user information");
	if (strncasecmp(url, "https://", 8) == 0) {
		out->https = true;
		scheme_len = 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		out->https = false;
		scheme_len = 7;
	} else {
		return err_set(e, ERR_S3_CONFIG,
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
	return err_set(e, ERR_S3_CONFIG,
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
			return err_set(e, ERR_S3_CONFIG, "the endpoint URL is too long");
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

void s3_settings_overlay(struct s3_settings *base, const struct s3_settings *over)
{
	if (!over)
		return;
	if (is_set(over->endpoint_url))
		base->endpoint_url = over->endpoint_url;
	if (is_set(over->region))
		base->region = over->region;
	if (is_set(over->addressing_style))
		base->addressing_style = over->addressing_style;
}

/* The first set value of: the given one, then env names. */
static char *resolve(const char *given, const char *env1, const char *env2)
{
	const char *v = NULL;

	if (is_set(given))
		v = given;
	else if (env1 && is_set(getenv(env1)))
		v = getenv(env1);
	else if (env2 && is_set(getenv(env2)))
		v = getenv(env2);
	return v ? xstrdup(v) : NULL;
}

/* ---- a client's configuration ---- */

static uint64_t env_u64(const char *name, uint64_t fallback, uint64_t min, uint64_t max)
{
	const char *v = getenv(name);
	uint64_t n;

	if (!is_set(v) || size_parse(v, &n, NULL))
		return fallback;
	return n < min ? min : n > max ? max : n;
}

int s3_client_configure(struct s3_client *c, const struct s3_settings *settings,
			struct aws_credentials *credentials, struct err *e)
{
	const struct aws_credentials_snapshot *snapshot;
	const struct s3_settings none = {0};
	char *endpoint, *style;
	struct endpoint ep;
	int rc = -1;

	if (!settings)
		settings = &none;
	endpoint = resolve(settings->endpoint_url, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	c->region = resolve(settings->region, "AWS_REGION", "AWS_DEFAULT_REGION");
	if (!c->region)
		c->region = xstrdup(DEFAULT_REGION);
	style = resolve(settings->addressing_style, "CKPTCONV_S3_ADDRESSING_STYLE", NULL);
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
	c->clock_offset = s3_clock_for(endpoint ? c->endpoint_authority : "amazonaws.com");
	/* The given provider, or one of the client's own; credentials are
	 * obtained now so that a store without any fails when opened. */
	c->credentials = credentials ? aws_credentials_ref(credentials) : aws_credentials_new();
	if (aws_credentials_get(c->credentials, &snapshot, e))
		goto out;
	aws_credentials_release(snapshot);
	c->ca_bundle = resolve(NULL, "AWS_CA_BUNDLE", NULL);
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
		return err_set(e, ERR_INVALID_LOCATION, "%s: not an s3:// location",
			       location ? location : "(null)");
	b = location + 5;
	slash = strchr(b, '/');
	blen = slash ? (size_t)(slash - b) : strlen(b);
	if (!valid_bucket(b, blen))
		return err_set(e, ERR_INVALID_LOCATION, "%s: '%.*s' is not a bucket name", location,
			       (int)blen, b);
	if (slash && !valid_prefix(slash + 1))
		return err_set(
			e, ERR_INVALID_LOCATION,
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
