/* SPDX-License-Identifier: MIT */
/*
 * sigv4: AWS Signature Version 4 for S3 requests.  The caller describes a
 * request by its method, Host header, encoded path, query parameters (raw;
 * sigv4_canonical_query encodes and sorts them, and the caller sends that
 * exact string), extra headers to sign and the payload hash; sigv4_sign
 * returns the Authorization header value.  The headers host, x-amz-date,
 * x-amz-content-sha256 and (with a session token) x-amz-security-token are
 * always signed; the caller must send them with the values given here.
 *
 * Pure functions of their inputs (the time stamp included); any thread.
 * Secrets are only read, never copied into returned strings.
 */
#ifndef CKPTCONV_SIGV4_H
#define CKPTCONV_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SIGV4_AMZ_DATE_SIZE 17 /* "20130524T000000Z" and NUL */
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct sigv4_param {
	const char *name;
	const char *value; /* NULL or "" both sign as "name=" */
};

struct sigv4_header {
	const char *name; /* lower case */
	const char *value;
};

struct sigv4_credentials {
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token; /* NULL when none */
};

struct sigv4_request {
	const char *method;
	const char *host;		    /* the Host header as sent */
	const char *canonical_uri;	    /* URI-encoded path, exactly as sent */
	const char *canonical_query;	    /* from sigv4_canonical_query, "" when none */
	const struct sigv4_header *headers; /* extra signed headers, may be NULL */
	size_t nheaders;
	const char *payload_hash; /* hex SHA-256 of the body or SIGV4_UNSIGNED_PAYLOAD */
	const char *region;
	const char *service; /* "s3" */
	time_t when;
};

/* RFC 3986 percent-encoding of s: unreserved characters kept, '/' kept when
 * keep_slash; malloc'd. */
char *sigv4_uri_encode(const char *s, bool keep_slash);

/* "a=1&b=&c=x%2Fy": names and values encoded, sorted by encoded name then
 * value; malloc'd ("" when n is 0). */
char *sigv4_canonical_query(const struct sigv4_param *params, size_t n);

/* The x-amz-date value for `when` (always 16 characters and a NUL; a time
 * outside the years 1-9999, which the format cannot spell, gives the
 * epoch's, which any server refuses). */
void sigv4_amz_date(time_t when, char out[SIGV4_AMZ_DATE_SIZE]);

/* The Authorization header value ("AWS4-HMAC-SHA256 Credential=...,
 * SignedHeaders=..., Signature=..."), malloc'd.  Returns NULL only when a
 * cryptographic primitive fails. */
char *sigv4_sign(const struct sigv4_request *r, const struct sigv4_credentials *c);

#endif
