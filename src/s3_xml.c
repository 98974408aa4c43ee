/* SPDX-License-Identifier: MIT */
/*
 * s3_xml: S3's XML answers, parsed by expat (error answers, ListObjectsV2
 * pages, the answers of CreateMultipartUpload and CompleteMultipartUpload),
 * and the escaping of text put in a request body.  Pure functions over
 * bytes: no I/O.
 */
#include <expat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "s3_internal.h"

typedef void (*xml_field_fn)(void *arg, const char *path, const char *text);

struct xml_walk {
	char path[512];
	size_t depth_len[32];
	int depth;
	bool too_deep;
	struct buf text;
	xml_field_fn fn;
	void *arg;
};

static void XMLCALL xml_start(void *data, const XML_Char *name, const XML_Char **attrs)
{
	struct xml_walk *w = data;
	size_t len = strlen(w->path);

	(void)attrs;
	if (w->depth >= 32 || len + strlen(name) + 2 > sizeof(w->path)) {
		w->too_deep = true;
		w->depth++;
		return;
	}
	w->depth_len[w->depth++] = len;
	snprintf(w->path + len, sizeof(w->path) - len, "%s%s", len ? "/" : "", name);
	buf_clear(&w->text);
}

static void XMLCALL xml_end(void *data, const XML_Char *name)
{
	struct xml_walk *w = data;

	(void)name;
	w->depth--;
	if (w->depth >= 32 || w->too_deep)
		return;
	w->fn(w->arg, w->path, w->text.data ? w->text.data : "");
	w->path[w->depth_len[w->depth]] = '\0';
	buf_clear(&w->text);
}

static void XMLCALL xml_chars(void *data, const XML_Char *s, int len)
{
	struct xml_walk *w = data;

	if (len > 0 && w->text.len + (size_t)len <= 1 << 20)
		buf_append(&w->text, s, (size_t)len);
}

/* Calls fn(path, text) at the end of every element ("A/B/C").  Leading
 * white space is skipped: S3 sends some to keep the connection open while
 * a long operation (CompleteMultipartUpload) works, before the XML
 * declaration. */
static bool xml_walk(const char *body, size_t len, xml_field_fn fn, void *arg)
{
	struct xml_walk w = {.fn = fn, .arg = arg};
	XML_Parser p;
	bool ok;

	while (len && (*body == ' ' || *body == '\t' || *body == '\r' || *body == '\n')) {
		body++;
		len--;
	}
	p = XML_ParserCreate("UTF-8");
	if (!p)
		abort();
	XML_SetUserData(p, &w);
	XML_SetElementHandler(p, xml_start, xml_end);
	XML_SetCharacterDataHandler(p, xml_chars);
	ok = len <= INT32_MAX && XML_Parse(p, body, (int)len, 1) == XML_STATUS_OK && !w.too_deep;
	XML_ParserFree(p);
	buf_fini(&w.text);
	return ok;
}

static void error_field(void *arg, const char *path, const char *text)
{
	struct s3_error_answer *x = arg;

	if (strcmp(path, "Error") == 0)
		x->is_error = true;
	else if (strcmp(path, "Error/Code") == 0)
		snprintf(x->code, sizeof(x->code), "%s", text);
	else if (strcmp(path, "Error/Message") == 0)
		snprintf(x->message, sizeof(x->message), "%s", text);
	else if (strcmp(path, "Error/Endpoint") == 0)
		snprintf(x->endpoint, sizeof(x->endpoint), "%s", text);
	else if (strcmp(path, "Error/Region") == 0)
		snprintf(x->region, sizeof(x->region), "%s", text);
	else if (strcmp(path, "Error/ServerTime") == 0)
		snprintf(x->server_time, sizeof(x->server_time), "%s", text);
}

bool s3_error_answer_parse(const char *body, size_t len, struct s3_error_answer *out)
{
	memset(out, 0, sizeof(*out));
	return xml_walk(body, len, error_field, out);
}

/* ---- listings ---- */

