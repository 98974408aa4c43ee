/* SPDX-License-Identifier: MIT */
/*
 * s3_internal: what the files of the S3 client share, and nothing outside
 * them sees.  s3.c holds the client (its curl share and lanes) and the
 * operations; s3_settings.c the settings, endpoints and s3:// locations;
 * s3_sign.c addressing and signing; s3_call.c the calls (curl multi,
 * answers checked, retries with backoff); s3_xml.c the XML of S3 (expat).
 */
#ifndef CKPTCONV_S3_INTERNAL_H
#define CKPTCONV_S3_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "ckptconv/sigv4.h"
#include "ckptconv/util.h"

#define MIB ((uint64_t)1 << 20)
#define LANE_HANDLES 8	   /* parallel requests of one call */
#define S3_REDIRECTS_MAX 3 /* redirects one request follows */

enum style { STYLE_AUTO, STYLE_PATH, STYLE_VIRTUAL };

/* Where S3 said to send a request instead of the configured endpoint
 * (a redirect, or the bucket's region): a host[:port] that holds the whole
 * request host ("" keeps the client's), its scheme, and the region to sign
 * for ("" keeps the client's). */
struct route {
	char authority[256];
	bool https;
	char region[64];
};

static inline bool is_set(const char *v)
{
	return v && *v;
}

/* ---- the client (s3.c) ---- */

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
	struct aws_credentials *credentials; /* shared with the process's other clients */
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
	/* A bucket S3 answered is in another region (301 PermanentRedirect,
	 * AuthorizationHeaderMalformed): later requests for it go there at
	 * once.  moved_bucket "" when none; both protected by moved_lock. */
	pthread_mutex_t moved_lock;
	char moved_bucket[64];
	struct route moved;
	_Atomic long long *clock_offset; /* the endpoint's (s3_clock_for) */
};

/* Fills c's settings, resolved thread > process > environment, and its
 * credentials provider, the process's (s3_settings.c), from which it
 * obtains credentials once.  Codes: s3_config, s3_credentials. */
int s3_client_configure(struct s3_client *c, const struct s3_settings *settings,
			struct aws_credentials *credentials, struct err *e);
/* An idle lane of c, or a new one; s3_lane_put gives it back. */
struct lane *s3_lane_get(struct s3_client *c);
void s3_lane_put(struct s3_client *c, struct lane *l);

/* ---- addressing and signing (s3_sign.c) ---- */

struct target {
	char *host;
	char *path;  /* encoded */
	char *query; /* canonical */
	char *url;
};

void s3_target_fini(struct target *t);
/* The host, path, canonical query and URL of a request (path-style or
 * virtual-hosted, as the client's style and the bucket say). */
void s3_target_build(const struct s3_client *c, const char *bucket, const char *key,
		     const struct sigv4_param *params, size_t nparams, struct target *t);
/* The same at `route` (NULL: the client's endpoint): a route's authority
 * that starts with "<bucket>." is virtual-hosted, any other path-style. */
void s3_target_build_at(const struct s3_client *c, const struct route *route, const char *bucket,
			const char *key, const struct sigv4_param *params, size_t nparams,
			struct target *t);
/* Whether a request for `bucket`, with its credentials, may follow S3 to
 * `authority` (host[:port]) over https or http: the same scheme as the
 * endpoint or https; with a custom endpoint its host or a name under it,
 * on the endpoint's port (no port: the scheme's default, 80 or 443, on
 * either side); with AWS an S3 host ("[bucket.]s3." or "s3-" ...) of
 * amazonaws.com or amazonaws.com.cn, no port.  Else *why says why not. */
bool s3_route_allowed(const struct s3_client *c, const char *bucket, const char *authority,
		      bool https, char *why, size_t why_len);
/* The x-amz-content-sha256 of a body: UNSIGNED-PAYLOAD over https. */
void s3_payload_hash_of(const struct s3_client *c, const void *body, size_t len,
			char out[SHA256_HEX_SIZE]);
