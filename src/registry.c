/* SPDX-License-Identifier: MIT */
/*
 * registry: the job table, the FIFO queue and the runner threads, plus the
 * records that make jobs survive a restart.  Jobs are kept in two arrays,
 * by creation order (listing, cursors) and by id (look-ups by binary
 * search); the queue holds queued jobs by creation order, so a job put
 * back by a drain keeps its place.  Every state change is written to the
 * job's record before anyone can act on it elsewhere.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/log.h"
#include "ckptconv/metrics.h"
#include "ckptconv/partition.h"
#include "ckptconv/paths.h"
#include "ckptconv/plan.h"
#include "ckptconv/registry.h"
#include "ckptconv/store.h"

#define PERSIST_INTERVAL 2.0 /* seconds between records of a running job */
#define RETENTION_INTERVAL 60.0 /* seconds between sweeps, at most */
#define SUBMIT_THREADS 2
#define PROBE_INTERVAL 5.0
#define MAX_CRASH_RESTARTS 3
#define RECORD_MAX (1u << 20)

/* A submission waiting for a submission thread. */
struct submission {
	struct job *job; /* not in the table yet */
	registry_submit_fn done;
	void *arg;
	struct submission *next;
};

struct registry {
	struct registry_config cfg;
	char *state_dir, *jobs_dir;
	int lock_fd;

	pthread_mutex_t lock;
	pthread_cond_t work;		       /* a job was queued, or draining/stopping */
	pthread_cond_t idle;		       /* a run or a submission ended */
	pthread_cond_t submitted;	       /* a submission is pending, or stopping */
	struct job **by_seq, **by_id, **queue; /* protected by lock */
	size_t njobs, cap, nqueue, qcap;
	size_t counts[JOB_STATE_COUNT];
	uint64_t next_seq;
	unsigned running; /* jobs in a runner's hands */
	/* Submissions admitted but not yet a job or refused: they hold a
	 * place in the queue (--max-queued), dry runs included. */
	size_t preparing;
	struct submission *pending, *pending_tail; /* for the submission threads */
	bool draining, stopping;
	bool opened; /* records loaded: a job that finishes may prune others */
	uint64_t tensors_converted, bytes_converted; /* of finished runs */

	_Atomic bool writable;
	double last_retention, last_probe; /* main loop only */
	pthread_t *runners;
	unsigned nrunners;
	pthread_t submitters[SUBMIT_THREADS];
	unsigned nsubmitters;
};

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

static struct job *find_locked(const struct registry *r, const char *id)
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

static void array_insert(struct job ***arr, size_t *n, size_t *cap, size_t pos, struct job *j)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*arr = xrealloc(*arr, *cap * sizeof(**arr));
	}
	memmove(*arr + pos + 1, *arr + pos, (*n - pos) * sizeof(**arr));
	(*arr)[pos] = j;
	(*n)++;
}

static void array_remove(struct job **arr, size_t *n, size_t pos)
{
	memmove(arr + pos, arr + pos + 1, (*n - pos - 1) * sizeof(*arr));
	(*n)--;
}

/* Adds j (taking the caller's reference) to both tables. */
static int table_insert(struct registry *r, struct job *j)
{
	bool found;
	size_t id_pos = id_position(r, j->id, &found);
	size_t seq_pos = seq_position(r->by_seq, r->njobs, j->seq);
	size_t n = r->njobs, cap = r->cap;

	if (found)
		return -1;
	array_insert(&r->by_id, &n, &cap, id_pos, j);
	n = r->njobs;
	array_insert(&r->by_seq, &n, &r->cap, seq_pos, j);
	r->njobs = n;
	r->counts[j->state]++;
	return 0;
}

static void queue_remove(struct registry *r, struct job *j)
{
	size_t i;

	for (i = 0; i < r->nqueue; i++) {
		if (r->queue[i] == j) {
			array_remove(r->queue, &r->nqueue, i);
			return;
		}
	}
}

static void queue_add(struct registry *r, struct job *j)
{
	array_insert(&r->queue, &r->nqueue, &r->qcap, seq_position(r->queue, r->nqueue, j->seq), j);
}

/* Removes j from the tables; returns the table's reference. */
static struct job *table_remove(struct registry *r, struct job *j)
{
	bool found;
	size_t id_pos = id_position(r, j->id, &found);
	size_t seq_pos = seq_position(r->by_seq, r->njobs, j->seq);
	size_t n = r->njobs;

	if (!found)
		return NULL;
	while (seq_pos < r->njobs && r->by_seq[seq_pos] != j)
		seq_pos++;
	array_remove(r->by_id, &n, id_pos);
	n = r->njobs;
	if (seq_pos < r->njobs)
		array_remove(r->by_seq, &n, seq_pos);
	r->njobs = n;
	queue_remove(r, j);
	r->counts[j->state]--;
	j->deleted = true;
	return j;
}

static void set_state(struct registry *r, struct job *j, enum job_state s)
{
	r->counts[j->state]--;
	r->counts[s]++;
	j->state = s;
	j->version++;
}

/* ---- files ---------------------------------------------------------------- */

static char *job_file(const struct registry *r, const struct job *j, const char *suffix)
{
	char *path;

	if (asprintf(&path, "%s/%s%s", r->jobs_dir, j->id, suffix) < 0)
		abort();
	return path;
}

static json_t *log_fields(const struct job *j)
{
	return json_pack("{s:s}", "job", j->id);
}

static void log_job(enum log_level level, const struct job *j, const char *what,
		    const struct err *e)
{
	json_t *f = log_fields(j);

	if (e && e->code) {
		json_object_set_new(f, "code", json_string(e->code));
		json_object_set_new(f, "error", json_string(e->msg));
	}
	json_object_set_new(f, "state", json_string(job_state_name(j->state)));
	log_msg(level, f, "job %s", what);
	json_decref(f);
}

/* Writes j's record; false (and the service marked not ready) on failure. */
static bool persist(struct registry *r, struct job *j)
{
	struct err e = {0};
	char name[JOB_ID_LEN + 8];
	json_t *rec;
	char *text;
	bool ok = true;

	pthread_mutex_lock(&j->write_lock);
	pthread_mutex_lock(&r->lock);
	if (j->deleted) {
		pthread_mutex_unlock(&r->lock);
		goto out;
	}
	rec = job_record_json(j);
	j->persisted_at = now_seconds();
	pthread_mutex_unlock(&r->lock);
	text = json_dumps(rec, JSON_COMPACT);
	json_decref(rec);
	snprintf(name, sizeof(name), "%s.json", j->id);
	if (!text || job_write_atomic(r->jobs_dir, name, text, strlen(text), true, &e) < 0) {
		atomic_store(&r->writable, false);
		log_job(LOG_ERROR, j, "record not written", &e);
		ok = false;
	}
	free(text);
out:
	pthread_mutex_unlock(&j->write_lock);
	return ok;
}