struct list_page {
	struct s3_listing *out;
	char *key;
	uint64_t size;
	bool truncated;
	char *next_token;
	bool is_listing;
};

static void list_field(void *arg, const char *path, const char *text)
{
	struct list_page *p = arg;
	struct s3_listing *l = p->out;

	if (strcmp(path, "ListBucketResult") == 0) {
		p->is_listing = true;
	} else if (strcmp(path, "ListBucketResult/Contents/Key") == 0) {
		free(p->key);
		p->key = xstrdup(text);
	} else if (strcmp(path, "ListBucketResult/Contents/Size") == 0) {
		p->size = strtoull(text, NULL, 10);
	} else if (strcmp(path, "ListBucketResult/Contents") == 0 && p->key) {
		l->objects = xrealloc(l->objects, (l->nobjects + 1) * sizeof(*l->objects));
		l->objects[l->nobjects].key = p->key;
		l->objects[l->nobjects].size = p->size;
		l->nobjects++;
		p->key = NULL;
		p->size = 0;
	} else if (strcmp(path, "ListBucketResult/CommonPrefixes/Prefix") == 0) {
		l->prefixes = xrealloc(l->prefixes, (l->nprefixes + 1) * sizeof(*l->prefixes));
		l->prefixes[l->nprefixes++] = xstrdup(text);
	} else if (strcmp(path, "ListBucketResult/IsTruncated") == 0) {
		p->truncated = strcmp(text, "true") == 0;
	} else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0) {
		free(p->next_token);
		p->next_token = xstrdup(text);
	}
}

int s3_list_answer_parse(const char *body, size_t len, const char *where, struct s3_listing *out,
			 bool *truncated, char **next_token, struct err *e)
{
	struct list_page page = {.out = out};
	int rc = -1;

	*truncated = false;
	*next_token = NULL;
	if (!xml_walk(body, len, list_field, &page) || !page.is_listing) {
		err_set(e, ERR_S3_BAD_RESPONSE, "%s: the listing is not a ListBucketResult", where);
		goto out;
	}
	if (page.truncated && !page.next_token) {
		err_set(e, ERR_S3_BAD_RESPONSE, "%s: a truncated listing has no continuation token",
			where);
		goto out;
	}
	*truncated = page.truncated;
	*next_token = page.next_token;
	page.next_token = NULL;
	rc = 0;
out:
	free(page.key);
	free(page.next_token);
	return rc;
}

void s3_listing_fini(struct s3_listing *l)
{
	size_t i;

	for (i = 0; i < l->nobjects; i++)
		free(l->objects[i].key);
	for (i = 0; i < l->nprefixes; i++)
		free(l->prefixes[i]);
	free(l->objects);
	free(l->prefixes);
	memset(l, 0, sizeof(*l));
}

/* ---- multipart uploads ---- */

struct uploads_page {
	struct s3_uploads *out;
	char *key, *upload_id, *next_key, *next_upload_id;
	bool truncated, is_listing;
};

static void replace(char **field, const char *text)
{
	free(*field);
	*field = xstrdup(text);
}

static void uploads_field(void *arg, const char *path, const char *text)
{
	struct uploads_page *p = arg;
	struct s3_uploads *u = p->out;

	if (strcmp(path, "ListMultipartUploadsResult") == 0) {
		p->is_listing = true;
	} else if (strcmp(path, "ListMultipartUploadsResult/Upload/Key") == 0) {
		replace(&p->key, text);
	} else if (strcmp(path, "ListMultipartUploadsResult/Upload/UploadId") == 0) {
		replace(&p->upload_id, text);
	} else if (strcmp(path, "ListMultipartUploadsResult/Upload") == 0 && p->key &&
		   p->upload_id) {
		u->uploads = xrealloc(u->uploads, (u->n + 1) * sizeof(*u->uploads));
		u->uploads[u->n++] = (struct s3_upload){p->key, p->upload_id};
		p->key = p->upload_id = NULL;
	} else if (strcmp(path, "ListMultipartUploadsResult/IsTruncated") == 0) {
		p->truncated = strcmp(text, "true") == 0;
	} else if (strcmp(path, "ListMultipartUploadsResult/NextKeyMarker") == 0) {
		replace(&p->next_key, text);
	} else if (strcmp(path, "ListMultipartUploadsResult/NextUploadIdMarker") == 0) {
		replace(&p->next_upload_id, text);
	}
}

