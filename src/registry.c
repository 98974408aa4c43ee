/* SPDX-License-Identifier: MIT */
/*
 * registry: the job table, the FIFO queue and the state changes of jobs.
 * Jobs are kept in two arrays, by creation order (listing, cursors) and by
 * id (look-ups by binary search); the queue holds queued jobs by creation
 * order, so a job put back by a drain keeps its place.  Every state change
 * is written to the job's record (registry_record.c) before anyone can act
 * on it elsewhere.  The runners are in registry_run.c, submissions in
 * registry_submit.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/job_tensors.h"
#include "ckptconv/log.h"
#include "ckptconv/metrics.h"
#include "registry_internal.h"

/* ---- tables (lock held) --------------------------------------------------- */

static int compare_id(const char *id, const struct job *j)
{
	return strcmp(id, j->id);
}

/* Position of id in by_id, or where it would go. */
static size_t id_position(const struct registry *r, const char *id, bool *found)
{
	size_t lo = 0, hi = r->njobs;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = compare_id(id, r->by_id[mid]);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

struct job *registry_find_locked(const struct registry *r, const char *id)
{
	bool found;
	size_t pos = id_position(r, id, &found);

	return found ? r->by_id[pos] : NULL;
}

/* Index of the first job with seq >= seq in by_seq. */
static size_t seq_position(struct job *const *jobs, size_t n, uint64_t seq)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (jobs[mid]->seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void registry_array_insert(struct job ***arr, size_t *n, size_t *cap, size_t pos, struct job *j)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*arr = xrealloc(*arr, *cap * sizeof(**arr));
	}
	memmove(*arr + pos + 1, *arr + pos, (*n - pos) * sizeof(**arr));
	(*arr)[pos] = j;
	(*n)++;
}

void registry_array_remove(struct job **arr, size_t *n, size_t pos)
{
	memmove(arr + pos, arr + pos + 1, (*n - pos - 1) * sizeof(*arr));
	(*n)--;
}

/* Adds j (taking the caller's reference) to both tables. */
int registry_table_insert(struct registry *r, struct job *j)
{
	bool found;
	size_t id_pos = id_position(r, j->id, &found);
	size_t seq_pos = seq_position(r->by_seq, r->njobs, j->seq);
	size_t n = r->njobs, cap = r->cap;

	if (found)
		return -1;
	registry_array_insert(&r->by_id, &n, &cap, id_pos, j);
	n = r->njobs;
	registry_array_insert(&r->by_seq, &n, &r->cap, seq_pos, j);
	r->njobs = n;
	r->counts[j->state]++;
	return 0;
}

static void queue_remove(struct registry *r, struct job *j)
{
	size_t i;

	for (i = 0; i < r->nqueue; i++) {
		if (r->queue[i] == j) {
			registry_array_remove(r->queue, &r->nqueue, i);
			return;
		}
	}
}

void registry_queue_add(struct registry *r, struct job *j)
{
	registry_array_insert(&r->queue, &r->nqueue, &r->qcap,
			      seq_position(r->queue, r->nqueue, j->seq), j);
}

/* Removes j from the tables; returns the table's reference. */
struct job *registry_table_remove(struct registry *r, struct job *j)
{
	bool found;
	size_t id_pos = id_position(r, j->id, &found);
	size_t seq_pos = seq_position(r->by_seq, r->njobs, j->seq);
	size_t n = r->njobs;

	if (!found)
		return NULL;
	while (seq_pos < r->njobs && r->by_seq[seq_pos] != j)
		seq_pos++;
	registry_array_remove(r->by_id, &n, id_pos);
	n = r->njobs;
	if (seq_pos < r->njobs)
		registry_array_remove(r->by_seq, &n, seq_pos);
	r->njobs = n;
	queue_remove(r, j);
	r->counts[j->state]--;
	j->deleted = true;
	return j;
}

void registry_set_state(struct registry *r, struct job *j, enum job_state s)
{
	r->counts[j->state]--;
	r->counts[s]++;
	j->state = s;
	j->version++;
}