static void remove_files(struct registry *r, struct job *j)
{
	static const char *const suffixes[] = {".json", ".tensors", ".states"};
	size_t i;

	pthread_mutex_lock(&j->write_lock);
	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *path = job_file(r, j, suffixes[i]);

		if (unlink(path) != 0 && errno != ENOENT)
			log_job(LOG_WARN, j, "file not removed", NULL);
		free(path);
	}
	pthread_mutex_unlock(&j->write_lock);
}

static void write_states(struct registry *r, struct job *j, const uint8_t *states, size_t n)
{
	struct err e = {0};
	char name[JOB_ID_LEN + 8];

	snprintf(name, sizeof(name), "%s.states", j->id);
	if (job_write_atomic(r->jobs_dir, name, (const char *)states, n, true, &e) < 0)
		log_job(LOG_WARN, j, "tensor states not written", &e);
}

/* Loads a finished job's final tensor states (lock held). */
static void load_states(struct registry *r, struct job *j)
{
	char *path;
	FILE *f;
	size_t n = job_tensors_count(j->tensors);

	if (j->tensor_states || !n || (j->state != JOB_FAILED && j->state != JOB_CANCELLED))
		return;
	path = job_file(r, j, ".states");
	f = fopen(path, "rb");
	if (f) {
		uint8_t *states = xcalloc(n, 1);

		if (fread(states, 1, n, f) == n) {
			j->tensor_states = states;
			j->ntensor_states = n;
		} else {
			free(states);
		}
		fclose(f);
	}
	free(path);
}

/* Opens the job's tensor listing if it is not open yet (lock held). */
static void open_tensors(struct registry *r, struct job *j)
{
	struct err e = {0};
	char *path;

	if (j->tensors)
		return;
	path = job_file(r, j, ".tensors");
	if (job_tensors_open(path, &j->tensors, &e) < 0 && e.errnum != ENOENT)
		log_job(LOG_WARN, j, "tensor listing unreadable", &e);
	free(path);
}

/* Writes the listing of `plan` for j and makes it the job's. */
static int install_tensors(struct registry *r, struct job *j, const struct plan *plan, bool durable,
			   struct err *e)
{
	struct job_tensors *t = NULL, *old;
	char *path = job_file(r, j, ".tensors");
	int rc = -1;

	if (job_tensors_write(plan, path, durable, e) < 0 || job_tensors_open(path, &t, e) < 0)
		goto out;
	pthread_mutex_lock(&r->lock);
	old = j->tensors;
	j->tensors = t;
	free(j->tensor_states);
	j->tensor_states = NULL;
	j->ntensor_states = 0;
	partition_totals(plan, j->spec.convert.partition_index, j->spec.convert.partition_count,
			 &j->progress.tensors_total, &j->progress.bytes_total);
	j->version++;
	pthread_mutex_unlock(&r->lock);
	job_tensors_unref(old);
	rc = 0;
out:
	free(path);
	return rc;
}

/* ---- results -------------------------------------------------------------- */

static json_t *result_json(const struct plan *plan, const struct strvec *warnings)
{
	json_t *files = json_array(), *warn = json_array();
	size_t i;

	for (i = 0; i < plan->nfiles; i++)
		json_array_append_new(files, json_string(plan->files[i].name));
	if (plan->index_json)
		json_array_append_new(files, json_string("model.safetensors.index.json"));
	for (i = 0; i < plan->copy_files.len; i++)
		json_array_append_new(files, json_string(plan->copy_files.items[i]));
	for (i = 0; warnings && i < warnings->len; i++)
		json_array_append_new(warn, json_string(warnings->items[i]));
	return json_pack("{s:o, s:I, s:I, s:o}", "files", files, "tensors",
			 (json_int_t)plan->ntensors, "bytes", (json_int_t)plan->total_file_bytes,
			 "warnings", warn);
}

/* The result of a conversion: a partition's says what it wrote. */
static json_t *conversion_result_json(const struct convert_options *o, const struct plan *plan,
				      const struct strvec *warnings)
{
	json_t *result, *warn;
	size_t i;

	if (!o->partition_count)
		return result_json(plan, warnings);
	result = partition_result_json(plan, o->partition_index, o->partition_count, 0);
	warn = json_array();
	for (i = 0; warnings && i < warnings->len; i++)
		json_array_append_new(warn, json_string(warnings->items[i]));
	json_object_set_new(result, "warnings", warn);
	return result;
}

static json_t *finalize_result_json(const struct finalize_result *fr)
{
	json_t *files = json_array(), *warn = json_array();
	size_t i;

	for (i = 0; i < fr->files.len; i++)
		json_array_append_new(files, json_string(fr->files.items[i]));
	for (i = 0; i < fr->warnings.len; i++)
		json_array_append_new(warn, json_string(fr->warnings.items[i]));
	return json_pack("{s:o, s:I, s:I, s:o, s:{s:s?, s:b}}", "files", files, "tensors",
			 (json_int_t)fr->tensors, "bytes", (json_int_t)fr->bytes, "warnings", warn,
			 "finalize", "source", fr->source, "already_finished",
			 fr->already_finished);
}

/* Moves j to a final state (lock held); returns its running seconds. */
static double finish_locked(struct registry *r, struct job *j, enum job_state state,
			    const struct err *e, json_t *result)
{
	set_state(r, j, state);
	j->finished_ms = job_now_ms();
	if (e && e->code && !j->error.code)
		j->error = *e;
	json_decref(j->result);
	j->result = result;
	r->tensors_converted += j->progress.tensors_done;
	r->bytes_converted += j->progress.bytes_done;
	return j->started_ms ? (double)(j->finished_ms - j->started_ms) / 1000.0 : 0.0;
}

static void sweep_retention(struct registry *r);

/* What follows a final state: the record, the metrics, the log, and
 * the oldest finished record going if there are now too many. */
static void finished(struct registry *r, struct job *j, enum job_state state, double seconds,
		     const struct err *e)
{
	persist(r, j);
	metrics_job_finished(state, seconds, e ? e->code : NULL);
	log_job(state == JOB_SUCCEEDED ? LOG_INFO : LOG_WARN, j, job_state_name(state), e);
	if (r->opened)
		sweep_retention(r);
}

