/* SPDX-License-Identifier: MIT */
/*
 * aws_credentials: the credentials S3 requests are signed with, found the
 * way the AWS SDKs' default chain finds them and refreshed before they
 * expire.  One provider is made per process (the CLI's run, the daemon and
 * all its jobs) and shared by every S3 client.
 *
 * The chain, in order (AWS SDKs and Tools Reference Guide, "Understand the
 * credential provider chain",
 * https://docs.aws.amazon.com/sdkref/latest/guide/standardized-credentials.html):
 *  1. "environment": AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
 *     AWS_SESSION_TOKEN (feature-static-credentials.html);
 *  2. "web_identity": AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (and
 *     AWS_ROLE_SESSION_NAME, default "ckptconv-<Unix time>"), exchanged by
 *     an unsigned STS AssumeRoleWithWebIdentity POST (STS API Reference,
 *     https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html)
 *     at AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, or the regional endpoint
 *     https://sts.REGION.amazonaws.com of AWS_REGION / AWS_DEFAULT_REGION
 *     (amazonaws.com.cn for cn- regions; the global https://sts.amazonaws.com
 *     without a region; feature-sts-regionalized-endpoints.html); the token
 *     file is read again at every refresh (Kubernetes rotates it);
 *  3. "shared_files": the profile AWS_PROFILE (default "default") of
 *     AWS_CONFIG_FILE (default ~/.aws/config) and AWS_SHARED_CREDENTIALS_FILE
 *     (default ~/.aws/credentials): aws_access_key_id,
 *     aws_secret_access_key, aws_session_token (aws_profile.h);
 *  4. "container": AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (appended to
 *     http://169.254.170.2) or else AWS_CONTAINER_CREDENTIALS_FULL_URI,
 *     sent the Authorization header read from
 *     AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read again every time) or
 *     else AWS_CONTAINER_AUTHORIZATION_TOKEN; a full URI over http must name
 *     a loopback address, 169.254.170.2, 169.254.170.23 or fd00:ec2::23 (a
 *     host name must resolve only to such addresses), https any host
 *     (feature-container-credentials.html);
 *  5. "instance_metadata": IMDSv2 (feature-imds-credentials.html,
 *     feature-ec2-instance-metadata.html): PUT /latest/api/token with
 *     X-aws-ec2-metadata-token-ttl-seconds: 21600, then GET
 *     /latest/meta-data/iam/security-credentials/ and .../ROLE with
 *     X-aws-ec2-metadata-token, at AWS_EC2_METADATA_SERVICE_ENDPOINT (default
 *     http://169.254.169.254, or http://[fd00:ec2::254] when
 *     AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE is IPv6), each request given
 *     AWS_METADATA_SERVICE_TIMEOUT seconds (default 1) and
 *     AWS_METADATA_SERVICE_NUM_ATTEMPTS tries (default 1), so a machine
 *     that is not on EC2 gives up within about a second; skipped when
 *     AWS_EC2_METADATA_DISABLED is "true".  IMDSv1 is not used.
 * The first source that is configured is used: its failure is the error
 * (it is not skipped for the next one), and once it has given credentials
 * the provider keeps to it.  A profile named by AWS_PROFILE that neither file
 * defines, a profile that has keys only in part or that gets credentials
 * another way (role_arn, credential_process, sso_*), and environment keys
 * given in part are errors, not sources to skip.  Container and instance
 * metadata answers are JSON {"AccessKeyId", "SecretAccessKey", "Token",
 * "Expiration"} (instance metadata also "Code": "Success").
 *
 * Refresh: temporary credentials (with an Expiration) are refreshed ahead
 * of time, 5 minutes before they expire or half-way through their
 * remaining lifetime when that is shorter (aws_credentials_schedule).  The
 * thread that first asks after that time does the refresh while every other
 * thread goes on signing with the current credentials; a refresh that fails
 * is logged and tried again later, and only once the current credentials
 * have expired does aws_credentials_get wait for a refresh and fail with
 * it.  The environment and the shared files are read once.
 *
 * Every source's keys and session token are checked before they are used
 * (aws_credential_text_check): one holding a control character, which
 * would start a header of its own in a request, or any byte outside
 * printable ASCII is refused as malformed, naming the source.
 *
 * Secrets (secret keys, session tokens, web identity and container tokens)
 * are never logged or put in errors.  Errors: s3_credentials, the message
 * naming the source ("web identity (STS ...)", "instance metadata ...") and
 * what went wrong (HTTP status, the service's error code and message, a
 * timeout, a malformed answer, a missing profile or file).
 *
 * Threads: every function may be called from any thread; a provider and its
 * snapshots are reference counted.
 */