/* ---- logs and final states ------------------------------------------------ */

static json_t *log_fields(const struct job *j)
{
	return json_pack("{s:s}", "job", j->id);
}

void registry_log_job(enum log_level level, const struct job *j, const char *what,
		      const struct err *e)
{
	json_t *f = log_fields(j);

	if (e && e->code) {
		json_object_set_new(f, "code", json_string(err_name(e->code)));
		json_object_set_new(f, "error", json_string(e->msg));
	}
	json_object_set_new(f, "state", json_string(job_state_name(j->state)));
	log_msg(level, f, "job %s", what);
	json_decref(f);
}

/* Moves j to a final state (lock held); returns its running seconds. */
double registry_finish_locked(struct registry *r, struct job *j, enum job_state state,
			      const struct err *e, json_t *result)
{
	registry_set_state(r, j, state);
	j->finished_ms = job_now_ms();
	if (e && e->code && !j->error.code)
		j->error = *e;
	json_decref(j->result);
	j->result = result;
	r->tensors_converted += j->progress.tensors_done;
	r->bytes_converted += j->progress.bytes_done;
	return j->started_ms ? (double)(j->finished_ms - j->started_ms) / 1000.0 : 0.0;
}

/* What follows a final state: the record, the metrics, the log, and
 * the oldest finished record going if there are now too many. */
void registry_finished(struct registry *r, struct job *j, enum job_state state, double seconds,
		       const struct err *e)
{
	registry_persist(r, j);
	metrics_job_finished(state, seconds, e ? e->code : ERR_NONE);
	registry_log_job(state == JOB_SUCCEEDED ? LOG_INFO : LOG_WARN, j, job_state_name(state), e);
	if (r->opened)
		registry_sweep_retention(r);
}

void registry_finish(struct registry *r, struct job *j, enum job_state state, const struct err *e,
		     json_t *result)
{
	double seconds;

	pthread_mutex_lock(&r->lock);
	seconds = registry_finish_locked(r, j, state, e, result);
	pthread_mutex_unlock(&r->lock);
	registry_finished(r, j, state, seconds, e);
}

void registry_fail(struct registry *r, struct job *j, const struct err *e)
{
	registry_finish(r, j, JOB_FAILED, e, NULL);
}

/* Puts a job stopped by a drain back in the queue for the next start (lock
 * held); it will run from the start. */
void registry_requeue_locked(struct registry *r, struct job *j)
{
	registry_set_state(r, j, JOB_QUEUED);
	j->started_ms = 0;
	j->cancel = JOB_CANCEL_NONE;
	j->progress.tensors_done = j->progress.bytes_done = 0;
	j->progress.elapsed_seconds = 0;
	free(j->tensor_states);
	j->tensor_states = NULL;
	j->ntensor_states = 0;
	registry_queue_add(r, j);
}

void registry_requeue(struct registry *r, struct job *j)
{
	pthread_mutex_lock(&r->lock);
	registry_requeue_locked(r, j);
	pthread_mutex_unlock(&r->lock);
	registry_persist(r, j);
	registry_log_job(LOG_INFO, j, "queued again for the next start", NULL);
}

/* ---- threads ---------------------------------------------------------------- */

int registry_start(struct registry *r, struct err *e)
{
	sigset_t all, old;
	unsigned i;
	int rc = 0;

	r->runners = xcalloc(r->cfg.max_running, sizeof(*r->runners));
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (i = 0; i < r->cfg.max_running; i++) {
		rc = pthread_create(&r->runners[i], NULL, registry_runner_main, r);
		if (rc != 0)
			goto out;
		pthread_setname_np(r->runners[i], "ckptconv-job");
		r->nrunners++;
	}
	for (i = 0; i < SUBMIT_THREADS; i++) {
		rc = pthread_create(&r->submitters[i], NULL, registry_submitter_main, r);
		if (rc != 0)
			goto out;
		pthread_setname_np(r->submitters[i], "ckptconv-submit");
		r->nsubmitters++;
	}
out:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return err_set_errno(e, ERR_INTERNAL_ERROR, rc, "cannot start the job threads");
	return 0;
}

