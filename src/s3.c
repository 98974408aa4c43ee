/* SPDX-License-Identifier: MIT */
/*
 * s3: the S3 client and its operations.  A client holds its settings and
 * credentials, a curl share (DNS cache, TLS sessions) and a pool of lanes
 * (s3_call.c), so connections are reused across calls without sharing a
 * connection cache between threads.  Each operation is one call, or for a
 * ranged read several run in parallel.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/crc32c.h"
#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "ckptconv/sigv4.h"
#include "ckptconv/util.h"
#include "s3_internal.h"

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

int s3_client_new(const struct s3_settings *settings, struct aws_credentials *credentials,
		  struct s3_client **out, struct err *e)
{
	struct s3_client *c;
	int i;

	*out = NULL;
	pthread_once(&curl_once, curl_start);
	if (!curl_ready)
		return err_set(e, ERR_INTERNAL_ERROR, "libcurl failed to initialise");
	c = xcalloc(1, sizeof(*c));
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->lanes_lock, NULL);
	pthread_mutex_init(&c->moved_lock, NULL);
	c->share = curl_share_init();
	if (!c->share) {
		s3_client_free(c);
		return err_set(e, ERR_INTERNAL_ERROR, "libcurl could not create a share handle");
	}
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	if (s3_client_configure(c, settings, credentials, e)) {
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
	pthread_mutex_destroy(&c->moved_lock);
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

struct lane *s3_lane_get(struct s3_client *c)
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

void s3_lane_put(struct s3_client *c, struct lane *l)
{
	pthread_mutex_lock(&c->lanes_lock);
	l->next = c->idle_lanes;
	c->idle_lanes = l;
	pthread_mutex_unlock(&c->lanes_lock);
}

/* ---- operations ---- */

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
	s3_call_init(&k, c, "ListObjectsV2", "GET", bucket, NULL);
	k.named = prefix;
	k.params = params;
	k.nparams = n;
	if (s3_perform_one(&k, e))
		goto out;
	if (asprintf(&where, "s3://%s/%s", bucket, prefix) < 0)
		abort();
	if (s3_list_answer_parse(k.answer.data ? k.answer.data : "", k.answer.len, where, out, more,
				 &next_token, e))
		goto out;
	free(*token);
	*token = next_token;
	rc = 0;
out:
	free(where);
	s3_call_fini(&k);
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

/* One page of ListMultipartUploads; 1 when the server lacks the call. */
static int uploads_page(struct s3_client *c, const char *bucket, const char *prefix,
			char **key_marker, char **upload_marker, struct s3_uploads *out,
			bool *more, struct err *e)
{
	struct sigv4_param params[4];
	char *where = NULL, *next_key, *next_upload;
	struct err inner = {0};
	size_t n = 0;
	struct call k;
	int rc = -1;

	params[n++] = (struct sigv4_param){"uploads", ""};
	params[n++] = (struct sigv4_param){"prefix", prefix};
	if (*key_marker)
		params[n++] = (struct sigv4_param){"key-marker", *key_marker};
	if (*upload_marker)
		params[n++] = (struct sigv4_param){"upload-id-marker", *upload_marker};
	s3_call_init(&k, c, "ListMultipartUploads", "GET", bucket, NULL);
	k.named = prefix;
	k.params = params;
	k.nparams = n;
	if (s3_perform_one(&k, &inner)) {
		if (k.status == 405 || k.status == 501)
			rc = 1;
		else
			err_copy(e, &inner);
		goto out;
	}
	if (asprintf(&where, "s3://%s/%s", bucket, prefix) < 0)
		abort();
	if (s3_uploads_answer_parse(k.answer.data ? k.answer.data : "", k.answer.len, where, out,
				    more, &next_key, &next_upload, e))
		goto out;
	free(*key_marker);
	free(*upload_marker);
	*key_marker = next_key;
	*upload_marker = next_upload;
	rc = 0;
out:
	free(where);
	s3_call_fini(&k);
	return rc;
}

int s3_multipart_list(struct s3_client *c, const char *bucket, const char *prefix,
		      struct s3_uploads *out, struct err *e)
{
	char *key_marker = NULL, *upload_marker = NULL;
	bool more = true;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	while (more && rc == 0)
		rc = uploads_page(c, bucket, prefix, &key_marker, &upload_marker, out, &more, e);
	free(key_marker);
	free(upload_marker);
	if (rc)
		s3_uploads_fini(out);
	return rc;
}

int s3_head_version(struct s3_client *c, const char *bucket, const char *key, uint64_t *size,
		    struct s3_version *v, struct err *e)
{
	struct call k;
	int rc = -1;

