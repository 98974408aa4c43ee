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

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static void encode_into(struct buf *t, const char *s, bool keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";
	const unsigned char *p;
	char esc[3];

	for (p = (const unsigned char *)s; *p; p++) {
		if (is_unreserved(*p) || (keep_slash && *p == '/')) {
			buf_append(t, (const char *)p, 1);
			continue;
		}
		esc[0] = '%';
		esc[1] = digits[*p >> 4];
		esc[2] = digits[*p & 15];
		buf_append(t, esc, 3);
	}
}

char *sigv4_uri_encode(const char *s, bool keep_slash)
{
	struct buf t = {0};

	buf_append(&t, "", 0);
	encode_into(&t, s, keep_slash);
	return t.data;
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
	struct buf t = {0};
	size_t i;

	buf_append(&t, "", 0);
	for (i = 0; i < n; i++) {
		enc[i].name = sigv4_uri_encode(params[i].name, false);
		enc[i].value = sigv4_uri_encode(params[i].value ? params[i].value : "", false);
	}
	qsort(enc, n, sizeof(*enc), encoded_param_compare);
	for (i = 0; i < n; i++) {
		if (i)
			buf_puts(&t, "&");
		buf_puts(&t, enc[i].name);
		buf_puts(&t, "=");
		buf_puts(&t, enc[i].value);
		free(enc[i].name);
		free(enc[i].value);
	}
	free(enc);
	return t.data;
}

void sigv4_amz_date(time_t when, char out[SIGV4_AMZ_DATE_SIZE])
{
	struct tm tm;

	/* Four-digit years only: anything else would not fit the format. */
	if (!gmtime_r(&when, &tm) || tm.tm_year < 1 - 1900 || tm.tm_year > 9999 - 1900 ||
	    strftime(out, SIGV4_AMZ_DATE_SIZE, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_AMZ_DATE_SIZE - 1)
		snprintf(out, SIGV4_AMZ_DATE_SIZE, "%s", "19700101T000000Z");
}

/* A header value with leading/trailing blanks removed and inner runs of
 * blanks collapsed to one space (the "Trimall" of the specification). */
static void trim_all_into(struct buf *t, const char *v)
{
	bool pending_space = false, started = false;

	for (; *v; v++) {
		if (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') {
			pending_space = started;
			continue;
		}
		if (pending_space)
			buf_append(t, " ", 1);
		pending_space = false;
		started = true;
		buf_append(t, v, 1);
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
	struct buf key = {0};
	bool ok;

	buf_puts(&key, "AWS4");
	buf_puts(&key, secret);
	ok = hmac_sha256(key.data, key.len, date, k_date) &&
	     hmac_sha256(k_date, SHA256_SIZE, region, k_region) &&
	     hmac_sha256(k_region, SHA256_SIZE, service, k_service) &&
	     hmac_sha256(k_service, SHA256_SIZE, "aws4_request", out);
	OPENSSL_cleanse(key.data, key.len);
	free(key.data);
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
	char amz_date[SIGV4_AMZ_DATE_SIZE], date[9], creq_hash[SHA256_HEX_SIZE];
	char signature[2 * SHA256_SIZE + 1];
	unsigned char key[SHA256_SIZE], sig[SHA256_SIZE];
	struct buf creq = {0}, signed_names = {0}, sts = {0}, auth = {0};
	size_t n, i;
	char *result = NULL;

	sigv4_amz_date(r->when, amz_date);
	memcpy(date, amz_date, 8);
	date[8] = '\0';
	n = collect_headers(r, c, amz_date, headers);

	buf_append(&signed_names, "", 0);
	for (i = 0; i < n; i++) {
		if (i)
			buf_puts(&signed_names, ";");
		buf_puts(&signed_names, headers[i].name);
	}

	buf_puts(&creq, r->method);
	buf_puts(&creq, "\n");
	buf_puts(&creq, r->canonical_uri);
	buf_puts(&creq, "\n");
	buf_puts(&creq, r->canonical_query ? r->canonical_query : "");
	buf_puts(&creq, "\n");
	for (i = 0; i < n; i++) {
		buf_puts(&creq, headers[i].name);
		buf_puts(&creq, ":");
		trim_all_into(&creq, headers[i].value ? headers[i].value : "");
		buf_puts(&creq, "\n");
	}
	buf_puts(&creq, "\n");
	buf_puts(&creq, signed_names.data);
	buf_puts(&creq, "\n");
	buf_puts(&creq, r->payload_hash);
	sha256_hex(creq.data, creq.len, creq_hash);

	buf_puts(&sts, "AWS4-HMAC-SHA256\n");
	buf_puts(&sts, amz_date);
	buf_puts(&sts, "\n");
	buf_puts(&sts, date);
	buf_puts(&sts, "/");
	buf_puts(&sts, r->region);
	buf_puts(&sts, "/");
	buf_puts(&sts, r->service);
	buf_puts(&sts, "/aws4_request\n");
	buf_puts(&sts, creq_hash);

	if (!signing_key(c->secret_access_key, date, r->region, r->service, key) ||
	    !hmac_sha256(key, SHA256_SIZE, sts.data, sig))
		goto out_clean;
	hex_encode(sig, SHA256_SIZE, signature);

	buf_puts(&auth, "AWS4-HMAC-SHA256 Credential=");
	buf_puts(&auth, c->access_key_id);
	buf_puts(&auth, "/");
	buf_puts(&auth, date);
	buf_puts(&auth, "/");
	buf_puts(&auth, r->region);
	buf_puts(&auth, "/");
	buf_puts(&auth, r->service);
	buf_puts(&auth, "/aws4_request, SignedHeaders=");
	buf_puts(&auth, signed_names.data);
	buf_puts(&auth, ", Signature=");
	buf_puts(&auth, signature);
	result = auth.data;
out_clean:
	OPENSSL_cleanse(key, sizeof(key));
	free(creq.data);
	free(signed_names.data);
	free(sts.data);
	return result;
}
