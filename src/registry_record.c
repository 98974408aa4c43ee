/* SPDX-License-Identifier: MIT */
/*
 * registry_record: the registry's state directory.  Each job has a record,
 * <state>/jobs/<id>.json, rewritten atomically at every state change and
 * every few seconds while it runs, its per-tensor listing (<id>.tensors)
 * and, once failed or cancelled, its final tensor states (<id>.states).
 * Opening a registry locks the directory, loads the records (setting
 * unreadable ones aside), and queues again the jobs a crash cut short;
 * retention removes the records of old finished jobs; the periodic tick
 * rewrites running jobs' records and probes that the directory is still
 * writable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/job_record.h"
#include "ckptconv/job_tensors.h"
#include "ckptconv/log.h"
#include "registry_internal.h"

#define PERSIST_INTERVAL 2.0	/* seconds between records of a running job */
#define RETENTION_INTERVAL 60.0 /* seconds between sweeps, at most */
#define PROBE_INTERVAL 5.0
#define MAX_CRASH_RESTARTS 3

/* ---- files ---------------------------------------------------------------- */

static char *job_file(const struct registry *r, const struct job *j, const char *suffix)
{
	char *path;

	if (asprintf(&path, "%s/%s%s", r->jobs_dir, j->id, suffix) < 0)
		abort();
	return path;
}

/* Writes j's record; false (and the service marked not ready) on failure. */
bool registry_persist(struct registry *r, struct job *j)
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
		registry_log_job(LOG_ERROR, j, "record not written", &e);
		ok = false;
	}
	free(text);
out:
	pthread_mutex_unlock(&j->write_lock);
	return ok;
}

void registry_remove_files(struct registry *r, struct job *j)
{
	static const char *const suffixes[] = {".json", ".tensors", ".states"};
	size_t i;

	pthread_mutex_lock(&j->write_lock);
	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *path = job_file(r, j, suffixes[i]);

		if (unlink(path) != 0 && errno != ENOENT)
			registry_log_job(LOG_WARN, j, "file not removed", NULL);
		free(path);
	}
	pthread_mutex_unlock(&j->write_lock);
}

void registry_write_states(struct registry *r, struct job *j, const uint8_t *states, size_t n)
{
	struct err e = {0};
	char name[JOB_ID_LEN + 8];

	snprintf(name, sizeof(name), "%s.states", j->id);
	if (job_write_atomic(r->jobs_dir, name, (const char *)states, n, true, &e) < 0)
		registry_log_job(LOG_WARN, j, "tensor states not written", &e);
}

/* Loads a finished job's final tensor states (lock held). */
void registry_load_states(struct registry *r, struct job *j)
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
void registry_open_tensors(struct registry *r, struct job *j)
{
	struct err e = {0};
	char *path;

	if (j->tensors)
		return;
	path = job_file(r, j, ".tensors");
	if (job_tensors_open(path, &j->tensors, &e) < 0 && e.errnum != ENOENT)
		registry_log_job(LOG_WARN, j, "tensor listing unreadable", &e);
	free(path);
}

/* Writes the listing of conv's plan for j and makes it the job's. */
int registry_install_tensors(struct registry *r, struct job *j, const struct conversion *conv,
			     bool durable, struct err *e)
{
	const struct plan *plan = conversion_plan(conv);
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
	conversion_totals(conv, &j->progress.tensors_total, &j->progress.bytes_total);
	j->version++;
	pthread_mutex_unlock(&r->lock);
	job_tensors_unref(old);
	rc = 0;
out:
	free(path);
	return rc;
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
		err_set(e, ERR_IO_ERROR, "%s: %s", name, jerr.text);
		return -1;
	}
	if (job_from_record(rec, &j, e) < 0)
		goto out;
	if (strncmp(name, j->id, JOB_ID_LEN) != 0) {
		err_set(e, ERR_IO_ERROR, "%s holds job %s", name, j->id);
		goto out;
	}
	if (registry_table_insert(r, j) < 0) {
		err_set(e, ERR_IO_ERROR, "%s: job %s is listed twice", name, j->id);
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
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s", r->jobs_dir);
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
			if (!registry_find_locked(r, id))
				remove_stale(r, d->d_name);
		}
	}
	closedir(dir);
	return 0;
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

				err_set(&e, ERR_INTERRUPTED,
					"the service stopped %u times while the job was running; it is not retried again",
					j->restarts);
				registry_finish(r, j, JOB_FAILED, &e, NULL);
				registry_clean_interrupted(r, j);
				continue;
			}
			registry_set_state(r, j, JOB_QUEUED);
			j->started_ms = 0;
			registry_persist(r, j);
			registry_log_job(
				LOG_WARN, j,
				"was running when the service stopped; queued to run again", NULL);
		}
		if (j->state == JOB_QUEUED)
			registry_queue_add(r, j);
	}
}

static int lock_state_dir(struct registry *r, struct err *e)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/lock", r->state_dir);
	r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (r->lock_fd < 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s", path);
	if (flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0)
		return err_set(e, ERR_IO_ERROR,
			       "%s: another ckptconv serve uses this state directory",
			       r->state_dir);
	return 0;
}

static int make_dir(const char *path, struct err *e)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return err_set_errno(e, ERR_IO_ERROR, errno, "cannot create %s", path);
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
	registry_sweep_retention(r);
	r->opened = true;
	*out = r;
	r = NULL;
	rc = 0;
out:
	registry_free(r);
	return rc;
}

/* ---- retention and the periodic tick --------------------------------------- */

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
void registry_sweep_retention(struct registry *r)
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
			registry_array_insert(&done, &ndone, &fcap, ndone, r->by_seq[i]);
	if (excess)
		qsort(done, ndone, sizeof(*done), compare_finished);
	for (i = 0; i < ndone; i++) {
		struct job *j = done[i];

		if (i < excess ||
		    (r->cfg.retain_ms > 0 && j->finished_ms && j->finished_ms < cutoff))
			registry_array_insert(&expired, &n, &cap, n, registry_table_remove(r, j));
	}
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < n; i++) {
		registry_remove_files(r, expired[i]);
		registry_log_job(LOG_INFO, expired[i], "record expired", NULL);
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
		registry_watch_progress_locked(j, now);
		if (now - j->persisted_at >= PERSIST_INTERVAL)
			registry_array_insert(&due, &n, &cap, n, job_ref(j));
	}
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < n; i++) {
		registry_persist(r, due[i]);
		job_unref(due[i]);
	}
	free(due);
	if (now - r->last_retention >= retention_interval(r)) {
		r->last_retention = now;
		registry_sweep_retention(r);
	}
	if (now - r->last_probe >= PROBE_INTERVAL) {
		r->last_probe = now;
		probe_writable(r);
	}
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
		registry_log_job(LOG_WARN, j, "still running at exit; queued to run again", NULL);
		free(text);
		json_decref(rec);
	}
	pthread_mutex_unlock(&r->lock);
}