#ifndef CKPTCONV_AWS_CREDENTIALS_H
#define CKPTCONV_AWS_CREDENTIALS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct err;
struct aws_credentials;

/* The names of the sources (aws_credentials_snapshot.source). */
#define AWS_SOURCE_ENVIRONMENT "environment"
#define AWS_SOURCE_WEB_IDENTITY "web_identity"
#define AWS_SOURCE_SHARED_FILES "shared_files"
#define AWS_SOURCE_CONTAINER "container"
#define AWS_SOURCE_INSTANCE_METADATA "instance_metadata"

/* Refresh ahead of expiry: at most this many seconds before it. */
#define AWS_CREDENTIALS_REFRESH_AHEAD 300

/* Credentials as one consistent, immutable set. */
struct aws_credentials_snapshot {
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token; /* NULL for long-term keys */
	time_t expiration;	   /* Unix seconds; 0: they do not expire */
	const char *source;	   /* AWS_SOURCE_*, or a custom provider's name */
};

/* Credentials as a source answers them (all malloc'd but expiration). */
struct aws_credentials_answer {
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* NULL if none */
	time_t expiration;   /* 0 if none */
};
/* Wipes and frees the strings; the answer is left zeroed. */
void aws_credentials_answer_fini(struct aws_credentials_answer *a);

/* A provider of the default chain, configured from the environment as it
 * is now (the variables are copied; nothing is read or fetched until the
 * first aws_credentials_get).  Never fails. */
struct aws_credentials *aws_credentials_new(void);

/* A provider whose source is `fetch` (its name `source`, a static string):
 * called, from the thread that needs credentials, to get the first
 * credentials and every refresh; it fills *out (returning 0) or fails with
 * an error.  For other sources of credentials and for tests. */
typedef int (*aws_credentials_fetch_fn)(void *arg, struct aws_credentials_answer *out,
					struct err *e);
struct aws_credentials *aws_credentials_new_custom(const char *source,
						   aws_credentials_fetch_fn fetch, void *arg);

struct aws_credentials *aws_credentials_ref(struct aws_credentials *p);
/* Frees the provider with its last reference (NULL: no-op); snapshots
 * still held stay valid. */
void aws_credentials_unref(struct aws_credentials *p);

/* The credentials to sign a request with now: *out stays valid and
 * unchanged until aws_credentials_release, whatever refreshes happen
 * meanwhile.  The first call resolves the chain; a call once the refresh
 * time has come refreshes (see above).  Code: s3_credentials. */
int aws_credentials_get(struct aws_credentials *p, const struct aws_credentials_snapshot **out,
			struct err *e);
/* Releases a snapshot (NULL: no-op); the last release wipes its secrets. */
void aws_credentials_release(const struct aws_credentials_snapshot *s);

/* The service refused `used` as expired (S3's ExpiredToken): unless
 * newer credentials are already in place, the next aws_credentials_get
 * refreshes first.  For a source without expiry, nothing changes. */
void aws_credentials_expire(struct aws_credentials *p, const struct aws_credentials_snapshot *used);

/* The name of the source credentials came from (AWS_SOURCE_*), or NULL
 * while none has given any. */
const char *aws_credentials_source(struct aws_credentials *p);
/* How many times credentials were refreshed after the first ones. */
unsigned long aws_credentials_refreshes(struct aws_credentials *p);

/* The schedule of credentials obtained at `obtained` that expire at
 * `expiration` (Unix seconds): *refresh_at is when to refresh them
 * (expiration minus the smaller of AWS_CREDENTIALS_REFRESH_AHEAD and half
 * the lifetime), *usable_until when they are taken as expired (expiration
 * minus the smaller of 10 seconds and a tenth of the lifetime: a request
 * signed then still reaches the service in time).  Pure. */
void aws_credentials_schedule(double obtained, double expiration, double *refresh_at,
			      double *usable_until);

/* Test seam: the wall clock in Unix seconds (default: CLOCK_REALTIME). */
extern double (*aws_credentials_clock)(void);

#endif
