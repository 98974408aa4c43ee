/* SPDX-License-Identifier: MIT */
/*
 * sigv4: AWS Signature Version 4.  Builds the canonical request (method,
 * encoded path, sorted and encoded query, sorted canonical headers, signed
 * header list, payload hash), the string to sign over the credential scope
 * date/region/service/aws4_request, derives the signing key by the HMAC
 * chain and formats the Authorization header the way AWS's own SDKs do.
 * libcrypto provides SHA-256 and HMAC.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/sigv4.h"
#include "ckptconv/util.h"

#define SHA256_SIZE 32
#define MAX_SIGNED_HEADERS 16

/* A growable NUL-terminated string. */
struct text {
	char *s;
	size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->s = xrealloc(t->s, t->cap);
	}
	memcpy(t->s + t->len, s, n);
	t->len += n;
	t->s[t->len] = '\0';
}

static void text_puts(struct text *t, const char *s)
{
	text_add(t, s, strlen(s));
}

static void hex_encode(const unsigned char *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char out[SIGV4_SHA256_HEX_SIZE])
{
	unsigned char md[SHA256_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != SHA256_SIZE)
		abort();
	hex_encode(md, SHA256_SIZE, out);
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static void encode_into(struct text *t, const char *s, bool keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";
	const unsigned char *p;
	char esc[3];

	for (p = (const unsigned char *)s; *p; p++) {
		if (is_unreserved(*p) || (keep_slash && *p == '/')) {
			text_add(t, (const char *)p, 1);
			continue;
		}
		esc[0] = '%';
		esc[1] = digits[*p >> 4];
		esc[2] = digits[*p & 15];
		text_add(t, esc, 3);
	}
}

char *sigv4_uri_encode(const char *s, bool keep_slash)
{
	struct text t = {0};

	text_add(&t, "", 0);
	encode_into(&t, s, keep_slash);
	return t.s;
}

struct encoded_param {
	char *name;
	char *value;
};

static int encoded_param_compare(const void *pa, const void *pb)
{
	const struct encoded_param *a = pa, *b = pb;
	int c = strcmp(a->name, b->name);

	return c ? c : strcmp(a->value, b->value);
}

char *sigv4_canonical_query(const struct sigv4_param *params, size_t n)
{
	struct encoded_param *enc = xcalloc(n ? n : 1, sizeof(*enc));
	struct text t = {0};
	size_t i;

	text_add(&t, "", 0);
	for (i = 0; i < n; i++) {
		enc[i].name = sigv4_uri_encode(params[i].name, false);
		enc[i].value = sigv4_uri_encode(params[i].value ? params[i].value : "", false);
	}
	qsort(enc, n, sizeof(*enc), encoded_param_compare);
	for (i = 0; i < n; i++) {
		if (i)
			text_puts(&t, "&");
		text_puts(&t, enc[i].name);
		text_puts(&t, "=");
		text_puts(&t, enc[i].value);
		free(enc[i].name);
		free(enc[i].value);
	}
	free(enc);
	return t.s;
}

void sigv4_amz_date(time_t when, char out[SIGV4_AMZ_DATE_SIZE])
{
	struct tm tm;

	gmtime_r(&when, &tm);
	strftime(out, SIGV4_AMZ_DATE_SIZE, "%Y%m%dT%H%M%SZ", &tm);
}

/* A header value with leading/trailing blanks removed and inner runs of
 * blanks collapsed to one space (the "Trimall" of the specification). */
static void trim_all_into(struct text *t, const char *v)
{
	bool pending_space = false, started = false;

	for (; *v; v++) {
		if (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') {
			pending_space = started;
			continue;
		}
		if (pending_space)
			text_add(t, " ", 1);
		pending_space = false;
		started = true;
		text_add(t, v, 1);
	}
}

static int header_compare(const void *pa, const void *pb)
{
	const struct sigv4_header *a = pa, *b = pb;

	return strcmp(a->name, b->name);
}

static bool hmac_sha256(const void *key, size_t key_len, const char *msg,
			unsigned char out[SHA256_SIZE])
{
	unsigned int len = 0;

	return HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out,
		    &len) &&
	       len == SHA256_SIZE;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static bool signing_key(const char *secret, const char *date, const char *region,
			const char *service, unsigned char out[SHA256_SIZE])
{
	unsigned char k_date[SHA256_SIZE], k_region[SHA256_SIZE], k_service[SHA256_SIZE];
	struct text key = {0};
	bool ok;

	text_puts(&key, "AWS4");
	text_puts(&key, secret);
	ok = hmac_sha256(key.s, key.len, date, k_date) &&
	     hmac_sha256(k_date, SHA256_SIZE, region, k_region) &&
	     hmac_sha256(k_region, SHA256_SIZE, service, k_service) &&
	     hmac_sha256(k_service, SHA256_SIZE, "aws4_request", out);
	OPENSSL_cleanse(key.s, key.len);
	free(key.s);
	OPENSSL_cleanse(k_date, sizeof(k_date));
	OPENSSL_cleanse(k_region, sizeof(k_region));
	OPENSSL_cleanse(k_service, sizeof(k_service));
	return ok;
}

/* The headers to sign, sorted: the always-signed ones and the caller's. */
static size_t collect_headers(const struct sigv4_request *r, const struct sigv4_credentials *c,
			      const char *amz_date, struct sigv4_header *out)
{
	size_t n = 0, i;

	out[n++] = (struct sigv4_header){"host", r->host};
	out[n++] = (struct sigv4_header){"x-amz-content-sha256", r->payload_hash};
	out[n++] = (struct sigv4_header){"x-amz-date", amz_date};
	if (c->session_token && *c->session_token)
		out[n++] = (struct sigv4_header){"x-amz-security-token", c->session_token};
	for (i = 0; i < r->nheaders && n < MAX_SIGNED_HEADERS; i++)
		out[n++] = r->headers[i];
	qsort(out, n, sizeof(*out), header_compare);
	return n;
}

char *sigv4_sign(const struct sigv4_request *r, const struct sigv4_credentials *c)
{
	struct sigv4_header headers[MAX_SIGNED_HEADERS];
	char amz_date[SIGV4_AMZ_DATE_SIZE], date[9], creq_hash[SIGV4_SHA256_HEX_SIZE];
	char signature[2 * SHA256_SIZE + 1];
	unsigned char key[SHA256_SIZE], sig[SHA256_SIZE];
	struct text creq = {0}, signed_names = {0}, sts = {0}, auth = {0};
	size_t n, i;
	char *result = NULL;

	sigv4_amz_date(r->when, amz_date);
	memcpy(date, amz_date, 8);
	date[8] = '\0';
	n = collect_headers(r, c, amz_date, headers);

	text_add(&signed_names, "", 0);
	for (i = 0; i < n; i++) {
		if (i)
			text_puts(&signed_names, ";");
		text_puts(&signed_names, headers[i].name);
	}

	text_puts(&creq, r->method);
	text_puts(&creq, "\n");
	text_puts(&creq, r->canonical_uri);
	text_puts(&creq, "\n");
	text_puts(&creq, r->canonical_query ? r->canonical_query : "");
	text_puts(&creq, "\n");
	for (i = 0; i < n; i++) {
		text_puts(&creq, headers[i].name);
		text_puts(&creq, ":");
		trim_all_into(&creq, headers[i].value ? headers[i].value : "");
		text_puts(&creq, "\n");
	}
	text_puts(&creq, "\n");
	text_puts(&creq, signed_names.s);
	text_puts(&creq, "\n");
	text_puts(&creq, r->payload_hash);
	sigv4_sha256_hex(creq.s, creq.len, creq_hash);

	text_puts(&sts, "AWS4-HMAC-SHA256\n");
	text_puts(&sts, amz_date);
	text_puts(&sts, "\n");
	text_puts(&sts, date);
	text_puts(&sts, "/");
	text_puts(&sts, r->region);
	text_puts(&sts, "/");
	text_puts(&sts, r->service);
	text_puts(&sts, "/aws4_request\n");
	text_puts(&sts, creq_hash);

	if (!signing_key(c->secret_access_key, date, r->region, r->service, key) ||
	    !hmac_sha256(key, SHA256_SIZE, sts.s, sig))
		goto out_clean;
	hex_encode(sig, SHA256_SIZE, signature);

	text_puts(&auth, "AWS4-HMAC-SHA256 Credential=");
	text_puts(&auth, c->access_key_id);
	text_puts(&auth, "/");
	text_puts(&auth, date);
	text_puts(&auth, "/");
	text_puts(&auth, r->region);
	text_puts(&auth, "/");
	text_puts(&auth, r->service);
	text_puts(&auth, "/aws4_request, SignedHeaders=");
	text_puts(&auth, signed_names.s);
	text_puts(&auth, ", Signature=");
	text_puts(&auth, signature);
	result = auth.s;
out_clean:
	OPENSSL_cleanse(key, sizeof(key));
	free(creq.s);
	free(signed_names.s);
	free(sts.s);
	return result;
}