static void finish(struct registry *r, struct job *j, enum job_state state, const struct err *e,
		   json_t *result)
{
	double seconds;

	pthread_mutex_lock(&r->lock);
	seconds = finish_locked(r, j, state, e, result);
	pthread_mutex_unlock(&r->lock);
	finished(r, j, state, seconds, e);
}

static void fail(struct registry *r, struct job *j, const struct err *e)
{
	finish(r, j, JOB_FAILED, e, NULL);
}

/* Puts a job stopped by a drain back in the queue for the next start (lock
 * held); it will run from the start. */
static void requeue_locked(struct registry *r, struct job *j)
{
	set_state(r, j, JOB_QUEUED);
	j->started_ms = 0;
	j->cancel = JOB_CANCEL_NONE;
	j->progress.tensors_done = j->progress.bytes_done = 0;
	j->progress.elapsed_seconds = 0;
	free(j->tensor_states);
	j->tensor_states = NULL;
	j->ntensor_states = 0;
	queue_add(r, j);
}

static void requeue(struct registry *r, struct job *j)
{
	pthread_mutex_lock(&r->lock);
	requeue_locked(r, j);
	pthread_mutex_unlock(&r->lock);
	persist(r, j);
	log_job(LOG_INFO, j, "queued again for the next start", NULL);
}

/* ---- running -------------------------------------------------------------- */

/* Applies the job's options.s3 to the stores this thread opens next. */
static int s3_enter(const struct registry *r, const struct job *j, struct err *e)
{
	const struct job_policy *p = r->cfg.policy;

	if (!p || !p->s3_options_apply)
		return 0;
	return p->s3_options_apply(json_object_get(j->spec.options, "s3"), e);
}

/* Notes where the credentials came from of a job that reaches the object
 * store (the service's provider has given some by the time its stores are
 * open). */
static void note_credentials(struct registry *r, struct job *j, const char *src, const char *dst)
{
	const struct job_policy *p = r->cfg.policy;
	const char *source;

	if (!p || !p->s3_credentials_source || !((src && store_is_remote(src)) || store_is_remote(dst)))
		return;
	source = p->s3_credentials_source();
	if (!source)
		return;
	pthread_mutex_lock(&r->lock);
	if (strcmp(j->credentials_source, source) != 0) {
		snprintf(j->credentials_source, sizeof(j->credentials_source), "%s", source);
		j->version++;
	}
	pthread_mutex_unlock(&r->lock);
}

static void s3_leave(const struct registry *r)
{
	const struct job_policy *p = r->cfg.policy;

	if (p && p->s3_options_apply)
		p->s3_options_apply(NULL, NULL);
}

/* Whether a destination may be claimed by the job: replacing it was asked
 * for, or it holds nothing (but unfinished output of the local store). */
static bool destination_claimable(const char *dst, bool overwrite)
{
	struct store *s = NULL;
	struct store_entry *entries = NULL;
	struct err e = {0};
	size_t n = 0, i;
	bool empty = true;

	if (overwrite)
		return true;
	if (store_open(dst, &s, &e) < 0)
		return false;
	if (store_list(s, &entries, &n, &e) < 0) {
		empty = strcmp(e.code, "source_not_found") == 0;
		goto out;
	}
	for (i = 0; i < n; i++)
		if (!store_is_temporary(entries[i].name))
			empty = false;
	store_entries_free(entries, n);
out:
	store_free(s);
	return empty;
}

static void claim(struct registry *r, struct job *j, const char *dst, bool overwrite)
{
	if (j->claimed || !destination_claimable(dst, overwrite))
		return;
	pthread_mutex_lock(&r->lock);
	j->claimed = true;
	pthread_mutex_unlock(&r->lock);
	persist(r, j);
}

/* Re-checks the job's locations against the current policy: paths may have
 * changed since it was submitted. */