	s3_call_init(&k, c, "HeadObject", "HEAD", bucket, key);
	if (s3_perform_one(&k, e))
		goto out;
	if (!k.has_length) {
		err_set(e, ERR_S3_BAD_RESPONSE, "s3://%s/%s: HEAD answered without a Content-Length",
			bucket, key);
		goto out;
	}
	*size = k.content_length;
	if (v) {
		snprintf(v->etag, sizeof(v->etag), "%s", k.etag);
		snprintf(v->version_id, sizeof(v->version_id), "%s", k.version_id);
	}
	rc = 0;
out:
	s3_call_fini(&k);
	return rc;
}

int s3_head(struct s3_client *c, const char *bucket, const char *key, uint64_t *size, struct err *e)
{
	return s3_head_version(c, bucket, key, size, NULL, e);
}

/* Every answer of a read held to one version carries its ETag: a server
 * that ignores If-Match still shows the object changed. */
static int same_version(struct call *calls, size_t n, struct s3_version *v, struct err *e)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (!calls[i].etag[0])
			continue;
		if (!v->etag[0]) {
			snprintf(v->etag, sizeof(v->etag), "%s", calls[i].etag);
			snprintf(v->version_id, sizeof(v->version_id), "%s", calls[i].version_id);
			continue;
		}
		if (strcmp(calls[i].etag, v->etag) != 0)
			return err_set(e, ERR_SOURCE_CHANGED,
				       "s3://%s/%s changed while the conversion read it (ETag %s -> %s);"
				       " nothing of the conversion is published, run it again on the new"
				       " version",
				       calls[i].bucket, calls[i].key, v->etag, calls[i].etag);
	}
	return 0;
}

int s3_get_range_version(struct s3_client *c, const char *bucket, const char *key, uint64_t off,
			 void *buf, size_t len, struct s3_version *v, struct err *e)
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
		s3_call_init(&calls[i], c, "GetObject", "GET", bucket, key);
		calls[i].ranged = true;
		/* A weak ETag (W/"...", from some gateways) never matches
		 * If-Match: the answers' ETags are compared instead. */
		calls[i].if_match = NULL;
		if (v && v->etag[0] && strncmp(v->etag, "W/", 2) != 0)
			calls[i].if_match = v->etag;
		calls[i].off = off + i * chunk;
		calls[i].len = i + 1 < n ? chunk : len - i * chunk;
		calls[i].dst = (unsigned char *)buf + i * chunk;
		s3_payload_hash_of(c, NULL, 0, calls[i].payload_hash);
		ptrs[i] = &calls[i];
	}
	rc = s3_perform(c, ptrs, n, e);
	if (rc == 0 && v)
		rc = same_version(calls, n, v, e);
	for (i = 0; i < n; i++)
		s3_call_fini(&calls[i]);
	free(ptrs);
	free(calls);
	return rc;
}

int s3_get_range(struct s3_client *c, const char *bucket, const char *key, uint64_t off, void *buf,
		 size_t len, struct err *e)
{
	return s3_get_range_version(c, bucket, key, off, buf, len, NULL, e);
}

/* The version an answer names (its ETag header, x-amz-version-id). */
static void answered_version(const struct call *k, struct s3_version *v)
{
	if (!v)
		return;
	snprintf(v->etag, sizeof(v->etag), "%s", k->etag);
	snprintf(v->version_id, sizeof(v->version_id), "%s", k->version_id);
}

int s3_put(struct s3_client *c, const char *bucket, const char *key, const void *body, size_t len,
	   struct s3_version *v, struct err *e)
{
	struct call k;
	int rc;

	s3_call_init(&k, c, "PutObject", "PUT", bucket, key);
	k.body = body;
	k.body_len = len;
	k.content_type = "application/octet-stream";
	crc32c_base64(crc32c(0, body, len), k.crc32c);
	rc = s3_perform_one(&k, e);
	if (rc == 0)
		answered_version(&k, v);
	s3_call_fini(&k);
	return rc;
}

