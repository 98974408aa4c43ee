/* SPDX-License-Identifier: MIT */
/*
 * registry_submit: admitting new jobs.  The checks that need only the
 * table (draining, idempotency keys, --max-queued, overlapping locations)
 * run on the caller's thread and reserve a place in the queue; reading and
 * planning the source (and compiling the exclude pattern) run on the
 * submission threads ("ckptconv-submit"), off the HTTP threads; then the
 * job is admitted again (the table may have changed meanwhile), recorded
 * and queued.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/paths.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "registry_internal.h"

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
			return job_error_set(je, "source", ERR_DESTINATION_IN_USE,
					     "%s overlaps the destination of %s job %s", src,
					     job_state_name(j->state), j->id);
		if (spec->dry_run)
			continue;
		if (!partition_siblings(spec, dst, j) &&
		    same_kind_overlap(dst, j->resolved_destination))
			return job_error_set(je, "destination", ERR_DESTINATION_IN_USE,
					     "%s overlaps the destination of %s job %s", dst,
					     job_state_name(j->state), j->id);
		if (same_kind_overlap(dst, j->resolved_source))
			return job_error_set(je, "destination", ERR_DESTINATION_IN_USE,
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
		return job_error_set(je, "", ERR_DRAINING,
				     "the service is shutting down and accepts no new jobs");
	prior = find_by_key(r, key);
	if (prior && strcmp(prior->request_sha256, sha) == 0) {
		*existing = job_ref(prior);
		return 0;
	}
	if (prior)
		return job_error_set(je, "", ERR_IDEMPOTENCY_CONFLICT,
				     "Idempotency-Key was used for job %s with a different body",
				     prior->id);
	/* Submissions still being prepared hold their place, and dry runs
	 * count like any job: each costs a plan and a record. */
	if (r->counts[JOB_QUEUED] + r->preparing >= r->cfg.max_queued)
		return job_error_set(je, "", ERR_QUEUE_FULL,
				     "%zu jobs are queued or being prepared (the limit is %u)",
				     r->counts[JOB_QUEUED] + r->preparing, r->cfg.max_queued);
	return check_overlaps(r, spec, src, dst, je);
}

/* Field of a request an engine error is about. */
static const char *engine_error_field(enum err_code code)
{
	if (code == ERR_INVALID_EXCLUDE)
		return "options.exclude";
	if (code == ERR_INVALID_SIZE)
		return "options.max_shard_size";
	if (code == ERR_ALREADY_IN_LAYOUT)
		return "to";
	/* a file of the source leads outside the allowed roots */
	if (err_http_status(code) == 422 || code == ERR_FORBIDDEN_PATH)
		return "source";
	return "";
}

/* conversion_prepare of the request: the source is read and planned.  A
 * job to run keeps the conversion, suspended, for its runner. */
static int check_source(struct registry *r, struct job *j, struct job_error *je)
{
	struct conversion *conv = NULL;
	struct err e = {0}, suspend_error = {0};
	double started = now_seconds();
	int rc = -1;

	if (j->spec.finalize)
		return 0; /* the manifest names the source when the job runs */
	if (registry_job_store(r, j, &e) < 0) {
		job_error_set(je, "options.s3", e.code, "%s", e.msg);
		goto out;
	}
	if (conversion_prepare(j->resolved_source, j->resolved_destination, &j->spec.convert, &conv,
			       &e) < 0) {
		job_error_set(je, engine_error_field(e.code), e.code, "%s", e.msg);
		goto out;
	}
	if (registry_install_tensors(r, j, conv, !j->spec.dry_run, &e) < 0) {
		job_error_set(je, "", e.code, "%s", e.msg);
		goto out;
	}
	registry_log_planned(j, conversion_plan(conv), now_seconds() - started);
	registry_note_credentials(r, j, j->resolved_source, j->resolved_destination);
	if (j->spec.dry_run) {
		j->state = JOB_SUCCEEDED;
		j->started_ms = j->finished_ms = job_now_ms();
		j->result = registry_conversion_result_json(conv);
	} else if (conversion_suspend(conv, &suspend_error) == 0) {
		/* Not in the table yet: no one else sees j. */
		j->prepared = conv;
		conv = NULL;
	}
	rc = 0;
out:
	conversion_free(conv);
	return rc;
}

static void discard(struct registry *r, struct job *j)
{
	registry_remove_files(r, j);
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
		rc = job_error_set(je, "", ERR_DRAINING,
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
		if (registry_table_insert(r, job_ref(j)) < 0) {
			job_unref(j);
			rc = job_error_set(je, "", ERR_INTERNAL_ERROR, "job id %s is taken", j->id);
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
	if (!registry_persist(r, j)) {
		pthread_mutex_lock(&r->lock);
		job_unref(registry_table_remove(r, j));
		pthread_mutex_unlock(&r->lock);
		discard(r, j);
		return job_error_set(je, "", ERR_IO_ERROR, "the job record could not be written");
	}
	log_submitted(j);
	pthread_mutex_lock(&r->lock);
	if (j->state == JOB_QUEUED && !j->deleted) {
		registry_queue_add(r, j);
		pthread_cond_signal(&r->work);
	}
	pthread_mutex_unlock(&r->lock);
	if (job_state_finished(j->state)) /* a dry run */
		registry_sweep_retention(r);
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

/* Whether reading a submission's source reaches the object store (and may
 * wait for credentials). */
static bool remote_submission(const struct job *j)
{
	return !j->spec.finalize && ((j->resolved_source && store_is_remote(j->resolved_source)) ||
				     store_is_remote(j->resolved_destination));
}

/* The first pending submission this thread may take (lock held), out of
 * the list; one that reaches the object store only while another thread
 * is left for local ones.  NULL when none may be taken now. */
static struct submission *take_pending(struct registry *r, bool *remote)
{
	struct submission **pp, *prev = NULL, *sub;

	for (pp = &r->pending; *pp; prev = *pp, pp = &(*pp)->next) {
		*remote = remote_submission((*pp)->job);
		if (*remote && r->remote_submitting + 1 >= SUBMIT_THREADS)
			continue;
		sub = *pp;
		*pp = sub->next;
		if (r->pending_tail == sub)
			r->pending_tail = prev;
		return sub;
	}
	return NULL;
}

/* A submission thread: takes pending submissions in order (see
 * take_pending), until the registry stops and none is left. */
void *registry_submitter_main(void *arg)
{
	struct registry *r = arg;
	struct submission *sub;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct job_error je = {0};
		struct job *j = NULL;
		bool existing = false, remote = false;
		int rc;

		while (!(sub = take_pending(r, &remote)) && !(r->stopping && !r->pending))
			pthread_cond_wait(&r->submitted, &r->lock);
		if (!sub)
			break;
		if (remote)
			r->remote_submitting++;
		pthread_mutex_unlock(&r->lock);
		rc = submit_reserved(r, sub->job, &j, &existing, &je);
		sub->done(sub->arg, rc < 0 ? NULL : j, existing, &je);
		free(sub);
		pthread_mutex_lock(&r->lock);
		if (remote) {
			r->remote_submitting--;
			pthread_cond_broadcast(&r->submitted); /* one may be taken now */
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}