static int recheck(struct registry *r, struct job *j, char **src, char **dst, struct err *e)
{
	struct job_error je = {0};

	if (job_spec_check(&j->spec, r->cfg.policy, src, dst, &je) < 0) {
		*e = je.err;
		return -1;
	}
	if (j->claimed && j->resolved_destination && strcmp(*dst, j->resolved_destination) != 0)
		return err_set(e, "forbidden_path",
			       "%s now resolves to %s, not %s as when the job started",
			       j->spec.destination, *dst, j->resolved_destination);
	pthread_mutex_lock(&r->lock);
	free(j->resolved_source);
	free(j->resolved_destination);
	j->resolved_source = *src ? xstrdup(*src) : NULL;
	j->resolved_destination = xstrdup(*dst);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* Publishes conv as the job's running conversion unless a cancel came
 * first; returns the cancel reason then. */
static enum job_cancel publish_conversion(struct registry *r, struct job *j,
					  struct conversion *conv)
{
	enum job_cancel cancel;

	pthread_mutex_lock(&r->lock);
	cancel = j->cancel;
	if (cancel == JOB_CANCEL_NONE)
		j->conv = conv;
	pthread_mutex_unlock(&r->lock);
	return cancel;
}

/* Copies the running conversion's tensor states into the job, which keeps
 * them once the conversion is gone (lock held); returns a copy for the
 * states file. */
static uint8_t *keep_tensor_states(struct job *j, size_t *n)
{
	const struct plan *plan = conversion_plan(j->conv);
	uint8_t *copy;
	size_t i;

	*n = plan ? plan->ntensors : 0;
	free(j->tensor_states);
	j->tensor_states = xcalloc(*n ? *n : 1, 1);
	j->ntensor_states = *n;
	for (i = 0; i < *n; i++)
		j->tensor_states[i] = (uint8_t)conversion_tensor_state(j->conv, i);
	copy = xmalloc(*n ? *n : 1);
	memcpy(copy, j->tensor_states, *n);
	return copy;
}

static void cancel_error(struct err *e)
{
	err_set(e, "cancelled", "the job was cancelled by a DELETE request");
}

static void cancelled_by_request(struct registry *r, struct job *j)
{
	struct err e = {0};

	cancel_error(&e);
	finish(r, j, JOB_CANCELLED, &e, NULL);
}

/* After the run: succeeded, cancelled, queued again (drain) or failed.  The
 * conversion leaves the job in the same step as its state changes, so a
 * reader never sees a finished run without its outcome. */
static void settle(struct registry *r, struct job *j, struct conversion *conv, int rc,
		   const struct err *run_error)
{
	json_t *result = rc == 0 ? conversion_result_json(&j->spec.convert, conversion_plan(conv),
							  conversion_warnings(conv)) :
				   NULL;
	bool was_cancelled = rc < 0 && run_error->code && strcmp(run_error->code, "cancelled") == 0;
	enum job_state outcome = JOB_SUCCEEDED;
	struct err e = {0};
	uint8_t *states = NULL;
	size_t nstates = 0;
	double seconds = 0;
	bool requeued = false;

	if (rc < 0 && run_error->code)
		e = *run_error;
	else if (rc < 0)
		err_set(&e, "internal_error", "the conversion failed without saying why");
	pthread_mutex_lock(&r->lock);
	job_current_progress(j, &j->progress);
	if (rc == 0) {
		j->conv = NULL;
		seconds = finish_locked(r, j, JOB_SUCCEEDED, NULL, result);
	} else if (was_cancelled && j->cancel == JOB_CANCEL_DRAIN) {
		j->conv = NULL;
		requeue_locked(r, j);
		requeued = true;
	} else {
		states = keep_tensor_states(j, &nstates);
		j->conv = NULL;
		outcome = JOB_FAILED;
		if (was_cancelled && j->cancel == JOB_CANCEL_USER) {
			outcome = JOB_CANCELLED;
			err_clear(&e);
			cancel_error(&e);
		}
		seconds = finish_locked(r, j, outcome, &e, NULL);
	}
	pthread_mutex_unlock(&r->lock);
	if (states)
		write_states(r, j, states, nstates);
	free(states);
	if (requeued) {
		persist(r, j);
		log_job(LOG_INFO, j, "queued again for the next start", NULL);
	} else {
		finished(r, j, outcome, seconds, &e);
	}
}

/* A finalize job: the manifest's source must be one the policy allows. */
static void run_finalize(struct registry *r, struct job *j, const char *dst)
{
	struct finalize_options fo;
	struct finalize_result fr = {0};
	struct err e = {0};

	finalize_options_init(&fo);
	if (r->cfg.policy) {
		fo.check_source = job_policy_check_source;
		fo.check_source_arg = (void *)r->cfg.policy;
	}
	if (s3_enter(r, j, &e) < 0 || partition_finalize(dst, &fo, &fr, &e) < 0) {
		fail(r, j, &e);
		goto out;
	}
	note_credentials(r, j, fr.source, dst);
	pthread_mutex_lock(&r->lock);
	j->progress.tensors_total = j->progress.tensors_done = fr.tensors;
	j->progress.bytes_total = j->progress.bytes_done = fr.bytes;
	pthread_mutex_unlock(&r->lock);
	finish(r, j, JOB_SUCCEEDED, NULL, finalize_result_json(&fr));
out:
	finalize_result_fini(&fr);
}

static void run_job(struct registry *r, struct job *j)
{
	struct conversion *conv = NULL;
	struct convert_options o;
	struct err e = {0};
	char *src = NULL, *dst = NULL;
	enum job_cancel cancel;
	int rc;

	persist(r, j);
	log_job(LOG_INFO, j, "started", NULL);
	if (recheck(r, j, &src, &dst, &e) < 0) {
		fail(r, j, &e);
		goto out;
	}
	if (j->spec.finalize) {
		run_finalize(r, j, dst);
		goto out;
	}
	o = j->spec.convert;
	if (j->claimed)
		o.overwrite = true;
	if (s3_enter(r, j, &e) < 0 || conversion_prepare(src, dst, &o, &conv, &e) < 0 ||
	    install_tensors(r, j, conversion_plan(conv), true, &e) < 0) {
		fail(r, j, &e);
		goto out;
	}
	note_credentials(r, j, src, dst);
	claim(r, j, dst, o.overwrite);
	cancel = publish_conversion(r, j, conv);
	if (cancel == JOB_CANCEL_DRAIN) {
		requeue(r, j);
		goto out;
	}
	if (cancel == JOB_CANCEL_USER) {
		cancelled_by_request(r, j);
		goto out;
	}
	rc = conversion_run(conv, r->cfg.pool, &e);
	settle(r, j, conv, rc, &e);
out:
	conversion_free(conv);
	s3_leave(r);
	free(src);
	free(dst);
}

/* The oldest queued job, now running (lock held); NULL when stopping. */
static struct job *next_job(struct registry *r)
{
	struct job *j;

	while (!r->stopping && (r->draining || r->nqueue == 0))
		pthread_cond_wait(&r->work, &r->lock);
	if (r->stopping)
		return NULL;
	j = r->queue[0];
	array_remove(r->queue, &r->nqueue, 0);
	set_state(r, j, JOB_RUNNING);
	j->started_ms = job_now_ms();
	j->finished_ms = 0;
	j->cancel = JOB_CANCEL_NONE;
	r->running++;
	return job_ref(j);
}

static void *runner_main(void *arg)
{
	struct registry *r = arg;
	struct job *j;

	pthread_mutex_lock(&r->lock);
	while ((j = next_job(r))) {
		pthread_mutex_unlock(&r->lock);
		run_job(r, j);
		job_unref(j);
		pthread_mutex_lock(&r->lock);
		r->running--;
		pthread_cond_broadcast(&r->idle);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static void *submitter_main(void *arg);

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
		rc = pthread_create(&r->runners[i], NULL, runner_main, r);
		if (rc != 0)
			goto out;
		pthread_setname_np(r->runners[i], "ckptconv-job");
		r->nrunners++;
	}
	for (i = 0; i < SUBMIT_THREADS; i++) {
		rc = pthread_create(&r->submitters[i], NULL, submitter_main, r);
		if (rc != 0)
			goto out;
		pthread_setname_np(r->submitters[i], "ckptconv-submit");
		r->nsubmitters++;
	}
out:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return err_set_errno(e, "internal_error", rc, "cannot start the job threads");
	return 0;
}

/* ---- opening ------------------------------------------------------------- */

static bool has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);

	return n > m && strcmp(name + n - m, suffix) == 0;
}