void registry_free(struct registry *r)
{
	unsigned i;
	size_t k;

	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_broadcast(&r->work);
	pthread_cond_broadcast(&r->submitted);
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < r->nrunners; i++)
		pthread_join(r->runners[i], NULL);
	for (i = 0; i < r->nsubmitters; i++)
		pthread_join(r->submitters[i], NULL);
	for (k = 0; k < r->njobs; k++) {
		r->by_seq[k]->deleted = true;
		job_unref(r->by_seq[k]);
	}
	free(r->by_seq);
	free(r->by_id);
	free(r->queue);
	free(r->runners);
	if (r->lock_fd >= 0)
		close(r->lock_fd);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->work);
	pthread_cond_destroy(&r->idle);
	pthread_cond_destroy(&r->submitted);
	free(r->state_dir);
	free(r->jobs_dir);
	free(r);
}

/* ---- reading ---------------------------------------------------------------- */

struct job *registry_get(struct registry *r, const char *id)
{
	struct job *j;

	pthread_mutex_lock(&r->lock);
	j = job_ref(registry_find_locked(r, id));
	pthread_mutex_unlock(&r->lock);
	return j;
}

json_t *registry_job_json(struct registry *r, struct job *j)
{
	json_t *o;

	pthread_mutex_lock(&r->lock);
	o = job_to_json(j);
	pthread_mutex_unlock(&r->lock);
	return o;
}

/* How long the API form of a queued or running job may be served again
 * (its progress moves without a version change); a finished job's form
 * only changes with its version. */
#define API_TEXT_TTL 0.1

