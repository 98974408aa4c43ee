/* SPDX-License-Identifier: MIT */
/*
 * s3: a small S3 client over libcurl, signed with sigv4.  It covers what
 * the object-store backend needs: paginated ListObjectsV2, HEAD, ranged GET
 * (fetched in parallel chunks, every answer checked to be the 206 with the
 * Content-Range asked for), PutObject, DeleteObject and multipart uploads.
 * Transient failures (connection errors, timeouts, 5xx, 429, SlowDown,
 * RequestTimeout) are retried with exponential backoff and jitter, a
 * bounded number of times, then reported as s3_unavailable.
 *
 * Configuration follows the AWS conventions: credentials from the AWS
 * default chain (aws_credentials.h: environment, web identity, shared
 * files, container endpoint, instance metadata), each request signed with
 * the credentials current when it is sent, region from
 * AWS_REGION / AWS_DEFAULT_REGION (default us-east-1), endpoint from
 * AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (default AWS), AWS_CA_BUNDLE, and
 * CKPTCONV_S3_ADDRESSING_STYLE path|virtual|auto (auto: path-style with a
 * custom endpoint, virtual-hosted for AWS).  Settings handed to
 * s3_client_new (a command's flags, a daemon job's options, layered with
 * s3_settings_overlay by whoever builds them) override the environment;
 * nothing is kept per process or per thread.
 *
 * Redirects are followed at once, not counted as attempts: 307
 * TemporaryRedirect to its Location (or <Endpoint>) for that request, at
 * most 3 times; 301 PermanentRedirect (<Endpoint>, x-amz-bucket-region)
 * and 400 AuthorizationHeaderMalformed (<Region>) to the bucket's region,
 * for that request and the client's later ones for the bucket.  A request
 * follows only to the configured endpoint's host or a name under it (any
 * port), or for AWS to an S3 host of amazonaws.com(.cn), and never from
 * https to http.  RequestTimeTooSkewed sets the signing clock of the
 * process's requests to that endpoint (AWS is one) to the server's time
 * (<ServerTime>, else Date) and sends the request again, once.  (Amazon S3 User Guide, "Request redirection and the REST API";
 * S3 API Reference, "Error responses".)
 *
 * Threads: a client is shared by any number of threads.  Credentials are
 * never put in errors or logs.  Codes: s3_config, s3_credentials (no
 * credentials could be had; S3's ExpiredToken is retried with refreshed
 * ones, and fails at once for a session token of the environment or the
 * shared files, naming the source), s3_access_denied,
 * s3_no_such_bucket, s3_unavailable, s3_bad_response, s3_error (also a
 * redirect not followed), s3_wrong_region (the bucket's region could not
 * be reached: named in the message), clock_skew (the time refused again
 * after the correction), source_not_found (no such key), file_truncated (a
 * range past the end).
 */
#ifndef CKPTCONV_S3_H
#define CKPTCONV_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct aws_credentials;
struct err;
struct s3_client;
struct sigv4_param;

/* The settings a user may choose per run or per job (never secrets).  NULL
 * or "" leaves a field to the next level: thread, process, environment. */
struct s3_settings {
	const char *endpoint_url; /* http(s)://host[:port] */
	const char *region;
	const char *addressing_style; /* "path", "virtual" or "auto" */
};

/* Checks the fields that are set (code s3_config). */
int s3_settings_check(const struct s3_settings *s, struct err *e);
/* Sets each field of *base that `over` sets (non-empty) to over's: a
 * job's options over the service's, flags over nothing.  The strings are
 * borrowed, not copied.  `over` may be NULL. */
void s3_settings_overlay(struct s3_settings *base, const struct s3_settings *over);

/* "s3://bucket/a/b/" -> bucket "bucket", prefix "a/b/" ("" for the bucket's
 * root); both malloc'd.  Refuses empty or "."/".." segments and "//".
 * Code: invalid_location. */
int s3_location_parse(const char *location, char **bucket, char **prefix, struct err *e);
/* True when `location` is `allowed` or lies under it (same bucket, prefix
 * starting with allowed's prefix at a '/' boundary).  False if either is
 * not a valid location. */
bool s3_location_within(const char *location, const char *allowed);
/* "HTTP://Host:80/" -> "http://host": lower-case scheme and host, default
 * port and trailing '/' dropped; malloc'd, or NULL (s3_config) when `url`
 * is not an http(s) endpoint without user, path, query or fragment. */
char *s3_endpoint_normalize(const char *url, struct err *e);

