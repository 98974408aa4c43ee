/* SPDX-License-Identifier: MIT */
/*
 * api_events: /v1/jobs/<id>/events, a job's Server-Sent Events stream:
 * "progress" events while it runs, at most every PROGRESS_INTERVAL
 * seconds, the final "state" event, and keep-alive comments.  A stream
 * with nothing to send suspends its connection; api_tick() resumes it
 * when an event is due.  When the service shuts down, a stream whose job
 * has not finished ends with a "shutdown" event: the job stays queued and
 * runs again from the start at the service's next start.
 */
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/registry.h"
#include "api_internal.h"

#define PROGRESS_INTERVAL 0.5 /* seconds between progress events */
#define KEEPALIVE_INTERVAL 15.0

static void stream_event(struct stream *s, const char *event, json_t *data)
{
	char *text = json_dumps(data, JSON_COMPACT | JSON_REAL_PRECISION(9));

	json_decref(data);
	buf_printf(&s->buf, "event: %s\ndata: %s\n\n", event, text ? text : "null");
	free(text);
}

/* Builds the next event if one is due (streams_lock held); false if none. */
static bool stream_fill(struct stream *s)
{
	struct registry *reg = s->api->reg;
	enum job_state state = registry_job_state(reg, s->job);
	double now = now_seconds();

	s->buf.len = 0;
	s->sent = 0;
	if (job_state_finished(state)) {
		stream_event(s, "state", registry_job_json(reg, s->job));
		s->final_sent = true;
		return true;
	}
	if (state == JOB_RUNNING && now >= s->next_progress) {
		stream_event(s, "progress", registry_progress_json(reg, s->job));
		s->next_progress = now + PROGRESS_INTERVAL;
		s->next_keepalive = now + KEEPALIVE_INTERVAL;
		return true;
	}
	if (now >= s->next_keepalive) {
		buf_puts(&s->buf, ": keepalive\n\n");
		s->next_keepalive = now + KEEPALIVE_INTERVAL;
		return true;
	}
	return false;
}

/* The last event of a stream cut by the service's shutdown (streams_lock
 * held): the job's final state when it has one, else "shutdown". */
static void stream_fill_last(struct stream *s)
{
	struct registry *reg = s->api->reg;

	s->buf.len = 0;
	s->sent = 0;
	s->final_sent = true;
	if (job_state_finished(registry_job_state(reg, s->job))) {
		stream_event(s, "state", registry_job_json(reg, s->job));
		return;
	}
	stream_event(s, "shutdown",
		     json_pack("{s:s, s:s, s:s}", "id", s->job->id, "state",
			       job_state_name(JOB_QUEUED), "message",
			       "the service is shutting down; the job stays queued and runs "
			       "again from the start when the service starts again"));
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct stream *s = cls;
	struct api *a = s->api;
	ssize_t n;

	(void)pos;
	pthread_mutex_lock(&a->streams_lock);
	for (;;) {
		if (s->sent < s->buf.len) {
			size_t len = s->buf.len - s->sent < max ? s->buf.len - s->sent : max;

			memcpy(out, s->buf.data + s->sent, len);
			s->sent += len;
			n = (ssize_t)len;
			break;
		}
		if (s->final_sent) {
			n = MHD_CONTENT_READER_END_OF_STREAM;
			break;
		}
		if (a->stopping) {
			stream_fill_last(s);
			continue;
		}
		if (stream_fill(s))
			continue;
		MHD_suspend_connection(s->conn);
		s->suspended = true;
		n = 0;
		break;
	}
	pthread_mutex_unlock(&a->streams_lock);
	return n;
}

static void stream_free(void *cls)
{
	struct stream *s = cls;
	struct api *a = s->api;

	pthread_mutex_lock(&a->streams_lock);
	LIST_UNLINK(a->streams, s);
	a->nstreams--;
	pthread_mutex_unlock(&a->streams_lock);
	job_unref(s->job);
	buf_fini(&s->buf);
	free(s);
}

enum MHD_Result api_handle_events(struct api *a, struct MHD_Connection *c, struct request *req,
				  const char *url)
{
	struct MHD_Response *resp;
	struct stream *s;
	struct job *j = api_lookup(a, req);

	if (!j)
		return api_job_not_found(c, req, url);
	if (req->head) {
		/* A stream has neither a length nor an end that the headers
		 * of a HEAD answer could describe truthfully, and
		 * libmicrohttpd would send a chunked body's terminator after
		 * them, bytes a kept-alive client takes for the next answer. */
		job_unref(j);
		return api_respond_errorf(c, req, "", ERR_METHOD_NOT_ALLOWED,
					  "%.200s is an event stream: GET it; HEAD has no headers "
					  "to describe it",
					  url);
	}
	s = xcalloc(1, sizeof(*s));
	s->api = a;
	s->job = j;
	s->conn = c;
	s->next_keepalive = now_seconds() + KEEPALIVE_INTERVAL;
	pthread_mutex_lock(&a->streams_lock);
	LIST_PUSH(a->streams, s);
	a->nstreams++;
	pthread_mutex_unlock(&a->streams_lock);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s,
						 stream_free);
	if (!resp) {
		stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	return api_queue(c, req, MHD_HTTP_OK, resp);
}

/* Whether a parked stream has something to send now (streams_lock held). */
bool api_stream_due(const struct stream *s, double now)
{
	enum job_state state;

	if (s->api->stopping || now >= s->next_keepalive)
		return true;
	state = registry_job_state(s->api->reg, s->job);
	return job_state_finished(state) || (state == JOB_RUNNING && now >= s->next_progress);
}
