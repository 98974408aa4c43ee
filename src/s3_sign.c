/* SPDX-License-Identifier: MIT */
/*
 * s3_sign: where a request goes and its signature.  Path-style or
 * virtual-hosted addressing (AWS S3 User Guide, "Virtual hosting of
 * buckets"), the payload hash, and the sigv4 Authorization header; and
 * which hosts a redirect may take a signed request to.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "ckptconv/sigv4.h"
#include "s3_internal.h"

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

void s3_target_fini(struct target *t)
{
	free(t->host);
	free(t->path);
	free(t->query);
	free(t->url);
}

void s3_target_build(const struct s3_client *c, const char *bucket, const char *key,
		     const struct sigv4_param *params, size_t nparams, struct target *t)
{
	s3_target_build_at(c, NULL, bucket, key, params, nparams, t);
}

/* Whether `authority` names the bucket's own host ("<bucket>.rest"). */
static bool names_bucket(const char *authority, const char *bucket)
{
	size_t n = strlen(bucket);

	return strncmp(authority, bucket, n) == 0 && authority[n] == '.';
}

void s3_target_build_at(const struct s3_client *c, const struct route *route, const char *bucket,
			const char *key, const struct sigv4_param *params, size_t nparams,
			struct target *t)
{
	char *base_host, *encoded_key = key ? sigv4_uri_encode(key, true) : NULL;
	const char *region = route && route->region[0] ? route->region : c->region;
	bool https = route && route->authority[0] ? route->https : c->https;
	bool virtual_host;

