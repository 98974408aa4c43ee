/* SPDX-License-Identifier: MIT */
/*
 * job: the job object (its states, references, progress) and its API
 * form; the growable buffer that responses are built in; durations.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ckptconv/job.h"
#include "ckptconv/job_tensors.h"
#include "ckptconv/plan.h"
#include "ckptconv/progress.h"
#include "job_internal.h"

/* ---- states ----------------------------------------------------------- */

static const char *const state_names[JOB_STATE_COUNT] = {
	"queued", "running", "succeeded", "failed", "cancelled",
};

const char *job_state_name(enum job_state s)
{
	return (unsigned)s < JOB_STATE_COUNT ? state_names[s] : "unknown";
}

int job_state_parse(const char *name)
{
	int i;

	for (i = 0; name && i < JOB_STATE_COUNT; i++)
		if (strcmp(state_names[i], name) == 0)
			return i;
	return -1;
}

bool job_state_finished(enum job_state s)
{
	return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED;
}

/* ---- the job object ---------------------------------------------------- */

static void random_id(char out[JOB_ID_LEN + 1])
{
	unsigned char bytes[JOB_ID_LEN / 2];
	size_t got = 0;

	while (got < sizeof(bytes)) {
		ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			abort();
		got += (size_t)n;
	}
	hex_encode(bytes, sizeof(bytes), out);
}

struct job *job_alloc(void)
{
	struct job *j = xcalloc(1, sizeof(*j));

	atomic_init(&j->refs, 1);
	pthread_mutex_init(&j->write_lock, NULL);
	return j;
}

struct job *job_new(struct job_spec *spec, uint64_t seq)
{
	struct job *j = job_alloc();

	random_id(j->id);
	j->seq = seq;
	j->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	j->state = JOB_QUEUED;
	j->created_ms = job_now_ms();
	return j;
}

struct job *job_ref(struct job *j)
{
	if (j)
		atomic_fetch_add(&j->refs, 1);
	return j;
}

void job_unref(struct job *j)
{
	if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	job_spec_fini(&j->spec);
	free(j->resolved_source);
	free(j->resolved_destination);
	free(j->idempotency_key);
	json_decref(j->result);
	conversion_free(j->prepared);
	free(j->api_text);
	free(j->tensor_states);
	job_tensors_unref(j->tensors);
	pthread_mutex_destroy(&j->write_lock);
	free(j);
}

int64_t job_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void job_format_time(int64_t ms, char *buf, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	size_t used;

	gmtime_r(&secs, &tm);
	used = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + used, len - used, ".%03dZ", (int)(ms % 1000));
}

static json_t *time_json(int64_t ms)
{
	char buf[40];

	if (!ms)
		return json_null();
	job_format_time(ms, buf, sizeof(buf));
	return json_string(buf);
}

void job_current_progress(const struct job *j, struct exec_progress *out)
{
	struct exec_progress p;

	*out = j->progress;
	if (!j->conv)
		return;
	conversion_progress(j->conv, &p);
	if (p.tensors_total == 0 && p.bytes_total == 0)
		return;
	out->tensors_total = p.tensors_total;
	out->tensors_done = p.tensors_done;
	out->bytes_total = p.bytes_total;
	out->bytes_done = p.bytes_done;
	out->elapsed_seconds = p.elapsed_seconds;
}

enum tensor_state job_tensor_state(const struct job *j, size_t i)
{
	if (j->conv) {
		const struct plan *plan = conversion_plan(j->conv);

		return plan && i < plan->ntensors ? conversion_tensor_state(j->conv, i) :
						    TENSOR_PENDING;
	}
	if (j->state == JOB_SUCCEEDED)
		return j->spec.dry_run ? TENSOR_PENDING : TENSOR_DONE;
	if (j->tensor_states && i < j->ntensor_states)
		return (enum tensor_state)j->tensor_states[i];
	return TENSOR_PENDING;
}

#define IN_FLIGHT_MAX 16

static json_t *in_flight_json(const struct job *j)
{
	json_t *names = json_array();
	uint32_t idx[IN_FLIGHT_MAX];
	const struct plan *plan;
	size_t n, i;

	if (!j->conv || j->state != JOB_RUNNING)
		return names;
	plan = conversion_plan(j->conv);
	n = conversion_in_flight(j->conv, idx, IN_FLIGHT_MAX);
	for (i = 0; plan && i < n; i++)
		if (idx[i] < plan->ntensors)
			json_array_append_new(names, json_string(plan->tensors[idx[i]].name));
	return names;
}

