/* SPDX-License-Identifier: MIT */
/*
 * api_respond: the answers of the HTTP interface.  Bodies are JSON
 * (jansson) ending in a newline, or data built elsewhere; errors are
 * {"error": {"code", "message", "field"}} with the status the catalogue
 * gives the code (err.h) and Retry-After where waiting helps; every
 * answer is counted in the metrics of its route.
 */
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/metrics.h"
#include "api_internal.h"

#define RETRY_QUEUE_FULL "5"
#define RETRY_DRAINING "30"
#define RETRY_NOT_READY "5"

enum MHD_Result api_queue(struct MHD_Connection *c, struct request *req, unsigned status,
			  struct MHD_Response *resp)
{
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	rc = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	metrics_http_observe(req->route, status, now_seconds() - req->started);
	if (status >= 500 && status != 503)
		log_msg(LOG_WARN, NULL, "answered %u on %s", status,
			metrics_route_name(req->route));
	return rc;
}

/* The Allow header of a route. */
static const char *allowed_methods(enum metrics_route route)
{
	switch (route) {
	case ROUTE_JOBS_LIST:
	case ROUTE_JOBS_CREATE:
		return "GET, POST";
	case ROUTE_JOB_GET:
	case ROUTE_JOB_DELETE:
		return "GET, DELETE";
	default:
		return "GET";
	}
}

/* Answers with `data` (taken over). */
enum MHD_Result api_respond_data(struct MHD_Connection *c, struct request *req, unsigned status,
				 const char *content_type, char *data, size_t len,
				 const char *retry_after, const char *location)
{
	struct MHD_Response *resp;

	resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(data);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (retry_after)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
	if (location)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allowed_methods(req->route));
	return api_queue(c, req, status, resp);
}

/* Answers with `body` (a reference taken over) and an optional Location. */
enum MHD_Result api_respond_json(struct MHD_Connection *c, struct request *req, unsigned status,
				 json_t *body, const char *location)
{
	char *text = json_dumps(body, JSON_COMPACT);
	size_t len;

	json_decref(body);
	if (!text)
		return MHD_NO;
	len = strlen(text);
	text = xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	return api_respond_data(c, req, status, "application/json", text, len, NULL, location);
}

static const char *retry_after_for(enum err_code code)
{
	if (code == ERR_QUEUE_FULL)
		return RETRY_QUEUE_FULL;
	if (code == ERR_DRAINING)
		return RETRY_DRAINING;
	if (code == ERR_NOT_READY)
		return RETRY_NOT_READY;
	return NULL;
}

enum MHD_Result api_respond_error(struct MHD_Connection *c, struct request *req,
				  const struct job_error *je)
{
	enum err_code code = je->err.code ? je->err.code : ERR_INTERNAL_ERROR;
	json_t *error = json_pack("{s:s, s:s}", "code", err_name(code), "message",
				  je->err.code ? je->err.msg : "internal error");
	unsigned status = (unsigned)err_http_status(code);
	json_t *body;
	char *text;
	size_t len;

	if (je->field[0])
		json_object_set_new(error, "field", json_string(je->field));
	metrics_api_error(code);
	body = json_pack("{s:o}", "error", error);
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return MHD_NO;
	len = strlen(text);
	text = xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	return api_respond_data(c, req, status, "application/json", text, len,
				retry_after_for(code), NULL);
}

enum MHD_Result api_respond_errorf(struct MHD_Connection *c, struct request *req, const char *field,
				   enum err_code code, const char *fmt, ...)
{
	struct job_error je = {0};
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	job_error_set(&je, field, code, "%s", msg);
	return api_respond_error(c, req, &je);
}
