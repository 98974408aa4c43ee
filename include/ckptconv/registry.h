/* SPDX-License-Identifier: MIT */
/*
 * registry: the daemon's jobs.  It owns the job table (by id and in
 * creation order), the FIFO queue, the runner threads (one per
 * --max-running slot, named "ckptconv-job", each running one conversion at
 * a time on the shared exec pool), the submission threads (named
 * "ckptconv-submit": they read and plan the sources of new jobs off the
 * HTTP threads), idempotency keys, retention (by age and by number of
 * finished records), and the
 * records in the state dir: <state>/jobs/<id>.json (written atomically at
 * every state change and every few seconds while running),
 * <id>.tensors (the per-tensor listing) and <id>.states (final tensor
 * states of a failed or cancelled job).
 *
 * Restart: a job whose record says "running" was cut short by a crash; it
 * is queued again and rerun from scratch, replacing whatever of its own
 * output the first run left (its destination is "claimed" once the run
 * has checked that it was empty or that overwrite was asked for).  After
 * three such restarts it fails with "interrupted" rather than looping, and
 * what its last run left in the claimed destination is removed as a
 * failed run's output is (conversion_clean_destination).
 *
 * Plans: a job's source is read and planned once per start of the
 * service.  The submission's plan is kept with the queued job, its source
 * closed (conversion_suspend: the memory of a plan per queued job, which
 * max_queued bounds, and no descriptor), and run by the runner unless the
 * source's listing, or a file the plan was made from, changed meanwhile
 * (then it is planned again: conversion_resume).  Jobs
 * loaded from records are planned when they run, their locations checked
 * against the policy again.
 *
 * Threads: every function may be called from any thread except
 * registry_free (main thread, after the runners went idle).  One mutex
 * (the "registry lock") protects the table, the queue and the mutable
 * fields of every job; record writes happen outside it, ordered per job.
 */
#ifndef CKPTCONV_REGISTRY_H
#define CKPTCONV_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/job.h"

struct err;
struct exec_pool;
struct registry;

struct registry_config {
	const char *state_dir; /* resolved; created if missing */
	unsigned max_running;  /* >= 1 */
	unsigned max_queued;   /* >= 1 */
	int64_t retain_ms;     /* finished records kept this long; 0 = forever */
	size_t max_finished;   /* finished records kept at most (the newest); 0 = no limit */
	const struct job_policy *policy;
	struct exec_pool *pool; /* shared by every job; not owned */
	/* What every job's stores talk to before its options.s3 apply, with
	 * the service's one credentials provider (not owned); NULL: the
	 * environment's settings, a provider per store. */
	const struct store_config *store;
};

/* Locks the state dir (one daemon per state dir), loads the records and
 * re-queues interrupted jobs.  Codes: io_error. */
int registry_open(const struct registry_config *c, struct registry **out, struct err *e);
/* Starts the runner threads and the submission threads. */
int registry_start(struct registry *r, struct err *e);
/* Stops and joins the runners (which must be idle: after drain and
 * registry_wait_idle) and frees everything. */
void registry_free(struct registry *r);

/* Creates a job from a validated request (taking spec's contents) after
 * checking the source (conversion_prepare, which reads the source's
 * headers and compiles and matches the exclude pattern; the job keeps the
 * plan, its source closed, for the runner) and the limits:
 * queued jobs plus submissions being prepared, dry runs included, stay
 * within max_queued.  A dry run is finished at once and counts towards
 * max_finished.  With an idempotency key already used for the same
 * request body it returns that job with *existing true.  *out is a new
 * reference.  Codes: draining, queue_full, destination_in_use (its
 * destination overlaps a queued or running job's source or destination,
 * or its source such a job's destination), idempotency_conflict,
 * invalid_exclude, the engine's (422), forbidden_path, io_error.
 * Threads: not the HTTP threads, since reading the source may take long
 * (they use registry_submit_async). */
int registry_submit(struct registry *r, struct job_spec *spec, const char *resolved_source,
		    const char *resolved_destination, const char *idempotency_key,
		    const char *request_sha256, struct job **out, bool *existing,
		    struct job_error *je);

