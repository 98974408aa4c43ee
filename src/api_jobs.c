/* SPDX-License-Identifier: MIT */
/*
 * api_jobs: the /v1/jobs routes.  A new job's request is validated and
 * checked against the policy here; its connection is then suspended while
 * a submission thread of the registry reads and plans the source, and
 * resumed with the outcome.  Listing, status, cancellation and the
 * per-tensor listing answer from the registry's snapshots.
 */
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/api_query.h"
#include "ckptconv/registry.h"
#include "api_internal.h"

/* The query string's arguments, as libmicrohttpd decoded them; they point
 * into the connection's memory. */
struct query_args {
	struct api_query_arg *args;
	size_t n;
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct query_args *q = cls;

	(void)kind;
	if (!key)
		return MHD_YES;
	q->args = xrealloc(q->args, (q->n + 1) * sizeof(*q->args));
	q->args[q->n].name = key;
	q->args[q->n].value = value;
	q->n++;
	return MHD_YES;
}

static void query_args_get(struct MHD_Connection *c, struct query_args *q)
{
	memset(q, 0, sizeof(*q));
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, q);
}

/* Printable ASCII, 1 to 255 characters. */
static bool idempotency_key_valid(const char *key)
{
	size_t n = strlen(key);
	size_t i;

	if (n == 0 || n > 255)
		return false;
	for (i = 0; i < n; i++)
		if (key[i] < 0x21 || key[i] > 0x7e)
			return false;
	return true;
}

static void request_digest(const json_t *body, char out[SHA256_HEX_SIZE])
{
	char *canonical = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);

	sha256_hex(canonical ? canonical : "", canonical ? strlen(canonical) : 0, out);
	free(canonical);
}

static enum MHD_Result answer_created(struct api *a, struct MHD_Connection *c, struct request *req,
				      struct job *j, bool existing)
{
	char location[64];
	json_t *body = registry_job_json(a->reg, j);

	snprintf(location, sizeof(location), "/v1/jobs/%s", j->id);
	job_unref(j);
	return api_respond_json(c, req, existing ? MHD_HTTP_OK : MHD_HTTP_CREATED, body, location);
}

/* Drops a reference (streams_lock held); true when it was the last. */
bool api_wait_release(struct create_wait *w)
{
	return --w->refs == 0;
}

void api_wait_free(struct create_wait *w)
{
	job_unref(w->job);
	free(w);
}

static void on_submitted(void *arg, struct job *j, bool existing, const struct job_error *je)
{
	struct create_wait *w = arg;
	struct api *a = w->api;
	bool last;

	pthread_mutex_lock(&a->streams_lock);
	w->job = j;
	w->existing = existing;
	if (!j && je)
		w->je = *je;
	w->done = true;
	a->waits_unanswered--;
	if (!w->orphaned)
		MHD_resume_connection(w->conn);
	last = api_wait_release(w);
	pthread_mutex_unlock(&a->streams_lock);
	if (last)
		api_wait_free(w);
}

/* Answers a resumed job submission. */
enum MHD_Result api_answer_submission(struct api *a, struct MHD_Connection *c, struct request *req)
{
	struct create_wait *w = req->wait;
	struct job_error je = {0};
	struct job *j;
	bool done, existing;

	pthread_mutex_lock(&a->streams_lock);
	done = w->done;
	j = w->job;
	w->job = NULL;
	existing = w->existing;
	je = w->je;
	pthread_mutex_unlock(&a->streams_lock);
	if (!done)
		return api_respond_errorf(
			c, req, "", ERR_DRAINING,
			"the service stopped before the job was created or refused; "
			"submit it again (with the same Idempotency-Key to find it if "
			"it was created)");
	if (!j)
		return api_respond_error(c, req, &je);
	return answer_created(a, c, req, j, existing);
}

