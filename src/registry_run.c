/* SPDX-License-Identifier: MIT */
/*
 * registry_run: the runner threads ("ckptconv-job", one per --max-running
 * slot).  A runner takes the oldest queued job and runs its conversion on
 * the shared exec pool: the one its submission planned, once the source's
 * listing is found unchanged, else (after a restart, its locations
 * checked against the policy again, or when the source changed) one
 * planned now; or runs its finalize.  Then it settles the outcome:
 * succeeded, failed, cancelled, or queued again when the service drains.
 * A job's destination is "claimed" once the run has checked that it was
 * empty or that overwrite was asked for, so a rerun after a crash may
 * replace what the first run left.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/conversion_result.h"
#include "ckptconv/aws_credentials.h"
#include "ckptconv/log.h"
#include "ckptconv/finalize.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "registry_internal.h"

/* ---- results -------------------------------------------------------------- */

/* The job's result of a prepared (or run) conversion: a partition's says
 * what it wrote.  Not timed: the job's progress has its seconds. */
json_t *registry_conversion_result_json(const struct conversion *conv)
{
	struct conversion_result result;
	json_t *j;

	conversion_result_init(&result);
	conversion_describe_result(conv, &result);
	j = conversion_result_to_json(&result);
	conversion_result_fini(&result);
	return j;
}

/* ---- running -------------------------------------------------------------- */

int registry_job_store(const struct registry *r, struct job *j, struct err *e)
{
	const struct job_policy *p = r->cfg.policy;

	memset(&j->store, 0, sizeof(j->store));
	if (r->cfg.store)
		j->store = *r->cfg.store;
	j->spec.convert.store = &j->store;
	if (!p || !p->s3_options_apply)
		return 0;
	return p->s3_options_apply(json_object_get(j->spec.options, "s3"), &j->store.s3, e);
}

void registry_note_credentials(struct registry *r, struct job *j, const char *src, const char *dst)
{
	const char *source;

	if (!j->store.credentials ||
	    !((store_location_caps(src) | store_location_caps(dst)) & STORE_REMOTE))
		return;
	source = aws_credentials_source(j->store.credentials);
	if (!source)
		return;
	pthread_mutex_lock(&r->lock);
	if (strcmp(j->credentials_source, source) != 0) {
		snprintf(j->credentials_source, sizeof(j->credentials_source), "%s", source);
		j->version++;
	}
	pthread_mutex_unlock(&r->lock);
}

/* Whether a destination may be claimed by the job: replacing it was asked
 * for, or it holds nothing (but unfinished output of the local store). */
