/* SPDX-License-Identifier: MIT */
/*
 * aws_fetch: the remote sources of the credential chain (aws_credentials.h)
 * as single exchanges over libcurl, and the parsers of their answers.
 *
 *  - STS AssumeRoleWithWebIdentity (STS API Reference,
 *    https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html):
 *    an unsigned POST of the form Action=AssumeRoleWithWebIdentity,
 *    Version=2011-06-15, RoleArn, RoleSessionName, WebIdentityToken (read
 *    from the token file at each call), answered in XML;
 *  - the container credentials endpoint (AWS SDKs and Tools Reference
 *    Guide, feature-container-credentials.html): a GET with the
 *    Authorization token, answered in JSON;
 *  - IMDSv2 (feature-imds-credentials.html; Amazon EC2 User Guide,
 *    "Use the Instance Metadata Service to access instance metadata"): a
 *    PUT for a session token, then the role name and the role's
 *    credentials, answered in JSON.
 *
 * STS and the container endpoint get AWS_FETCH_TIMEOUT_MS per request (of
 * which AWS_FETCH_CONNECT_TIMEOUT_MS to connect) and one more try after a
 * refused connection, a 5xx or 429 answer, or STS's IDPCommunicationError
 * or Throttling; a timeout is not tried again (the provider's refresh
 * schedule does that).  The container endpoint and the instance metadata
 * service are reached without any proxy.
 *
 * Errors: s3_credentials, naming the source ("web identity (STS at URL)",
 * "container credentials (URL)", "instance metadata (URL)") and what went
 * wrong: no connection, a timeout, an HTTP status with the service's code
 * and message, an answer that is not what the API describes.  Tokens and
 * secrets are never put in errors: before a service's answer is read, any
 * copy of the token sent to it (web identity token, as sent and
 * URL-encoded; container authorization token) is overwritten with '*', and
 * the service's code and message go into an error with each control
 * character made '?'.  Any thread; calls block.
 */
#ifndef CKPTCONV_AWS_FETCH_H
#define CKPTCONV_AWS_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "ckptconv/aws_credentials.h"

struct err;

#define AWS_FETCH_TIMEOUT_MS 5000L
#define AWS_FETCH_CONNECT_TIMEOUT_MS 2000L
#define AWS_FETCH_ANSWER_MAX ((size_t)1 << 20) /* larger answers are malformed */
#define AWS_TOKEN_FILE_MAX ((size_t)64 << 10)  /* web identity and container tokens */
#define AWS_IMDS_TOKEN_TTL_SECONDS 21600
#define AWS_CONTAINER_HOST "http://169.254.170.2" /* of a relative URI (ECS) */

struct aws_sts_config {
	const char *endpoint; /* "https://sts.us-east-1.amazonaws.com" */
	const char *role_arn;
	const char *token_file; /* AWS_WEB_IDENTITY_TOKEN_FILE */
	const char *session_name;
	const char *ca_bundle; /* NULL: the system's */
};
int aws_sts_fetch(const struct aws_sts_config *c, struct aws_credentials_answer *out,
		  struct err *e);

struct aws_container_config {
	const char *url;	/* checked with aws_container_url_allowed */
	const char *token_file; /* wins over token; NULL if none */
	const char *token;	/* NULL if none */
	const char *ca_bundle;
};
int aws_container_fetch(const struct aws_container_config *c, struct aws_credentials_answer *out,
			struct err *e);

struct aws_imds_config {
	const char *endpoint; /* "http://169.254.169.254" */
	long timeout_ms;      /* per request */
	unsigned attempts;    /* per request, at least 1 */
};
int aws_imds_fetch(const struct aws_imds_config *c, struct aws_credentials_answer *out,
		   struct err *e);

/* The STS endpoint for a region ("" or NULL: the global endpoint), into a
 * malloc'd string. */
char *aws_sts_regional_endpoint(const char *region);

/* Whether AWS_CONTAINER_CREDENTIALS_FULL_URI may be `url`: https to any
 * host, or http to a loopback address, 169.254.170.2, 169.254.170.23 or
 * fd00:ec2::23 (a host name must resolve only to such addresses).  When
 * not, e says why (code s3_credentials). */
bool aws_container_url_allowed(const char *url, struct err *e);

/* The container credentials endpoint's URL, malloc'd (the caller frees
 * it): with AWS_CONTAINER_CREDENTIALS_RELATIVE_URI `relative` (ECS), that
 * path on AWS_CONTAINER_HOST, whatever `full` says, as the AWS SDKs do;
 * else AWS_CONTAINER_CREDENTIALS_FULL_URI `full` once
 * aws_container_url_allowed accepts it.  NULL with e set (code
 * s3_credentials) when it does not, or when neither is given. */
char *aws_container_url(const char *relative, const char *full, struct err *e);

/* Whether a key or token (`what`: "access key id", "session token" ...)
 * may go into a request: one byte or more, each printable ASCII (0x20 to
 * 0x7e).  A control character (a CR or LF would end an HTTP header and
 * start another) or any other byte makes it malformed: -1 with e set, code
 * s3_credentials, "SOURCE: the WHAT is malformed ...", never quoting the
 * value.  Every source's answer and the container authorization token go
 * through it. */
int aws_credential_text_check(const char *source, const char *what, const char *value,
			      struct err *e);

/* An ISO 8601 UTC time as the services send it ("2025-01-02T03:04:05Z";
 * fractional seconds and a "+00:00" zone allowed) into Unix seconds; false
 * when it is not one. */
bool aws_parse_time(const char *text, time_t *out);

/* STS's answer (`len` bytes, need not be NUL-terminated, parsed by expat):
 * AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/
 * Credentials/{AccessKeyId, SecretAccessKey, SessionToken, Expiration}, all
 * four required.  With a `status` other than 200, or an ErrorResponse, the
 * error names the status and the answer's Error/Code and Error/Message.
 * `where` names the endpoint in errors.  Code: s3_credentials. */
int aws_sts_answer_parse(const char *body, size_t len, long status, const char *where,
			 struct aws_credentials_answer *out, struct err *e);

/* A container or instance metadata answer: a JSON object with the strings
 * AccessKeyId, SecretAccessKey, Token and Expiration (required), and for
 * instance metadata a Code that must be "Success" (else the error gives
 * Code and Message).  `source` names the source and URL in errors.  Code:
 * s3_credentials. */
int aws_credentials_json_parse(const char *body, size_t len, const char *source,
			       struct aws_credentials_answer *out, struct err *e);

#endif