	if (route && route->authority[0]) {
		base_host = xstrdup(route->authority);
		virtual_host = names_bucket(base_host, bucket);
	} else {
		if (c->custom_endpoint)
			base_host = xstrdup(c->endpoint_authority);
		else if (asprintf(&base_host, "s3.%s.amazonaws.com", region) < 0)
			abort();
		virtual_host = use_virtual(c, bucket);
	}
	if (route && route->authority[0] && virtual_host) {
		t->host = xstrdup(base_host);
		if (asprintf(&t->path, "/%s", encoded_key ? encoded_key : "") < 0)
			abort();
	} else if (virtual_host) {
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
	if (asprintf(&t->url, "%s://%s%s%s%s", https ? "https" : "http", t->host, t->path,
		     *t->query ? "?" : "", t->query) < 0)
		abort();
	free(base_host);
	free(encoded_key);
}

void s3_payload_hash_of(const struct s3_client *c, const void *body, size_t len,
			char out[SHA256_HEX_SIZE])
{
	if (c->https && len > 0)
		snprintf(out, SHA256_HEX_SIZE, "%s", SIGV4_UNSIGNED_PAYLOAD);
	else
		sha256_hex(len ? body : "", len, out);
}

char *s3_authorization_for(const struct s3_client *c,
			   const struct aws_credentials_snapshot *credentials, const char *method,
			   const struct target *t, const struct sigv4_header *extra, size_t nextra,
			   const char *payload_hash, time_t when)
{
	return s3_authorization_in(c, c->region, credentials, method, t, extra, nextra, payload_hash,
				   when);
}

char *s3_authorization_in(const struct s3_client *c, const char *region,
			  const struct aws_credentials_snapshot *credentials, const char *method,
			  const struct target *t, const struct sigv4_header *extra, size_t nextra,
			  const char *payload_hash, time_t when)
{
	struct sigv4_credentials cred = {credentials->access_key_id, credentials->secret_access_key,
					 credentials->session_token};
	struct sigv4_request r = {
		.method = method,
		.host = t->host,
		.canonical_uri = t->path,
		.canonical_query = t->query,
		.headers = extra,
		.nheaders = nextra,
		.payload_hash = payload_hash,
		.region = region && *region ? region : c->region,
		.service = "s3",
		.when = when,
	};

	return sigv4_sign(&r, &cred);
}

/* The host of an authority: "[::1]:9000" -> "[::1]", "a.b:9000" -> "a.b". */
static void host_of(const char *authority, char *out, size_t len)
{
	const char *end = authority[0] == '[' ? strchr(authority, ']') : strrchr(authority, ':');

	if (authority[0] == '[' && end)
		end++;
	snprintf(out, len, "%.*s", (int)(end ? (size_t)(end - authority) : strlen(authority)),
		 authority);
}

/* The port of an authority, the scheme's default when it names none;
 * 0 when what follows its host is not ":" and a port 1-65535. */
static unsigned long port_of(const char *authority, size_t host_len, bool https)
{
	const char *p = authority + host_len;
	char *end;
	unsigned long port;

	if (!*p)
		return https ? 443 : 80;
	if (*p != ':' || !isdigit((unsigned char)p[1]) || strlen(p + 1) > 5)
		return 0;
	port = strtoul(p + 1, &end, 10);
	return *end || port > 65535 ? 0 : port;
}

static bool ends_with_label(const char *host, const char *suffix)
{
	size_t n = strlen(host), m = strlen(suffix);

	return n > m && strcasecmp(host + n - m, suffix) == 0 && host[n - m - 1] == '.';
}

static bool s3_label(const char *label)
{
	return strncmp(label, "s3.", 3) == 0 || strncmp(label, "s3-", 3) == 0;
}

/* An S3 host of AWS: "[bucket.]s3[.-]...amazonaws.com[.cn]", no port. */
static bool aws_s3_host(const char *host, const char *bucket)
{
	if (!ends_with_label(host, "amazonaws.com") && !ends_with_label(host, "amazonaws.com.cn"))
		return false;
	if (names_bucket(host, bucket))
		host += strlen(bucket) + 1;
	return s3_label(host);
}

bool s3_route_allowed(const struct s3_client *c, const char *bucket, const char *authority,
		      bool https, char *why, size_t why_len)
{
	char host[256], endpoint_host[256];
	const char *p;

	for (p = authority; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-_:[]", *p))
			break;
	if (!*authority || *p || strlen(authority) >= sizeof(host)) {
		snprintf(why, why_len, "'%.100s' is not a host name", authority);
		return false;
	}
	if (c->https && !https) {
		snprintf(why, why_len, "it leaves https for http");
		return false;
	}
	host_of(authority, host, sizeof(host));
	if (c->custom_endpoint) {
		unsigned long port = port_of(authority, strlen(host), https), endpoint_port;

		host_of(c->endpoint_authority, endpoint_host, sizeof(endpoint_host));
		endpoint_port = port_of(c->endpoint_authority, strlen(endpoint_host), c->https);
		if (strcasecmp(host, endpoint_host) != 0 && !ends_with_label(host, endpoint_host)) {
			snprintf(why, why_len,
				 "'%s' is neither the endpoint's host '%s' nor under it", host,
				 endpoint_host);
			return false;
		}
		if (!port) {
			snprintf(why, why_len, "'%.100s' is not a host name", authority);
			return false;
		}
		if (port != endpoint_port) {
			snprintf(why, why_len, "'%.100s' is on port %lu, not the endpoint's port %lu",
				 authority, port, endpoint_port);
			return false;
		}
		return true;
	}
	if (strcmp(host, authority) == 0 && aws_s3_host(host, bucket))
		return true;
	snprintf(why, why_len, "'%.100s' is not an S3 host of amazonaws.com", authority);
	return false;
}

int s3_sign_request(struct s3_client *c, const char *method, const char *bucket, const char *key,
		    const struct sigv4_param *params, size_t nparams, const char *range,
		    const void *body, size_t len, time_t when, struct s3_signed_request *out,
		    struct err *e)
{
	const struct aws_credentials_snapshot *credentials;
	char hash[SHA256_HEX_SIZE];
	struct target t = {0};

	memset(out, 0, sizeof(*out));
	if (aws_credentials_get(c->credentials, &credentials, e))
		return -1;
	s3_target_build(c, bucket, key, params, nparams, &t);
	s3_payload_hash_of(c, body, len, hash);
	struct sigv4_header range_header = {"range", range};

	out->authorization = s3_authorization_for(c, credentials, method, &t, &range_header,
						  range ? 1 : 0, hash, when);
	aws_credentials_release(credentials);
	if (!out->authorization) {
		s3_target_fini(&t);
		return err_set(e, ERR_INTERNAL_ERROR, "signing the request failed");
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