int s3_delete(struct s3_client *c, const char *bucket, const char *key, struct err *e)
{
	struct err inner = {0};
	struct call k;
	int rc;

	s3_call_init(&k, c, "DeleteObject", "DELETE", bucket, key);
	rc = s3_perform_one(&k, &inner);
	if (rc && inner.code && inner.code == ERR_SOURCE_NOT_FOUND)
		rc = 0;
	else if (rc)
		err_copy(e, &inner);
	s3_call_fini(&k);
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
	s3_call_init(&k, c, "CreateMultipartUpload", "POST", bucket, key);
	k.params = params;
	k.nparams = 1;
	k.content_type = "application/octet-stream";
	k.crc32c_parts = true;
	if (s3_perform_one(&k, e))
		goto out;
	if (asprintf(&where, "s3://%s/%s", bucket, key) < 0)
		abort();
	rc = s3_create_multipart_answer_parse(k.answer.data ? k.answer.data : "", k.answer.len,
					      where, upload_id, e);
out:
	free(where);
	s3_call_fini(&k);
	return rc;
}

int s3_multipart_upload_part(struct s3_client *c, const char *bucket, const char *key,
			     const char *upload_id, unsigned part_number, const void *body,
			     size_t len, char **etag, char crc32c_out[9], struct err *e)
{
	char number[16];
	struct sigv4_param params[] = {{"partNumber", number}, {"uploadId", upload_id}};
	struct call k;
	int rc = -1;

	*etag = NULL;
	snprintf(number, sizeof(number), "%u", part_number);
	s3_call_init(&k, c, "UploadPart", "PUT", bucket, key);
	k.params = params;
	k.nparams = 2;
	k.body = body;
	k.body_len = len;
	k.content_type = "application/octet-stream";
	crc32c_base64(crc32c(0, body, len), k.crc32c);
	if (crc32c_out)
		memcpy(crc32c_out, k.crc32c, 9);
	if (s3_perform_one(&k, e))
		goto out;
	if (!k.etag[0]) {
		err_set(e, ERR_S3_BAD_RESPONSE, "s3://%s/%s: UploadPart %u answered no ETag", bucket,
			key, part_number);
		goto out;
	}
	*etag = xstrdup(k.etag);
	rc = 0;
out:
	s3_call_fini(&k);
	return rc;
}

int s3_multipart_complete(struct s3_client *c, const char *bucket, const char *key,
			  const char *upload_id, char *const *etags, char *const *crc32cs,
			  size_t nparts, struct s3_version *v, struct err *e)
{
	static const char head[] =
		"<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
	static const char tail[] = "</CompleteMultipartUpload>";
	struct sigv4_param params[] = {{"uploadId", upload_id}};
	struct buf body = {0};
	char part[64], *where = NULL;
	size_t i;
	struct call k;
	int rc = -1;

	buf_append(&body, head, strlen(head));
	for (i = 0; i < nparts; i++) {
		snprintf(part, sizeof(part), "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
		buf_append(&body, part, strlen(part));
		s3_xml_escape_into(&body, etags[i]);
		buf_append(&body, "</ETag>", 7);
		if (crc32cs && crc32cs[i]) {
			buf_append(&body, "<ChecksumCRC32C>", 16);
			s3_xml_escape_into(&body, crc32cs[i]);
			buf_append(&body, "</ChecksumCRC32C>", 17);
		}
		buf_append(&body, "</Part>", 7);
	}
	buf_append(&body, tail, strlen(tail));
	s3_call_init(&k, c, "CompleteMultipartUpload", "POST", bucket, key);
	k.params = params;
	k.nparams = 1;
	k.body = body.data;
	k.body_len = body.len;
	k.content_type = "application/xml";
	k.error_in_ok = true;
	if (s3_perform_one(&k, e))
		goto out;
	if (asprintf(&where, "s3://%s/%s", bucket, key) < 0)
		abort();
	rc = s3_complete_multipart_answer_parse(k.answer.data ? k.answer.data : "", k.answer.len,
						where, v ? v->etag : NULL, e);
	if (rc == 0 && v)
		snprintf(v->version_id, sizeof(v->version_id), "%s", k.version_id);
out:
	free(where);
	buf_fini(&body);
	s3_call_fini(&k);
	return rc;
}

int s3_multipart_abort(struct s3_client *c, const char *bucket, const char *key,
		       const char *upload_id, struct err *e)
{
	struct sigv4_param params[] = {{"uploadId", upload_id}};
	struct err inner = {0};
	struct call k;
	int rc;

	s3_call_init(&k, c, "AbortMultipartUpload", "DELETE", bucket, key);
	k.params = params;
	k.nparams = 1;
	rc = s3_perform_one(&k, &inner);
	if (rc && (k.status == 405 || k.status == 501)) {
		rc = 1;
	} else if (rc && inner.code && inner.code == ERR_SOURCE_NOT_FOUND) {
		rc = 0;
	} else if (rc) {
		err_copy(e, &inner);
	}
	s3_call_fini(&k);
	return rc;
}