static bool id_named(const char *name, const char *suffix)
{
	size_t i;

	if (strlen(name) != JOB_ID_LEN + strlen(suffix) || !has_suffix(name, suffix))
		return false;
	for (i = 0; i < JOB_ID_LEN; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	return true;
}

static void set_aside(const char *dir, const char *name, const struct err *e)
{
	char from[PATH_MAX], to[PATH_MAX];
	json_t *f = json_pack("{s:s, s:s}", "file", name, "error", e->msg);

	snprintf(from, sizeof(from), "%s/%s", dir, name);
	snprintf(to, sizeof(to), "%s/%s.corrupt", dir, name);
	log_msg(LOG_WARN, f, "unreadable job record set aside");
	json_decref(f);
	rename(from, to);
}

static int load_record(struct registry *r, const char *name, struct err *e)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *rec;
	struct job *j = NULL;
	int rc = -1;

	snprintf(path, sizeof(path), "%s/%s", r->jobs_dir, name);
	rec = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!rec) {
		err_set(e, "io_error", "%s: %s", name, jerr.text);
		return -1;
	}
	if (job_from_record(rec, &j, e) < 0)
		goto out;
	if (strncmp(name, j->id, JOB_ID_LEN) != 0) {
		err_set(e, "io_error", "%s holds job %s", name, j->id);
		goto out;
	}
	if (table_insert(r, j) < 0) {
		err_set(e, "io_error", "%s: job %s is listed twice", name, j->id);
		goto out;
	}
	if (j->seq >= r->next_seq)
		r->next_seq = j->seq + 1;
	j = NULL;
	rc = 0;
out:
	job_unref(j);
	json_decref(rec);
	return rc;
}

static void remove_stale(struct registry *r, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", r->jobs_dir, name);
	unlink(path);
}

static int load_records(struct registry *r, struct err *e)
{
	struct dirent *d;
	DIR *dir = opendir(r->jobs_dir);

	if (!dir)
		return err_set_errno(e, "io_error", errno, "%s", r->jobs_dir);
	while ((d = readdir(dir))) {
		struct err le = {0};

		if (d->d_name[0] == '.' && has_suffix(d->d_name, ".tmp"))
			remove_stale(r, d->d_name);
		else if (id_named(d->d_name, ".json") && load_record(r, d->d_name, &le) < 0)
			set_aside(r->jobs_dir, d->d_name, &le);
	}
	rewinddir(dir);
	while ((d = readdir(dir))) {
		if ((id_named(d->d_name, ".tensors") || id_named(d->d_name, ".states"))) {
			char id[JOB_ID_LEN + 1];

			memcpy(id, d->d_name, JOB_ID_LEN);
			id[JOB_ID_LEN] = '\0';
			if (!find_locked(r, id))
				remove_stale(r, d->d_name);
		}
	}
	closedir(dir);
	return 0;
}

/* A job the service stopped under once too often: what its last run left
 * in the destination goes as a failed run's would, if the job had claimed
 * the destination and it still resolves as it did then.  A finalize job's
 * destination holds the partitions' output and stays as it is. */
static void clean_interrupted(struct registry *r, struct job *j)
{
	struct conversion *conv = NULL;
	struct err e = {0};
	char *src = NULL, *dst = NULL;

	if (!j->claimed || j->spec.finalize)
		return;
	if (recheck(r, j, &src, &dst, &e) < 0 || s3_enter(r, j, &e) < 0 ||
	    conversion_prepare(src, dst, &j->spec.convert, &conv, &e) < 0 ||
	    conversion_clean_destination(conv, &e) < 0)
		log_job(LOG_WARN, j, "output of the interrupted run not removed", &e);
	else
		log_job(LOG_INFO, j, "output of the interrupted run removed", NULL);
	conversion_free(conv);
	s3_leave(r);
	free(src);
	free(dst);
}

/* Jobs whose record says running were cut short: queue them again (or
 * give up after MAX_CRASH_RESTARTS, removing their partial output). */
static void recover(struct registry *r)
{
	size_t i;

	for (i = 0; i < r->njobs; i++) {
		struct job *j = r->by_seq[i];

		if (j->state == JOB_RUNNING) {
			j->restarts++;
			j->progress.tensors_done = j->progress.bytes_done = 0;
			j->progress.elapsed_seconds = 0;
			if (j->restarts > MAX_CRASH_RESTARTS) {
				struct err e = {0};

				err_set(&e, "interrupted",
					"the service stopped %u times while the job was running; it is not retried again",
					j->restarts);
				finish(r, j, JOB_FAILED, &e, NULL);
				clean_interrupted(r, j);
				continue;
			}
			set_state(r, j, JOB_QUEUED);
			j->started_ms = 0;
			persist(r, j);
			log_job(LOG_WARN, j,
				"was running when the service stopped; queued to run again", NULL);
		}
		if (j->state == JOB_QUEUED)
			queue_add(r, j);
	}
}

static int lock_state_dir(struct registry *r, struct err *e)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/lock", r->state_dir);
	r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (r->lock_fd < 0)
		return err_set_errno(e, "io_error", errno, "%s", path);
	if (flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0)
		return err_set(e, "io_error",
			       "%s: another ckptconv serve uses this state directory",
			       r->state_dir);
	return 0;
}

static int make_dir(const char *path, struct err *e)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return err_set_errno(e, "io_error", errno, "cannot create %s", path);
	return 0;
}

int registry_open(const struct registry_config *c, struct registry **out, struct err *e)
{
	struct registry *r = xcalloc(1, sizeof(*r));
	int rc = -1;

	*out = NULL;
	r->cfg = *c;
	r->lock_fd = -1;
	r->next_seq = 1;
	r->state_dir = xstrdup(c->state_dir);
	if (asprintf(&r->jobs_dir, "%s/jobs", c->state_dir) < 0)
		abort();
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->work, NULL);
	pthread_cond_init(&r->idle, NULL);
	pthread_cond_init(&r->submitted, NULL);
	atomic_init(&r->writable, true);
	if (make_dir(r->state_dir, e) < 0 || lock_state_dir(r, e) < 0 ||
	    make_dir(r->jobs_dir, e) < 0 || load_records(r, e) < 0)
		goto out;
	recover(r);
	sweep_retention(r);
	r->opened = true;
	*out = r;
	r = NULL;
	rc = 0;
out:
	registry_free(r);
	return rc;
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

/* ---- submitting ------------------------------------------------------------ */

static void log_submitted(const struct job *j)
{
	json_t *f = json_pack("{s:s, s:s, s:s?, s:s, s:s}", "job", j->id, "state",
			      job_state_name(j->state), "source", j->spec.source, "destination",
			      j->spec.destination, "to", layout_name(j->spec.to));

	log_msg(LOG_INFO, f, "job submitted");
	json_decref(f);
}

static struct job *find_by_key(const struct registry *r, const char *key)
{
	size_t i;