/* The Authorization header value (malloc'd) signed with `credentials`, or
 * NULL; `extra` (nextra of them, at most 4) are the request's headers
 * signed besides host and the x-amz-date/content-sha256/security-token
 * ones (Range, the checksum headers). */
char *s3_authorization_for(const struct s3_client *c,
			   const struct aws_credentials_snapshot *credentials, const char *method,
			   const struct target *t, const struct sigv4_header *extra, size_t nextra,
			   const char *payload_hash, time_t when);
/* The same for `region` instead of the client's. */
char *s3_authorization_in(const struct s3_client *c, const char *region,
			  const struct aws_credentials_snapshot *credentials, const char *method,
			  const struct target *t, const struct sigv4_header *extra, size_t nextra,
			  const char *payload_hash, time_t when);

/* ---- calls (s3_call.c) ---- */

/* Passes an error recorded elsewhere on to e (first error wins). */
static inline void err_copy(struct err *e, const struct err *from)
{
	if (e && !err_is_set(e))
		*e = *from;
}

/* CALL_RESEND: sent again at once, not counted as an attempt (a
 * redirect followed, a clock corrected). */
enum call_state { CALL_PENDING, CALL_DONE, CALL_RETRY, CALL_RESEND, CALL_FAILED };

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
	/* x-amz-checksum-crc32c of the body (base64), or "" for none: the
	 * server rejects a body that arrives with another CRC-32C
	 * (BadDigest). */
	char crc32c[9];
	/* CreateMultipartUpload: the parts come with CRC-32C checksums
	 * (x-amz-checksum-algorithm CRC32C). */
	bool crc32c_parts;
	/* The operation may answer 200 with an <Error> body: S3 sends the
	 * status before the work is done (CompleteMultipartUpload, and
	 * CopyObject and UploadPartCopy were they used). */
	bool error_in_ok;
	bool ranged;
	const char *if_match; /* an ETag the object must still have (GET) */
	uint64_t off;
	size_t len;
	unsigned char *dst;
	char payload_hash[SHA256_HEX_SIZE];
	/* Across attempts: where S3 redirected the request, how often, and
	 * how often it was signed again with a corrected clock. */
	struct route route;
	bool routed;
	unsigned redirects;
	unsigned skew_corrections;

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
	char etag[S3_ETAG_MAX];
	char version_id[S3_ETAG_MAX]; /* x-amz-version-id */
	char date[64];		/* Date */
	char bucket_region[64]; /* x-amz-bucket-region */
	char location[1024];	/* Location */
	struct buf answer;
	char errbuf[CURL_ERROR_SIZE];

	/* outcome */
	enum call_state state;
	struct err err;
};

void s3_call_init(struct call *k, struct s3_client *c, const char *op, const char *method,
		  const char *bucket, const char *key);
void s3_call_fini(struct call *k);
/* Runs the calls to completion with bounded retries.  On failure e holds
 * the first permanent error, or s3_unavailable naming the last transient
 * one. */
int s3_perform(struct s3_client *c, struct call **calls, size_t n, struct err *e);
/* s3_perform of one call, its payload hash computed first. */
int s3_perform_one(struct call *k, struct err *e);

/* The process's clock offset for `endpoint` (a custom endpoint's
 * host[:port], or "amazonaws.com"): made on first use, kept for the
 * process, read and set atomically. */
_Atomic long long *s3_clock_for(const char *endpoint);
/* The time c's requests are signed with: this machine's clock corrected by
 * what its endpoint answered RequestTimeTooSkewed with. */
time_t s3_clock_now(const struct s3_client *c);
/* Sets c's endpoint's offset so that now is `server_time`; returns the new
 * offset in seconds. */
long long s3_clock_correct(const struct s3_client *c, time_t server_time);

/* ---- XML (s3_xml.c) ---- */

/* Appends s to t with XML's special characters escaped. */
void s3_xml_escape_into(struct buf *t, const char *s);

#endif