int s3_uploads_answer_parse(const char *body, size_t len, const char *where,
			    struct s3_uploads *out, bool *truncated, char **next_key,
			    char **next_upload_id, struct err *e)
{
	struct uploads_page page = {.out = out};
	int rc = -1;

	*truncated = false;
	*next_key = *next_upload_id = NULL;
	if (!xml_walk(body, len, uploads_field, &page) || !page.is_listing) {
		err_set(e, ERR_S3_BAD_RESPONSE,
			"%s: the listing is not a ListMultipartUploadsResult", where);
		goto out;
	}
	if (page.truncated && !page.next_key) {
		err_set(e, ERR_S3_BAD_RESPONSE, "%s: a truncated upload listing has no NextKeyMarker",
			where);
		goto out;
	}
	*truncated = page.truncated;
	*next_key = page.next_key;
	*next_upload_id = page.next_upload_id;
	page.next_key = page.next_upload_id = NULL;
	rc = 0;
out:
	free(page.key);
	free(page.upload_id);
	free(page.next_key);
	free(page.next_upload_id);
	return rc;
}

void s3_uploads_fini(struct s3_uploads *u)
{
	size_t i;

	for (i = 0; i < u->n; i++) {
		free(u->uploads[i].key);
		free(u->uploads[i].upload_id);
	}
	free(u->uploads);
	memset(u, 0, sizeof(*u));
}

struct single_field {
	const char *path;
	char *value;
	bool is_error;
	struct s3_error_answer error;
};

static void single_field(void *arg, const char *path, const char *text)
{
	struct single_field *f = arg;

	error_field(&f->error, path, text);
	if (strcmp(path, f->path) == 0) {
		free(f->value);
		f->value = xstrdup(text);
	}
}

int s3_create_multipart_answer_parse(const char *body, size_t len, const char *where,
				     char **upload_id, struct err *e)
{
	struct single_field f = {.path = "InitiateMultipartUploadResult/UploadId"};

	*upload_id = NULL;
	if (!xml_walk(body, len, single_field, &f) || !f.value || !*f.value) {
		free(f.value);
		return err_set(e, ERR_S3_BAD_RESPONSE,
			       "%s: CreateMultipartUpload answered no UploadId", where);
	}
	*upload_id = f.value;
	return 0;
}

int s3_complete_multipart_answer_parse(const char *body, size_t len, const char *where,
				       char etag[S3_ETAG_MAX], struct err *e)
{
	struct single_field f = {.path = "CompleteMultipartUploadResult/ETag"};
	int rc = 0;

	/* S3 may answer 200 and report a failure in the body. */
	if (!xml_walk(body, len, single_field, &f) || f.error.is_error)
		rc = err_set(e, f.error.is_error ? ERR_S3_ERROR : ERR_S3_BAD_RESPONSE,
			     "%s: CompleteMultipartUpload failed: %s (%s)", where,
			     f.error.code[0] ? f.error.code : "malformed answer",
			     f.error.message[0] ? f.error.message : "no message");
	if (etag)
		snprintf(etag, S3_ETAG_MAX, "%s",
			 rc == 0 && f.value && strlen(f.value) < S3_ETAG_MAX ? f.value : "");
	free(f.value);
	return rc;
}

void s3_xml_escape_into(struct buf *t, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			buf_append(t, "&amp;", 5);
			break;
		case '<':
			buf_append(t, "&lt;", 4);
			break;
		case '>':
			buf_append(t, "&gt;", 4);
			break;
		case '"':
			buf_append(t, "&quot;", 6);
			break;
		default:
			buf_append(t, s, 1);
		}
	}
}