	for (i = 0; key && i < r->njobs; i++)
		if (r->by_seq[i]->idempotency_key &&
		    strcmp(r->by_seq[i]->idempotency_key, key) == 0)
			return r->by_seq[i];
	return NULL;
}

/* Partitions of one conversion share their destination: the same count,
 * another index. */
static bool partition_siblings(const struct job_spec *spec, const char *dst, const struct job *j)
{
	return spec->convert.partition_count &&
	       j->spec.convert.partition_count == spec->convert.partition_count &&
	       j->spec.convert.partition_index != spec->convert.partition_index &&
	       j->resolved_destination && strcmp(j->resolved_destination, dst) == 0;
}

static bool same_kind_overlap(const char *a, const char *b)
{
	return a && b && store_is_remote(a) == store_is_remote(b) && paths_overlap(a, b);
}

/* An active job whose locations overlap the new job's (lock held): its
 * source must not overlap their destinations (it would read unfinished
 * output), nor, unless it is a dry run, its destination their sources or
 * destinations (partitions of one conversion share theirs). */
static int check_overlaps(const struct registry *r, const struct job_spec *spec, const char *src,
			  const char *dst, struct job_error *je)
{
	size_t i;

	for (i = 0; i < r->njobs; i++) {
		const struct job *j = r->by_seq[i];

		if (j->state != JOB_QUEUED && j->state != JOB_RUNNING)
			continue;
		if (same_kind_overlap(src, j->resolved_destination))
			return job_error_set(je, "source", "destination_in_use",
					     "%s overlaps the destination of %s job %s", src,
					     job_state_name(j->state), j->id);
		if (spec->dry_run)
			continue;
		if (!partition_siblings(spec, dst, j) &&
		    same_kind_overlap(dst, j->resolved_destination))
			return job_error_set(je, "destination", "destination_in_use",
					     "%s overlaps the destination of %s job %s", dst,
					     job_state_name(j->state), j->id);
		if (same_kind_overlap(dst, j->resolved_source))
			return job_error_set(je, "destination", "destination_in_use",
					     "%s overlaps the source of %s job %s", dst,
					     job_state_name(j->state), j->id);
	}
	return 0;
}

/* The checks of a submission that need the lock; *existing receives the job
 * of a repeated idempotency key. */
static int admit(struct registry *r, const struct job_spec *spec, const char *src, const char *dst,
		 const char *key, const char *sha, struct job **existing, struct job_error *je)
{
	struct job *prior;

	*existing = NULL;
	if (r->draining)
		return job_error_set(je, "", "draining",
				     "the service is shutting down and accepts no new jobs");
	prior = find_by_key(r, key);
	if (prior && strcmp(prior->request_sha256, sha) == 0) {
		*existing = job_ref(prior);
		return 0;
	}
	if (prior)
		return job_error_set(je, "", "idempotency_conflict",
				     "Idempotency-Key was used for job %s with a different body",
				     prior->id);
	/* Submissions still being prepared hold their place, and dry runs
	 * count like any job: each costs a plan and a record. */
	if (r->counts[JOB_QUEUED] + r->preparing >= r->cfg.max_queued)
		return job_error_set(je, "", "queue_full",
				     "%zu jobs are queued or being prepared (the limit is %u)",
				     r->counts[JOB_QUEUED] + r->preparing, r->cfg.max_queued);
	return check_overlaps(r, spec, src, dst, je);
}

/* Field of a request an engine error is about. */
static const char *engine_error_field(const char *code)
{
	if (strcmp(code, "invalid_exclude") == 0)
		return "options.exclude";
	if (strcmp(code, "invalid_size") == 0)
		return "options.max_shard_size";
	if (strcmp(code, "already_in_layout") == 0)
		return "to";
	/* a file of the source leads outside the allowed roots */
	if (err_http_status(code) == 422 || strcmp(code, "forbidden_path") == 0)
		return "source";
	return "";
}

/* conversion_prepare of the request: the source is read and planned. */
static int check_source(struct registry *r, struct job *j, struct job_error *je)
{
	struct conversion *conv = NULL;
	struct err e = {0};
	int rc = -1;

	if (j->spec.finalize)
		return 0; /* the manifest names the source when the job runs */
	if (s3_enter(r, j, &e) < 0) {
		job_error_set(je, "options.s3", e.code, "%s", e.msg);
		goto out;
	}
	if (conversion_prepare(j->resolved_source, j->resolved_destination, &j->spec.convert, &conv,
			       &e) < 0) {
		job_error_set(je, engine_error_field(e.code), e.code, "%s", e.msg);
		goto out;
	}
	if (install_tensors(r, j, conversion_plan(conv), false, &e) < 0) {
		job_error_set(je, "", e.code, "%s", e.msg);
		goto out;
	}
	note_credentials(r, j, j->resolved_source, j->resolved_destination);
	if (j->spec.dry_run) {
		const struct plan *plan = conversion_plan(conv);

		j->state = JOB_SUCCEEDED;
		j->started_ms = j->finished_ms = job_now_ms();
		j->result = conversion_result_json(&j->spec.convert, plan, &plan->warnings);
	}
	rc = 0;
out:
	conversion_free(conv);
	s3_leave(r);
	return rc;
}

static void discard(struct registry *r, struct job *j)
{
	remove_files(r, j);
	job_unref(j);
}

/* A job made of a validated request (taking spec's contents), not yet in
 * the table. */
static struct job *submission_job(struct job_spec *spec, const char *resolved_source,
				  const char *resolved_destination, const char *idempotency_key,
				  const char *request_sha256)
{
	struct job *j = job_new(spec, 0);

	j->resolved_source = resolved_source ? xstrdup(resolved_source) : NULL;
	j->resolved_destination = xstrdup(resolved_destination);
	j->idempotency_key = idempotency_key ? xstrdup(idempotency_key) : NULL;
	snprintf(j->request_sha256, sizeof(j->request_sha256), "%s", request_sha256);
	return j;
}

/* The checks of admit before the source is read; on success the
 * submission holds a place in the queue until submit_reserved. */
static int reserve(struct registry *r, struct job *j, struct job **prior, struct job_error *je)
{
	int rc;

	pthread_mutex_lock(&r->lock);
	rc = admit(r, &j->spec, j->resolved_source, j->resolved_destination, j->idempotency_key,
		   j->request_sha256, prior, je);
	if (rc == 0 && !*prior)
		r->preparing++;
	pthread_mutex_unlock(&r->lock);
	return rc;
}