/* A client with `settings` (NULL, or a field not set: the environment's)
 * that signs with `credentials` (a reference is taken; NULL: a provider of
 * its own from the environment); it obtains credentials now, so a client
 * is not made without any.  Any thread.  Codes: s3_config,
 * s3_credentials. */
int s3_client_new(const struct s3_settings *settings, struct aws_credentials *credentials,
		  struct s3_client **out, struct err *e);
void s3_client_free(struct s3_client *c);
/* Upload part size chosen for new multipart uploads (64 MiB, or
 * CKPTCONV_S3_PART_SIZE, at least 5 MiB). */
uint64_t s3_client_part_size(const struct s3_client *c);

struct s3_object {
	char *key;
	uint64_t size;
};

struct s3_listing {
	struct s3_object *objects;
	size_t nobjects;
	char **prefixes; /* CommonPrefixes, with their trailing delimiter */
	size_t nprefixes;
};

/* Every object and common prefix under `prefix` (ListObjectsV2, all pages;
 * CKPTCONV_S3_MAX_KEYS sets the page size).  `delimiter` may be NULL.
 * With `limit` > 0 stops after at least `limit` entries. */
int s3_list(struct s3_client *c, const char *bucket, const char *prefix, const char *delimiter,
	    size_t limit, struct s3_listing *out, struct err *e);
void s3_listing_fini(struct s3_listing *l);

/* Multipart uploads in progress (started, neither completed nor
 * aborted): their key and upload id. */
struct s3_uploads {
	struct s3_upload {
		char *key;
		char *upload_id;
	} *uploads;
	size_t n;
};
/* Every multipart upload in progress under `prefix`
 * (ListMultipartUploads, all pages).  Returns 1 (not an error, *out
 * empty) when the server does not implement the call (405 or 501). */
int s3_multipart_list(struct s3_client *c, const char *bucket, const char *prefix,
		      struct s3_uploads *out, struct err *e);
void s3_uploads_fini(struct s3_uploads *u);
/* One page of ListMultipartUploadsResult into out (appended); *truncated
 * with the markers of the next page (malloc'd) when there is one.  Code
 * s3_bad_response. */
int s3_uploads_answer_parse(const char *body, size_t len, const char *where,
			    struct s3_uploads *out, bool *truncated, char **next_key,
			    char **next_upload_id, struct err *e);

/* Size of an object; source_not_found when there is none. */
int s3_head(struct s3_client *c, const char *bucket, const char *key, uint64_t *size,
	    struct err *e);
/* Exactly len bytes at off into buf, by parallel ranged GETs of at most
 * CKPTCONV_S3_RANGE_SIZE (8 MiB) each. */
int s3_get_range(struct s3_client *c, const char *bucket, const char *key, uint64_t off, void *buf,
		 size_t len, struct err *e);

#define S3_ETAG_MAX 256

/* One version of an object: its ETag (quotes included, as sent) and
 * VersionId (where the bucket keeps versions), "" when unknown. */
struct s3_version {
	char etag[S3_ETAG_MAX];
	char version_id[S3_ETAG_MAX];
};

/* s3_head that also gives the object's version (v). */
int s3_head_version(struct s3_client *c, const char *bucket, const char *key, uint64_t *size,
		    struct s3_version *v, struct err *e);
/* s3_get_range held to one version of the object: with v->etag set, every
 * GET carries If-Match with it (but for a weak W/ ETag, which If-Match
 * never matches) and every answer must carry it; else v is filled from the
 * first answer and the others must carry the same ETag.  A 412 or an answer with another
 * ETag fails with source_changed naming the object (not retried: the
 * object is another one now). */
int s3_get_range_version(struct s3_client *c, const char *bucket, const char *key, uint64_t off,
			 void *buf, size_t len, struct s3_version *v, struct err *e);
/* Sent with its x-amz-checksum-crc32c, so S3 refuses a body that arrives
 * otherwise (BadDigest).  v (NULL: not wanted) receives the version
 * written: the answer's ETag and x-amz-version-id ("" when absent). */
int s3_put(struct s3_client *c, const char *bucket, const char *key, const void *body, size_t len,
	   struct s3_version *v, struct err *e);
/* A missing key is not an error. */
int s3_delete(struct s3_client *c, const char *bucket, const char *key, struct err *e);

/* Announces CRC-32C part checksums (x-amz-checksum-algorithm CRC32C). */
int s3_multipart_create(struct s3_client *c, const char *bucket, const char *key, char **upload_id,
			struct err *e);