char *registry_job_text(struct registry *r, struct job *j, size_t *len)
{
	double now = now_seconds();
	json_t *o;
	char *text, *copy;

	pthread_mutex_lock(&r->lock);
	if (!j->api_text || j->api_text_version != j->version ||
	    (!job_state_finished(j->state) && now - j->api_text_at >= API_TEXT_TTL)) {
		o = job_to_json(j);
		text = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		free(j->api_text);
		j->api_text = NULL;
		if (!text)
			goto out_unlock;
		j->api_text_len = strlen(text);
		j->api_text = xrealloc(text, j->api_text_len + 2);
		j->api_text[j->api_text_len++] = '\n';
		j->api_text[j->api_text_len] = '\0';
		j->api_text_version = j->version;
		j->api_text_at = now;
	}
	copy = xmalloc(j->api_text_len + 1);
	memcpy(copy, j->api_text, j->api_text_len + 1);
	*len = j->api_text_len;
	pthread_mutex_unlock(&r->lock);
	return copy;
out_unlock:
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

json_t *registry_progress_json(struct registry *r, struct job *j)
{
	json_t *o;

	pthread_mutex_lock(&r->lock);
	o = job_progress_json(j);
	pthread_mutex_unlock(&r->lock);
	return o;
}

enum job_state registry_job_state(struct registry *r, struct job *j)
{
	enum job_state s;

	pthread_mutex_lock(&r->lock);
	s = j->state;
	pthread_mutex_unlock(&r->lock);
	return s;
}

static bool labels_match(const struct job *j, const struct registry_filter *f)
{
	size_t i;

	for (i = 0; i < f->nlabels; i++) {
		const char *v =
			json_string_value(json_object_get(j->spec.labels, f->label_keys[i]));

		if (!v || strcmp(v, f->label_values[i]) != 0)
			return false;
	}
	return true;
}

json_t *registry_list(struct registry *r, const struct registry_filter *f)
{
	json_t *jobs = json_array(), *out;
	uint64_t last = 0;
	size_t i, found = 0;
	bool more = false;

	pthread_mutex_lock(&r->lock);
	i = f->before_seq ? seq_position(r->by_seq, r->njobs, f->before_seq) : r->njobs;
	while (i-- > 0) {
		const struct job *j = r->by_seq[i];

		if ((f->state >= 0 && (int)j->state != f->state) || !labels_match(j, f))
			continue;
		if (found == f->limit) {
			more = true;
			break;
		}
		json_array_append_new(jobs, job_to_json(j));
		last = j->seq;
		found++;
	}
	pthread_mutex_unlock(&r->lock);
	out = json_pack("{s:o}", "jobs", jobs);
	if (more) {
		char cursor[32];

		snprintf(cursor, sizeof(cursor), "%" PRIu64, last);
		json_object_set_new(out, "next_cursor", json_string(cursor));
	} else {
		json_object_set_new(out, "next_cursor", json_null());
	}
	return out;
}

/* States of the tensors [from, from + n) into states (lock held). */
static void copy_states(const struct job *j, size_t from, size_t n, uint8_t *states)
{
	size_t i;

	for (i = 0; i < n; i++)
		states[i] = (uint8_t)job_tensor_state(j, from + i);
}

static void append_tensor(struct buf *out, const struct job_tensors *t, size_t i, uint8_t state,
			  bool first)
{
	const char *frag;
	size_t len;

	job_tensors_fragment(t, i, &frag, &len);
	if (!first)
		buf_append(out, ",", 1);
	buf_append(out, frag, len);
	buf_puts(out, tensor_state_name((enum tensor_state)state));
	buf_append(out, "\"}", 2);
}

void registry_tensors(struct registry *r, struct job *j, int state_filter, size_t offset,
		      size_t limit, struct buf *out)
{
	struct job_tensors *t;
	uint8_t *states;
	size_t n, from, count, total = 0, emitted = 0, i;

	pthread_mutex_lock(&r->lock);
	registry_open_tensors(r, j);
	registry_load_states(r, j);
	t = job_tensors_ref(j->tensors);
	n = job_tensors_count(t);
	from = state_filter >= 0 ? 0 : (offset < n ? offset : n);
	count = state_filter >= 0 ? n : (n - from < limit ? n - from : limit);
	states = xmalloc(count ? count : 1);
	copy_states(j, from, count, states);
	pthread_mutex_unlock(&r->lock);

	buf_puts(out, "{\"tensors\":[");
	if (state_filter < 0) {
		for (i = 0; i < count; i++)
			append_tensor(out, t, from + i, states[i], i == 0);
		total = n;
	} else {
		for (i = 0; i < n; i++) {
			if (states[i] != (uint8_t)state_filter)
				continue;
			if (total >= offset && emitted < limit)
				append_tensor(out, t, i, states[i], emitted++ == 0);
			total++;
		}
	}
	buf_printf(out, "],\"total\":%zu,\"offset\":%zu,\"limit\":%zu}", total, offset, limit);
	free(states);
	job_tensors_unref(t);
}

/* ---- changing ---------------------------------------------------------------- */

int registry_delete(struct registry *r, const char *id, enum registry_delete_outcome *outcome,
		    json_t **job_json, struct job_error *je)
{
	struct conversion *prepared = NULL;
	struct job *j, *removed = NULL;
	struct err e = {0};
	double seconds = 0;

	if (job_json)
		*job_json = NULL;
	pthread_mutex_lock(&r->lock);
	j = job_ref(registry_find_locked(r, id));
	if (!j) {
		pthread_mutex_unlock(&r->lock);
		return job_error_set(je, "", ERR_JOB_NOT_FOUND, "no job has the id '%.64s'", id);
	}
	if (j->state == JOB_RUNNING) {
		*outcome = REGISTRY_CANCELLING;
		j->cancel = JOB_CANCEL_USER;
		j->version++;
		if (j->conv)
			conversion_cancel(j->conv);
	} else if (j->state == JOB_QUEUED) {
		*outcome = REGISTRY_CANCELLED;
		queue_remove(r, j);
		prepared = j->prepared; /* its plan goes now, not with the record */
		j->prepared = NULL;
		registry_cancel_error(&e);
		seconds = registry_finish_locked(r, j, JOB_CANCELLED, &e, NULL);
	} else {
		*outcome = REGISTRY_DELETED;
		removed = registry_table_remove(r, j);
	}
	pthread_mutex_unlock(&r->lock);
	conversion_free(prepared);

	if (*outcome == REGISTRY_CANCELLED) {
		registry_finished(r, j, JOB_CANCELLED, seconds, &e);
	} else if (*outcome == REGISTRY_CANCELLING) {
		registry_log_job(LOG_INFO, j, "cancel requested", NULL);
	} else {
		registry_remove_files(r, j);
		registry_log_job(LOG_INFO, j, "record deleted", NULL);
		job_unref(removed);
	}
	if (job_json && *outcome != REGISTRY_DELETED)
		*job_json = registry_job_json(r, j);
	job_unref(j);
	return 0;
}

/* Seconds the running job j has gone without its bytes_done moving, as
 * sampled now and at earlier calls (lock held). */
double registry_watch_progress_locked(struct job *j, double now)
{
	struct exec_progress p;

	job_current_progress(j, &p);
	if (j->watch_started_ms != j->started_ms || p.bytes_done != j->watch_bytes) {
		j->watch_started_ms = j->started_ms;
		j->watch_bytes = p.bytes_done;
		j->watch_since = now;
	}
	return now - j->watch_since;
}

void registry_drain(struct registry *r)
{
	size_t i;

	pthread_mutex_lock(&r->lock);
	r->draining = true;
	for (i = 0; i < r->njobs; i++) {
		struct job *j = r->by_seq[i];

		if (j->state != JOB_RUNNING || j->cancel == JOB_CANCEL_USER)
			continue;
		j->cancel = JOB_CANCEL_DRAIN;
		if (j->conv)
			conversion_cancel(j->conv);
	}
	pthread_cond_broadcast(&r->work);
	pthread_mutex_unlock(&r->lock);
}

bool registry_wait_idle(struct registry *r, double timeout_seconds)
{
	struct timespec deadline;
	bool idle;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)timeout_seconds;
	deadline.tv_nsec += (long)((timeout_seconds - (double)(time_t)timeout_seconds) * 1e9);
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	while (r->running > 0 || r->preparing > 0)
		if (pthread_cond_timedwait(&r->idle, &r->lock, &deadline) == ETIMEDOUT)
			break;
	idle = r->running == 0 && r->preparing == 0;
	pthread_mutex_unlock(&r->lock);
	return idle;
}