/* Gives back the place a submission held (lock held). */
static void release(struct registry *r)
{
	if (--r->preparing == 0)
		pthread_cond_broadcast(&r->idle);
}

/* The rest of a submission that holds a place: reads and plans the source
 * (the exclude pattern is compiled and matched here), admits again (the
 * table may have changed meanwhile), and records and queues the job.
 * Takes j over. */
static int submit_reserved(struct registry *r, struct job *j, struct job **out, bool *existing,
			   struct job_error *je)
{
	struct job *prior = NULL;
	int rc = 0;

	*out = NULL;
	*existing = false;
	if (registry_draining(r))
		rc = job_error_set(je, "", "draining",
				   "the service is shutting down and accepts no new jobs");
	else
		rc = check_source(r, j, je);
	pthread_mutex_lock(&r->lock);
	release(r);
	if (rc == 0)
		rc = admit(r, &j->spec, j->resolved_source, j->resolved_destination,
			   j->idempotency_key, j->request_sha256, &prior, je);
	if (rc == 0 && !prior) {
		j->seq = r->next_seq++;
		if (table_insert(r, job_ref(j)) < 0) {
			job_unref(j);
			rc = job_error_set(je, "", "internal_error", "job id %s is taken", j->id);
		}
	}
	pthread_mutex_unlock(&r->lock);
	if (rc < 0 || prior) {
		discard(r, j);
		if (!prior)
			return -1;
		*out = prior;
		*existing = true;
		return 0;
	}
	if (!persist(r, j)) {
		pthread_mutex_lock(&r->lock);
		job_unref(table_remove(r, j));
		pthread_mutex_unlock(&r->lock);
		discard(r, j);
		return job_error_set(je, "", "io_error", "the job record could not be written");
	}
	log_submitted(j);
	pthread_mutex_lock(&r->lock);
	if (j->state == JOB_QUEUED && !j->deleted) {
		queue_add(r, j);
		pthread_cond_signal(&r->work);
	}
	pthread_mutex_unlock(&r->lock);
	if (job_state_finished(j->state)) /* a dry run */
		sweep_retention(r);
	*out = j;
	return 0;
}

int registry_submit(struct registry *r, struct job_spec *spec, const char *resolved_source,
		    const char *resolved_destination, const char *idempotency_key,
		    const char *request_sha256, struct job **out, bool *existing,
		    struct job_error *je)
{
	struct job *j = submission_job(spec, resolved_source, resolved_destination, idempotency_key,
				       request_sha256);
	struct job *prior = NULL;

	*out = NULL;
	*existing = false;
	if (reserve(r, j, &prior, je) < 0 || prior) {
		job_unref(j);
		if (!prior)
			return -1;
		*out = prior;
		*existing = true;
		return 0;
	}
	return submit_reserved(r, j, out, existing, je);
}

int registry_submit_async(struct registry *r, struct job_spec *spec, const char *resolved_source,
			  const char *resolved_destination, const char *idempotency_key,
			  const char *request_sha256, registry_submit_fn done, void *arg,
			  struct job **existing, struct job_error *je)
{
	struct job *j = submission_job(spec, resolved_source, resolved_destination, idempotency_key,
				       request_sha256);
	struct submission *sub;