/* part_number from 1; *etag malloc'd.  The part goes with its
 * x-amz-checksum-crc32c (and x-amz-sdk-checksum-algorithm), so S3 refuses
 * a part corrupted on the way; crc32c_out (NULL: not wanted) receives
 * that base64 value for s3_multipart_complete. */
int s3_multipart_upload_part(struct s3_client *c, const char *bucket, const char *key,
			     const char *upload_id, unsigned part_number, const void *body,
			     size_t len, char **etag, char crc32c_out[9], struct err *e);
/* etags[i] is the ETag of part i+1; crc32cs[i] (crc32cs NULL: none) its
 * base64 CRC-32C, listed as ChecksumCRC32C.  v (NULL: not wanted)
 * receives the object's version: the answer's
 * CompleteMultipartUploadResult/ETag and x-amz-version-id header. */
int s3_multipart_complete(struct s3_client *c, const char *bucket, const char *key,
			  const char *upload_id, char *const *etags, char *const *crc32cs,
			  size_t nparts, struct s3_version *v, struct err *e);
/* Returns 1 (not an error) when the server does not implement the call
 * (405 or 501). */
int s3_multipart_abort(struct s3_client *c, const char *bucket, const char *key,
		       const char *upload_id, struct err *e);

/* S3's XML answers, parsed from the `len` bytes of a body (need not be
 * NUL-terminated) by expat.  No I/O; any thread.  `where` names the
 * location ("s3://bucket/key") in errors.  Elements are matched by their
 * path from the root, namespaces as sent; elements nested deeper than 32
 * levels make the answer malformed.  (AWS S3 API Reference: ListObjectsV2,
 * CreateMultipartUpload, CompleteMultipartUpload, Error Responses.) */

/* An error answer, <Error><Code/><Message/></Error>.  code and message are
 * "" when absent and cut to fit. */
struct s3_error_answer {
	char code[64];
	char message[200];
	char endpoint[256];   /* <Endpoint> of a redirect: the host to send to */
	char region[64];      /* <Region> (AuthorizationHeaderMalformed: the right one) */
	char server_time[40]; /* <ServerTime> of RequestTimeTooSkewed (ISO 8601) */
	bool is_error;	      /* the root element is Error */
};
/* Fills *out from whatever the body holds; false when it is not
 * well-formed XML (what was read before the fault is kept). */
bool s3_error_answer_parse(const char *body, size_t len, struct s3_error_answer *out);

/* One page of a ListObjectsV2 answer (ListBucketResult): appends its
 * Contents (Key, Size; entries without a Key are skipped) to out->objects
 * and its CommonPrefixes to out->prefixes (the caller owns *out and frees it
 * with s3_listing_fini, also after an error).  *truncated is IsTruncated;
 * *next_token the NextContinuationToken (malloc'd) or NULL.  Code:
 * s3_bad_response (not XML, not a ListBucketResult, or truncated without a
 * continuation token). */
int s3_list_answer_parse(const char *body, size_t len, const char *where, struct s3_listing *out,
			 bool *truncated, char **next_token, struct err *e);

/* CreateMultipartUpload's answer: *upload_id (malloc'd) is
 * InitiateMultipartUploadResult/UploadId.  Code: s3_bad_response (none, or
 * empty, or not XML). */
int s3_create_multipart_answer_parse(const char *body, size_t len, const char *where,
				     char **upload_id, struct err *e);

/* CompleteMultipartUpload's answer, which may be an Error even with HTTP
 * 200; etag (NULL: not wanted) receives CompleteMultipartUploadResult/ETag
 * ("" when absent or longer than S3_ETAG_MAX - 1).  Codes: s3_error (an
 * Error, naming its Code and Message), s3_bad_response (not XML). */
int s3_complete_multipart_answer_parse(const char *body, size_t len, const char *where,
				       char etag[S3_ETAG_MAX], struct err *e);

/* The request the client would send, signed at `when` (for signature
 * tests).  range: NULL or a Range header value. */
struct s3_signed_request {
	char *url;
	char *host;
	char *payload_hash;
	char *authorization;
};
int s3_sign_request(struct s3_client *c, const char *method, const char *bucket, const char *key,
		    const struct sigv4_param *params, size_t nparams, const char *range,
		    const void *body, size_t len, time_t when, struct s3_signed_request *out,
		    struct err *e);
void s3_signed_request_fini(struct s3_signed_request *r);

#endif