enum MHD_Result api_handle_create(struct api *a, struct MHD_Connection *c, struct request *req)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_error_t jerr;
	json_t *body;
	struct job *prior = NULL;
	struct create_wait *w;
	char *src = NULL, *dst = NULL, digest[65];
	const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	enum MHD_Result rc;
	int submitted;

	if (req->too_large)
		return api_respond_errorf(c, req, "", ERR_PAYLOAD_TOO_LARGE,
					  "the request body is larger than %d bytes", API_BODY_MAX);
	if (key && !idempotency_key_valid(key))
		return api_respond_errorf(
			c, req, "Idempotency-Key", ERR_INVALID_FIELD,
			"Idempotency-Key must be 1 to 255 printable ASCII characters");
	body = json_loadb(req->body.data ? req->body.data : "", req->body.len,
			  JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return api_respond_errorf(c, req, "", ERR_INVALID_JSON,
					  "the body is not valid JSON: %s (line %d, column %d)",
					  jerr.text, jerr.line, jerr.column);
	request_digest(body, digest);
	if (job_spec_parse(body, &spec, &je) < 0) {
		json_decref(body);
		return api_respond_error(c, req, &je);
	}
	json_decref(body);
	if (job_spec_check(&spec, a->policy, &src, &dst, &je) < 0) {
		rc = api_respond_error(c, req, &je);
		goto out;
	}
	/* Reading and planning the source (and compiling the exclude
	 * pattern) happen on a submission thread; this connection waits,
	 * suspended, and the polling thread goes on serving others. */
	w = xcalloc(1, sizeof(*w));
	w->api = a;
	w->conn = c;
	w->refs = 2;
	pthread_mutex_lock(&a->streams_lock);
	if (a->stopping)
		submitted = job_error_set(&je, "", ERR_DRAINING,
					  "the service is shutting down and accepts no new jobs");
	else
		submitted = registry_submit_async(a->reg, &spec, src, dst, key, digest,
						  on_submitted, w, &prior, &je);
	if (submitted == 0) {
		MHD_suspend_connection(c);
		req->wait = w;
		LIST_PUSH(a->waits, w);
		a->nwaits++;
		a->waits_unanswered++;
	}
	pthread_mutex_unlock(&a->streams_lock);
	if (submitted == 0)
		rc = MHD_YES;
	else if (submitted == 1)
		rc = answer_created(a, c, req, prior, true);
	else
		rc = api_respond_error(c, req, &je);
	if (submitted != 0)
		free(w);
out:
	job_spec_fini(&spec);
	free(src);
	free(dst);
	return rc;
}

enum MHD_Result api_handle_list(struct api *a, struct MHD_Connection *c, struct request *req)
{
	struct job_error je = {0};
	struct api_jobs_query q;
	struct registry_filter f;
	struct query_args args;
	enum MHD_Result rc;

	query_args_get(c, &args);
	if (api_jobs_query_parse(args.args, args.n, &q, &je) < 0) {
		rc = api_respond_error(c, req, &je);
		goto out;
	}
	f.state = q.state;
	f.limit = (size_t)q.limit;
	f.before_seq = q.cursor;
	f.label_keys = q.label_keys;
	f.label_values = q.label_values;
	f.nlabels = q.nlabels;
	rc = api_respond_json(c, req, MHD_HTTP_OK, registry_list(a->reg, &f), NULL);
out:
	api_jobs_query_fini(&q);
	free(args.args);
	return rc;
}

struct job *api_lookup(struct api *a, struct request *req)
{
	return req->id_valid ? registry_get(a->reg, req->id) : NULL;
}

enum MHD_Result api_job_not_found(struct MHD_Connection *c, struct request *req, const char *url)
{
	return api_respond_errorf(c, req, "", ERR_JOB_NOT_FOUND, "no job matches %.100s", url);
}

enum MHD_Result api_handle_get(struct api *a, struct MHD_Connection *c, struct request *req,
			       const char *url)
{
	struct job *j = api_lookup(a, req);
	char *text;
	size_t len = 0;

	if (!j)
		return api_job_not_found(c, req, url);
	text = registry_job_text(a->reg, j, &len);
	job_unref(j);
	if (!text)
		return MHD_NO;
	return api_respond_data(c, req, MHD_HTTP_OK, "application/json", text, len, NULL, NULL);
}

enum MHD_Result api_handle_delete(struct api *a, struct MHD_Connection *c, struct request *req,
				  const char *url)
{
	struct job_error je = {0};
	enum registry_delete_outcome outcome;
	json_t *body = NULL;
	struct MHD_Response *resp;

	if (!req->id_valid)
		return api_job_not_found(c, req, url);
	if (registry_delete(a->reg, req->id, &outcome, &body, &je) < 0)
		return api_respond_error(c, req, &je);
	if (outcome == REGISTRY_DELETED) {
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
		return api_queue(c, req, MHD_HTTP_NO_CONTENT, resp);
	}
	return api_respond_json(c, req,
				outcome == REGISTRY_CANCELLING ? MHD_HTTP_ACCEPTED : MHD_HTTP_OK,
				body, NULL);
}

enum MHD_Result api_handle_tensors(struct api *a, struct MHD_Connection *c, struct request *req,
				   const char *url)
{
	struct job_error je = {0};
	struct api_tensors_query q;
	struct buf out = {0};
	struct query_args args;
	struct job *j;
	int rc;

	query_args_get(c, &args);
	rc = api_tensors_query_parse(args.args, args.n, &q, &je);
	free(args.args);
	if (rc < 0)
		return api_respond_error(c, req, &je);
	j = api_lookup(a, req);
	if (!j)
		return api_job_not_found(c, req, url);
	registry_tensors(a->reg, j, q.state, (size_t)q.offset, (size_t)q.limit, &out);
	job_unref(j);
	buf_append(&out, "\n", 1);
	return api_respond_data(c, req, MHD_HTTP_OK, "application/json", out.data, out.len, NULL,
				NULL);
}