	*existing = NULL;
	if (reserve(r, j, existing, je) < 0 || *existing) {
		job_unref(j);
		return *existing ? 1 : -1;
	}
	sub = xcalloc(1, sizeof(*sub));
	sub->job = j;
	sub->done = done;
	sub->arg = arg;
	pthread_mutex_lock(&r->lock);
	if (r->pending_tail)
		r->pending_tail->next = sub;
	else
		r->pending = sub;
	r->pending_tail = sub;
	pthread_cond_signal(&r->submitted);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* A submission thread: takes pending submissions in order, until the
 * registry stops and none is left. */
static void *submitter_main(void *arg)
{
	struct registry *r = arg;
	struct submission *sub;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct job_error je = {0};
		struct job *j = NULL;
		bool existing = false;
		int rc;

		while (!r->stopping && !r->pending)
			pthread_cond_wait(&r->submitted, &r->lock);
		sub = r->pending;
		if (!sub)
			break;
		r->pending = sub->next;
		if (!r->pending)
			r->pending_tail = NULL;
		pthread_mutex_unlock(&r->lock);
		rc = submit_reserved(r, sub->job, &j, &existing, &je);
		sub->done(sub->arg, rc < 0 ? NULL : j, existing, &je);
		free(sub);
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* ---- reading ---------------------------------------------------------------- */

struct job *registry_get(struct registry *r, const char *id)
{
	struct job *j;

	pthread_mutex_lock(&r->lock);
	j = job_ref(find_locked(r, id));
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

static void append_tensor(struct job_buf *out, const struct job_tensors *t, size_t i, uint8_t state,
			  bool first)
{
	const char *frag;
	size_t len;

	job_tensors_fragment(t, i, &frag, &len);
	if (!first)
		job_buf_append(out, ",", 1);
	job_buf_append(out, frag, len);
	job_buf_puts(out, tensor_state_name((enum tensor_state)state));
	job_buf_append(out, "\"}", 2);
}

void registry_tensors(struct registry *r, struct job *j, int state_filter, size_t offset,
		      size_t limit, struct job_buf *out)
{
	struct job_tensors *t;
	uint8_t *states;
	size_t n, from, count, total = 0, emitted = 0, i;

	pthread_mutex_lock(&r->lock);
	open_tensors(r, j);
	load_states(r, j);
	t = job_tensors_ref(j->tensors);
	n = job_tensors_count(t);
	from = state_filter >= 0 ? 0 : (offset < n ? offset : n);
	count = state_filter >= 0 ? n : (n - from < limit ? n - from : limit);
	states = xmalloc(count ? count : 1);
	copy_states(j, from, count, states);
	pthread_mutex_unlock(&r->lock);

	job_buf_puts(out, "{\"tensors\":[");
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
	job_buf_printf(out, "],\"total\":%zu,\"offset\":%zu,\"limit\":%zu}", total, offset, limit);
	free(states);
	job_tensors_unref(t);
}

/* ---- changing ---------------------------------------------------------------- */

int registry_delete(struct registry *r, const char *id, enum registry_delete_outcome *outcome,
		    json_t **job_json, struct job_error *je)
{
	struct job *j, *removed = NULL;
	struct err e = {0};
	double seconds = 0;

	if (job_json)
		*job_json = NULL;
	pthread_mutex_lock(&r->lock);
	j = job_ref(find_locked(r, id));
	if (!j) {
		pthread_mutex_unlock(&r->lock);
		return job_error_set(je, "", "job_not_found", "no job has the id '%.64s'", id);
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
		cancel_error(&e);
		seconds = finish_locked(r, j, JOB_CANCELLED, &e, NULL);
	} else {
		*outcome = REGISTRY_DELETED;
		removed = table_remove(r, j);
	}
	pthread_mutex_unlock(&r->lock);

	if (*outcome == REGISTRY_CANCELLED) {
		finished(r, j, JOB_CANCELLED, seconds, &e);
	} else if (*outcome == REGISTRY_CANCELLING) {
		log_job(LOG_INFO, j, "cancel requested", NULL);
	} else {
		remove_files(r, j);
		log_job(LOG_INFO, j, "record deleted", NULL);
		job_unref(removed);
	}
	if (job_json && *outcome != REGISTRY_DELETED)
		*job_json = registry_job_json(r, j);
	job_unref(j);
	return 0;
}

static int compare_finished(const void *a, const void *b)
{
	const struct job *x = *(struct job *const *)a, *y = *(struct job *const *)b;

	if (x->finished_ms != y->finished_ms)
		return x->finished_ms < y->finished_ms ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Removes the records of finished jobs that finished more than retain_ms
 * ago, and the oldest ones beyond the newest max_finished, from memory
 * and from the state dir (their output stays). */
static void sweep_retention(struct registry *r)
{
	int64_t cutoff = job_now_ms() - r->cfg.retain_ms;
	struct job **done = NULL, **expired = NULL;
	size_t ndone = 0, fcap = 0, n = 0, cap = 0, excess = 0, i;

	if (r->cfg.retain_ms <= 0 && r->cfg.max_finished == 0)
		return;
	pthread_mutex_lock(&r->lock);
	ndone = r->counts[JOB_SUCCEEDED] + r->counts[JOB_FAILED] + r->counts[JOB_CANCELLED];
	if (r->cfg.max_finished && ndone > r->cfg.max_finished)
		excess = ndone - r->cfg.max_finished;
	ndone = 0;
	for (i = 0; i < r->njobs; i++)
		if (job_state_finished(r->by_seq[i]->state))
			array_insert(&done, &ndone, &fcap, ndone, r->by_seq[i]);
	if (excess)
		qsort(done, ndone, sizeof(*done), compare_finished);
	for (i = 0; i < ndone; i++) {
		struct job *j = done[i];

		if (i < excess ||
		    (r->cfg.retain_ms > 0 && j->finished_ms && j->finished_ms < cutoff))
			array_insert(&expired, &n, &cap, n, table_remove(r, j));
	}
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < n; i++) {
		remove_files(r, expired[i]);
		log_job(LOG_INFO, expired[i], "record expired", NULL);
		job_unref(expired[i]);
	}
	free(expired);
	free(done);
}

static void probe_writable(struct registry *r)
{
	char path[PATH_MAX];
	int fd;
	bool ok;

	snprintf(path, sizeof(path), "%s/.probe", r->jobs_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ok = fd >= 0 && write(fd, "ok", 2) == 2;
	if (fd >= 0)
		close(fd);
	unlink(path);
	if (ok != atomic_load(&r->writable)) {
		json_t *f = json_pack("{s:s}", "state_dir", r->state_dir);

		log_msg(ok ? LOG_INFO : LOG_ERROR, f,
			ok ? "state directory writable again" : "state directory is not writable");
		json_decref(f);
	}
	atomic_store(&r->writable, ok);
}

/* Seconds between sweeps: a quarter of the retention, at most a minute. */
static double retention_interval(const struct registry *r)
{
	double quarter = (double)r->cfg.retain_ms / 4000.0;

	if (r->cfg.retain_ms <= 0 || quarter > RETENTION_INTERVAL)
		return RETENTION_INTERVAL;
	return quarter < 0.25 ? 0.25 : quarter;
}

/* Seconds the running job j has gone without its bytes_done moving, as
 * sampled now and at earlier calls (lock held). */
static double watch_progress_locked(struct job *j, double now)
{
	struct job_progress p;

	job_current_progress(j, &p);
	if (j->watch_started_ms != j->started_ms || p.bytes_done != j->watch_bytes) {
		j->watch_started_ms = j->started_ms;
		j->watch_bytes = p.bytes_done;
		j->watch_since = now;
	}
	return now - j->watch_since;
}

void registry_tick(struct registry *r)
{
	double now = now_seconds();
	struct job **due = NULL;
	size_t n = 0, cap = 0, i;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->njobs; i++) {
		struct job *j = r->by_seq[i];

		if (j->state != JOB_RUNNING)
			continue;
		watch_progress_locked(j, now);
		if (now - j->persisted_at >= PERSIST_INTERVAL)
			array_insert(&due, &n, &cap, n, job_ref(j));
	}
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < n; i++) {
		persist(r, due[i]);
		job_unref(due[i]);
	}
	free(due);
	if (now - r->last_retention >= retention_interval(r)) {
		r->last_retention = now;
		sweep_retention(r);
	}
	if (now - r->last_probe >= PROBE_INTERVAL) {
		r->last_probe = now;
		probe_writable(r);
	}
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

void registry_record_running_as_queued(struct registry *r)
{
	size_t i;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->njobs; i++) {
		struct job *j = r->by_seq[i];
		json_t *rec;
		char *text, name[JOB_ID_LEN + 8];
		struct err e = {0};

		if (j->state != JOB_RUNNING)
			continue;
		rec = job_record_json(j);
		json_object_set_new(rec, "state", json_string("queued"));
		json_object_set_new(rec, "started_ms", json_integer(0));
		text = json_dumps(rec, JSON_COMPACT);
		snprintf(name, sizeof(name), "%s.json", j->id);
		if (text)
			job_write_atomic(r->jobs_dir, name, text, strlen(text), true, &e);
		log_job(LOG_WARN, j, "still running at exit; queued to run again", NULL);
		free(text);
		json_decref(rec);
	}
	pthread_mutex_unlock(&r->lock);
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
		struct job_progress p;
		double stall;

		if (j->state != JOB_RUNNING)
			continue;
		job_current_progress(j, &p);
		out->tensors_converted += p.tensors_done;
		out->bytes_converted += p.bytes_done;
		stall = watch_progress_locked(j, now);
		if (stall > out->longest_stall_seconds)
			out->longest_stall_seconds = stall;
	}
	pthread_mutex_unlock(&r->lock);
}