/* The outcome of an asynchronous submission: j (a new reference, NULL on
 * failure), whether it is an earlier job with the same idempotency key,
 * and the error when j is NULL.  Called on a submission thread. */
typedef void (*registry_submit_fn)(void *arg, struct job *j, bool existing,
				   const struct job_error *je);
/* registry_submit in two halves: the checks that need only the registry
 * (draining, idempotency, queue_full, destination_in_use) now, on the
 * calling thread, and the rest on one of the registry's submission
 * threads (registry_start), which calls done exactly once.  Returns 0 when
 * the submission is queued (spec's contents taken), 1 when an earlier job
 * has the same idempotency key and body (*existing, a new reference), -1
 * when refused (je).  Threads: any, the HTTP threads included. */
int registry_submit_async(struct registry *r, struct job_spec *spec, const char *resolved_source,
			  const char *resolved_destination, const char *idempotency_key,
			  const char *request_sha256, registry_submit_fn done, void *arg,
			  struct job **existing, struct job_error *je);

/* The job with this id (a new reference), or NULL. */
struct job *registry_get(struct registry *r, const char *id);

/* Snapshots under the lock. */
json_t *registry_job_json(struct registry *r, struct job *j);
json_t *registry_progress_json(struct registry *r, struct job *j);
/* The API form as compact JSON text with a newline (malloc'd; NULL on
 * out-of-memory), rebuilt when the job changed and, while it runs, at most
 * every 100 ms: the hot path of status polling. */
char *registry_job_text(struct registry *r, struct job *j, size_t *len);
enum job_state registry_job_state(struct registry *r, struct job *j);

enum registry_delete_outcome {
	REGISTRY_CANCELLED,  /* was queued: now cancelled */
	REGISTRY_CANCELLING, /* is running: stops at the next safe point */
	REGISTRY_DELETED,    /* was finished: its record is gone */
};
/* DELETE /v1/jobs/<id>.  *job_json (may be NULL) receives the job after
 * the change (not for DELETED).  Code: job_not_found. */
int registry_delete(struct registry *r, const char *id, enum registry_delete_outcome *outcome,
		    json_t **job_json, struct job_error *je);

struct registry_filter {
	int state;		       /* -1: any */
	const char *const *label_keys; /* label filters: key = value, all must match */
	const char *const *label_values;
	size_t nlabels;
	uint64_t before_seq; /* cursor: only jobs older than this; 0 = none */
	size_t limit;
};
/* {"jobs": [...], "next_cursor": "<seq>" | null}, newest first. */
json_t *registry_list(struct registry *r, const struct registry_filter *f);

/* Appends {"total", "offset", "limit", "tensors": [...]} for the job's
 * tensors in plan order, those in state `state_filter` only (-1: all). */
void registry_tensors(struct registry *r, struct job *j, int state_filter, size_t offset,
		      size_t limit, struct buf *out);

/* Periodic work from the main loop: records of running jobs, retention,
 * the state dir's writability. */
void registry_tick(struct registry *r);

/* Refuses new jobs from now on and stops the running ones at a safe point;
 * they are recorded as queued for the next start. */
void registry_drain(struct registry *r);
/* Waits until no job runs and no submission is being prepared; false
 * when timeout_seconds passed first. */
bool registry_wait_idle(struct registry *r, double timeout_seconds);
/* For an exit that cannot wait any longer: records every running job as
 * queued (to be rerun from scratch at the next start). */
void registry_record_running_as_queued(struct registry *r);

bool registry_draining(struct registry *r);
/* Accepting jobs: not draining and the state dir is writable. */
bool registry_ready(struct registry *r, const char **why);

struct registry_stats {
	size_t jobs[JOB_STATE_COUNT];
	size_t queue_length, queue_capacity;	     /* capacity: max_queued */
	uint64_t tensors_converted, bytes_converted; /* since start, running jobs included */
	/* Longest time, in seconds, a running job has gone without its
	 * bytes_done moving, as seen by this and earlier calls (each call
	 * samples the running jobs); 0 when none runs. */
	double longest_stall_seconds;
};
void registry_stats(struct registry *r, struct registry_stats *out);

#endif