bool registry_draining(struct registry *r)
{
	bool d;

	pthread_mutex_lock(&r->lock);
	d = r->draining;
	pthread_mutex_unlock(&r->lock);
	return d;
}

bool registry_ready(struct registry *r, const char **why)
{
	if (registry_draining(r)) {
		if (why)
			*why = "the service is shutting down";
		return false;
	}
	if (!atomic_load(&r->writable)) {
		if (why)
			*why = "the state directory is not writable";
		return false;
	}
	return true;
}

void registry_stats(struct registry *r, struct registry_stats *out)
{
	double now = now_seconds();
	size_t i;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&r->lock);
	memcpy(out->jobs, r->counts, sizeof(out->jobs));
	out->queue_length = r->counts[JOB_QUEUED];
	out->queue_capacity = r->cfg.max_queued;
	out->tensors_converted = r->tensors_converted;
	out->bytes_converted = r->bytes_converted;
	for (i = 0; i < r->njobs; i++) {
		struct job *j = r->by_seq[i];
		struct exec_progress p;
		double stall;

		if (j->state != JOB_RUNNING)
			continue;
		job_current_progress(j, &p);
		out->tensors_converted += p.tensors_done;
		out->bytes_converted += p.bytes_done;
		stall = registry_watch_progress_locked(j, now);
		if (stall > out->longest_stall_seconds)
			out->longest_stall_seconds = stall;
	}
	pthread_mutex_unlock(&r->lock);
}