json_t *job_progress_json(const struct job *j)
{
	struct exec_progress p;
	double percent = 0, rate;
	json_t *o;

	job_current_progress(j, &p);
	if (p.bytes_total)
		percent = 100.0 * (double)p.bytes_done / (double)p.bytes_total;
	else if (p.tensors_total)
		percent = 100.0 * (double)p.tensors_done / (double)p.tensors_total;
	else if (j->state == JOB_SUCCEEDED)
		percent = 100.0;
	rate = progress_rate(&p);
	o = json_object();
	json_object_set_new(o, "tensors_total", json_integer((json_int_t)p.tensors_total));
	json_object_set_new(o, "tensors_done", json_integer((json_int_t)p.tensors_done));
	json_object_set_new(o, "bytes_total", json_integer((json_int_t)p.bytes_total));
	json_object_set_new(o, "bytes_done", json_integer((json_int_t)p.bytes_done));
	json_object_set_new(o, "percent", json_real((double)(int64_t)(percent * 10.0) / 10.0));
	json_object_set_new(o, "bytes_per_second", json_integer((json_int_t)rate));
	json_object_set_new(o, "elapsed_seconds",
			    json_real((double)(int64_t)(p.elapsed_seconds * 1000.0) / 1000.0));
	if (j->state == JOB_RUNNING && rate > 0)
		json_object_set_new(o, "eta_seconds",
				    json_integer((json_int_t)(progress_eta(&p) + 0.5)));
	else if (j->state == JOB_SUCCEEDED)
		json_object_set_new(o, "eta_seconds", json_integer(0));
	else
		json_object_set_new(o, "eta_seconds", json_null());
	json_object_set_new(o, "in_flight", in_flight_json(j));
	return o;
}

json_t *job_err_json(const struct err *e)
{
	if (!e->code)
		return json_null();
	return json_pack("{s:s, s:s, s:o}", "code", err_name(e->code), "message", e->msg, "tensor",
			 e->tensor[0] ? json_string(e->tensor) : json_null());
}

json_t *job_to_json(const struct job *j)
{
	json_t *o = json_object();
	json_t *req = job_spec_json(&j->spec, false);

	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "state", json_string(job_state_name(j->state)));
	json_object_set_new(o, "created_at", time_json(j->created_ms));
	json_object_set_new(o, "started_at", time_json(j->started_ms));
	json_object_set_new(o, "finished_at", time_json(j->finished_ms));
	json_object_update(o, req);
	json_decref(req);
	json_object_set_new(o, "progress", job_progress_json(j));
	json_object_set_new(o, "result", j->result ? json_incref(j->result) : json_null());
	json_object_set_new(o, "error", job_err_json(&j->error));
	json_object_set_new(o, "cancel_requested", json_boolean(j->cancel == JOB_CANCEL_USER));
	json_object_set_new(o, "restarts", json_integer(j->restarts));
	json_object_set_new(o, "credentials_source", job_credentials_source_json(j));
	return o;
}

json_t *job_credentials_source_json(const struct job *j)
{
	return j->credentials_source[0] ? json_string(j->credentials_source) : json_null();
}

/* ---- durations ---------------------------------------------------------- */

int job_parse_duration(const char *text, int64_t *ms, struct err *e)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {
		{"", 1000},	{"s", 1000},	 {"m", 60000},
		{"h", 3600000}, {"d", 86400000}, {"w", 604800000},
	};
	const char *p = text;
	int64_t value = 0;
	size_t i;

	if (!text || *p < '0' || *p > '9')
		return err_set(e, ERR_INVALID_OPTION,
			       "'%s' is not a duration (examples: 7d, 12h, 30m, 90s)",
			       text ? text : "");
	while (*p >= '0' && *p <= '9') {
		if (__builtin_mul_overflow(value, 10, &value) ||
		    __builtin_add_overflow(value, *p - '0', &value))
			return err_set(e, ERR_INVALID_OPTION, "duration '%s' is too large", text);
		p++;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].unit) == 0) {
			if (__builtin_mul_overflow(value, units[i].ms, ms))
				return err_set(e, ERR_INVALID_OPTION, "duration '%s' is too large",
					       text);
			return 0;
		}
	}
	return err_set(e, ERR_INVALID_OPTION, "'%s' has an unknown unit (use s, m, h, d or w)", text);
}