static bool destination_claimable(const char *dst, const struct store_config *cfg, bool overwrite)
{
	struct store *s = NULL;
	struct store_entry *entries = NULL;
	struct err e = {0};
	size_t n = 0, i;
	bool empty = true;

	if (overwrite)
		return true;
	if (store_open_config(dst, cfg, &s, &e) < 0)
		return false;
	if (store_list(s, &entries, &n, &e) < 0) {
		empty = e.code == ERR_SOURCE_NOT_FOUND;
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
	if (j->claimed || !destination_claimable(dst, &j->store, overwrite))
		return;
	pthread_mutex_lock(&r->lock);
	j->claimed = true;
	pthread_mutex_unlock(&r->lock);
	registry_persist(r, j);
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
		return err_set(e, ERR_FORBIDDEN_PATH,
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

void registry_cancel_error(struct err *e)
{
	err_set(e, ERR_CANCELLED, "the job was cancelled by a DELETE request");
}

static void cancelled_by_request(struct registry *r, struct job *j)
{
	struct err e = {0};

	registry_cancel_error(&e);
	registry_finish(r, j, JOB_CANCELLED, &e, NULL);
}

/* After the run: succeeded, cancelled, queued again (drain) or failed.  The
 * conversion leaves the job in the same step as its state changes, so a
 * reader never sees a finished run without its outcome. */
static void settle(struct registry *r, struct job *j, struct conversion *conv, int rc,
		   const struct err *run_error)
{
	json_t *result = rc == 0 ? registry_conversion_result_json(conv) : NULL;
	bool was_cancelled = rc < 0 && run_error->code && run_error->code == ERR_CANCELLED;
	enum job_state outcome = JOB_SUCCEEDED;
	struct err e = {0};
	uint8_t *states = NULL;
	size_t nstates = 0;
	double seconds = 0;
	bool requeued = false;

	if (rc < 0 && run_error->code)
		e = *run_error;
	else if (rc < 0)
		err_set(&e, ERR_INTERNAL_ERROR, "the conversion failed without saying why");
	pthread_mutex_lock(&r->lock);
	job_current_progress(j, &j->progress);
	if (rc == 0) {
		j->conv = NULL;
		seconds = registry_finish_locked(r, j, JOB_SUCCEEDED, NULL, result);
	} else if (was_cancelled && j->cancel == JOB_CANCEL_DRAIN) {
		j->conv = NULL;
		registry_requeue_locked(r, j);
		requeued = true;
	} else {
		states = keep_tensor_states(j, &nstates);
		j->conv = NULL;
		outcome = JOB_FAILED;
		if (was_cancelled && j->cancel == JOB_CANCEL_USER) {
			outcome = JOB_CANCELLED;
			err_clear(&e);
			registry_cancel_error(&e);
		}
		seconds = registry_finish_locked(r, j, outcome, &e, NULL);
	}
	pthread_mutex_unlock(&r->lock);
	if (states)
		registry_write_states(r, j, states, nstates);
	free(states);
	if (requeued) {
		registry_persist(r, j);
		registry_log_job(LOG_INFO, j, "queued again for the next start", NULL);
	} else {
		registry_finished(r, j, outcome, seconds, &e);
	}
}

/* A finalize job: the manifest's source must be one the policy allows. */
static void run_finalize(struct registry *r, struct job *j, const char *dst)
{
	struct finalize_options fo;
	struct conversion_result fr;
	struct err e = {0};

	finalize_options_init(&fo);
	if (r->cfg.policy) {
		fo.check_source = job_policy_check_source;
		fo.check_source_arg = (void *)r->cfg.policy;
	}
	fo.store = &j->store;
	if (registry_job_store(r, j, &e) < 0 || finalize_destination(dst, &fo, &fr, &e) < 0) {
		registry_fail(r, j, &e);
		goto out;
	}
	registry_note_credentials(r, j, fr.source, dst);
	pthread_mutex_lock(&r->lock);
	j->progress.tensors_total = j->progress.tensors_done = fr.tensors;
	j->progress.bytes_total = j->progress.bytes_done = fr.bytes;
	pthread_mutex_unlock(&r->lock);
	registry_finish(r, j, JOB_SUCCEEDED, NULL, conversion_result_to_json(&fr));
out:
	conversion_result_fini(&fr);
}

/* Takes the conversion j's submission planned, if there is one. */
static struct conversion *take_prepared(struct registry *r, struct job *j)
{
	struct conversion *conv;

	pthread_mutex_lock(&r->lock);
	conv = j->prepared;
	j->prepared = NULL;
	pthread_mutex_unlock(&r->lock);
	return conv;
}

/* Plans j's conversion from src to dst and makes its listing the job's. */
static int plan_job(struct registry *r, struct job *j, const char *src, const char *dst,
		    struct conversion **conv, struct err *e)
{
	struct convert_options o = j->spec.convert;
	double started = now_seconds();

	/* A run the service stopped under resumes: what it published stays
	 * (resume excludes overwrite); any other claimed run replaces what
	 * its own earlier attempt left. */
	if (j->claimed && j->restarts) {
		o.resume = true;
		o.overwrite = false;
	} else if (j->claimed) {
		o.overwrite = true;
	}
	if (conversion_prepare(src, dst, &o, conv, e) < 0 ||
	    registry_install_tensors(r, j, *conv, true, e) < 0)
		return -1;
	registry_log_planned(j, conversion_plan(*conv), now_seconds() - started);
	return 0;
}

/* The job's conversion, ready to run: the one planned at submission while
 * the source is as it was then (its paths resolved then), else planned
 * now.  A job with none was loaded from its record: its locations are
 * checked against the policy again first (paths may have changed since
 * it was submitted). */
static int ready_conversion(struct registry *r, struct job *j, struct conversion **conv,
			    struct err *e)
{
	char *src = NULL, *dst = NULL;
	int rc;

	if (*conv) {
		rc = conversion_resume(*conv, e);
		if (rc <= 0)
			return rc;
		registry_log_job(LOG_INFO, j, "source changed since it was planned; planning again",
				 NULL);
		conversion_free(*conv);
		*conv = NULL;
		return plan_job(r, j, j->resolved_source, j->resolved_destination, conv, e);
	}
	rc = recheck(r, j, &src, &dst, e) < 0 || plan_job(r, j, src, dst, conv, e) < 0 ? -1 : 0;
	free(src);
	free(dst);
	return rc;
}

static void run_job(struct registry *r, struct job *j)
{
	struct conversion *conv = take_prepared(r, j);
	struct err e = {0};
	char *src = NULL, *dst = NULL;
	enum job_cancel cancel;
	int rc;

	registry_persist(r, j);
	registry_log_job(LOG_INFO, j, "started", NULL);
	if (j->spec.finalize) {
		if (recheck(r, j, &src, &dst, &e) < 0)
			registry_fail(r, j, &e);
		else
			run_finalize(r, j, dst);
		goto out;
	}
	if (registry_job_store(r, j, &e) < 0 || ready_conversion(r, j, &conv, &e) < 0) {
		registry_fail(r, j, &e);
		goto out;
	}
	claim(r, j, j->resolved_destination, j->spec.convert.overwrite || j->claimed);
	/* after claim, which may open the destination's store */
	registry_note_credentials(r, j, j->resolved_source, j->resolved_destination);
	cancel = publish_conversion(r, j, conv);
	if (cancel == JOB_CANCEL_DRAIN) {
		registry_requeue(r, j);
		goto out;
	}
	if (cancel == JOB_CANCEL_USER) {
		cancelled_by_request(r, j);
		goto out;
	}
	rc = conversion_run(conv, r->cfg.pool, &e);
	/* A local source's job first reaches the object store while it runs
	 * (the destination), so only now may credentials have been fetched. */
	registry_note_credentials(r, j, j->resolved_source, j->resolved_destination);
	settle(r, j, conv, rc, &e);
out:
	conversion_free(conv);
	free(src);
	free(dst);
}

/* The log line of a plan made for j: its size and how long planning took
 * (reading the source's headers is most of it). */
void registry_log_planned(const struct job *j, const struct plan *plan, double seconds)
{
	json_t *f = json_pack("{s:s, s:I, s:I, s:f}", "job", j->id, "tensors",
			      (json_int_t)plan->ntensors, "files", (json_int_t)plan->nfiles,
			      "seconds", seconds);

	log_msg(LOG_INFO, f, "job planned");
	json_decref(f);
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
	registry_array_remove(r->queue, &r->nqueue, 0);
	registry_set_state(r, j, JOB_RUNNING);
	j->started_ms = job_now_ms();
	j->finished_ms = 0;
	j->cancel = JOB_CANCEL_NONE;
	r->running++;
	return job_ref(j);
}

void *registry_runner_main(void *arg)
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

/* A job the service stopped under once too often: what its last run left
 * in the destination goes as a failed run's would, if the job had claimed
 * the destination and it still resolves as it did then.  A finalize job's
 * destination holds the partitions' output and stays as it is. */
void registry_clean_interrupted(struct registry *r, struct job *j)
{
	struct conversion *conv = NULL;
	struct err e = {0};
	char *src = NULL, *dst = NULL;

	if (!j->claimed || j->spec.finalize)
		return;
	if (recheck(r, j, &src, &dst, &e) < 0 || registry_job_store(r, j, &e) < 0 ||
	    conversion_prepare(src, dst, &j->spec.convert, &conv, &e) < 0 ||
	    conversion_clean_destination(conv, &e) < 0)
		registry_log_job(LOG_WARN, j, "output of the interrupted run not removed", &e);
	else
		registry_log_job(LOG_INFO, j, "output of the interrupted run removed", NULL);
	conversion_free(conv);
	free(src);
	free(dst);
}
