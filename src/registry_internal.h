/* SPDX-License-Identifier: MIT */
/*
 * registry_internal: what the files of the registry share, and nothing
 * outside them sees: the registry object, and the functions one file
 * calls in another.  registry.c holds the table, the queue and the state
 * changes; registry_record.c the state dir (records, loading at start,
 * retention); registry_run.c the runner threads; registry_submit.c
 * admission and the submission threads.
 *
 * Locking as in registry.h: functions named *_locked, and those saying
 * "lock held", are called with the registry lock held; the others take it
 * themselves when they need it.
 */
#ifndef CKPTCONV_REGISTRY_INTERNAL_H
#define CKPTCONV_REGISTRY_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/job.h"
#include "ckptconv/log.h"
#include "ckptconv/registry.h"

/* Threads that read and plan submitted jobs' sources; at most
 * SUBMIT_THREADS - 1 of them at a time on a submission that reaches the
 * object store (which may wait for credentials), so that one is always
 * there for local submissions. */
#define SUBMIT_THREADS 3

struct plan;
struct strvec;

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
	unsigned remote_submitting; /* submission threads on one that reaches the object store */
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

/* ---- registry.c: tables (lock held) ---------------------------------------- */

struct job *registry_find_locked(const struct registry *r, const char *id);
/* Inserts j at pos of a growable array of jobs. */
void registry_array_insert(struct job ***arr, size_t *n, size_t *cap, size_t pos, struct job *j);
void registry_array_remove(struct job **arr, size_t *n, size_t pos);
/* Adds j (taking the caller's reference) to both tables; -1 when its id
 * is taken. */
int registry_table_insert(struct registry *r, struct job *j);
/* Removes j from the tables; returns the table's reference. */
struct job *registry_table_remove(struct registry *r, struct job *j);
void registry_queue_add(struct registry *r, struct job *j);
void registry_set_state(struct registry *r, struct job *j, enum job_state s);
/* Seconds the running job j has gone without its bytes_done moving, as
 * sampled now and at earlier calls. */
double registry_watch_progress_locked(struct job *j, double now);

/* ---- registry.c: logs and final states --------------------------------------- */

/* A log line about j: what happened, and the error if any. */
void registry_log_job(enum log_level level, const struct job *j, const char *what,
		      const struct err *e);
/* Moves j to a final state (lock held); returns its running seconds. */
double registry_finish_locked(struct registry *r, struct job *j, enum job_state state,
			      const struct err *e, json_t *result);
/* What follows a final state: the record, the metrics, the log, and
 * the oldest finished record going if there are now too many. */
void registry_finished(struct registry *r, struct job *j, enum job_state state, double seconds,
		       const struct err *e);
/* registry_finish_locked then registry_finished. */
void registry_finish(struct registry *r, struct job *j, enum job_state state, const struct err *e,
		     json_t *result);
void registry_fail(struct registry *r, struct job *j, const struct err *e);
/* Puts a job stopped by a drain back in the queue for the next start (lock
 * held); it will run from the start.  registry_requeue also records and
 * logs it. */
void registry_requeue_locked(struct registry *r, struct job *j);
void registry_requeue(struct registry *r, struct job *j);

/* ---- registry_record.c: the state dir ----------------------------------------- */

/* Writes j's record; false (and the service marked not ready) on failure. */
bool registry_persist(struct registry *r, struct job *j);
/* Removes j's record, listing and states files. */
void registry_remove_files(struct registry *r, struct job *j);
void registry_write_states(struct registry *r, struct job *j, const uint8_t *states, size_t n);
/* Loads a finished job's final tensor states (lock held). */
void registry_load_states(struct registry *r, struct job *j);
/* Opens the job's tensor listing if it is not open yet (lock held). */
void registry_open_tensors(struct registry *r, struct job *j);
/* Writes the listing of conv's plan for j and makes it the job's, with
 * its totals (a partition's group) as the progress totals. */
int registry_install_tensors(struct registry *r, struct job *j, const struct conversion *conv,
			     bool durable, struct err *e);
/* Removes the records of finished jobs past retention. */
void registry_sweep_retention(struct registry *r);

/* ---- registry_run.c: the runners ------------------------------------------------ */

/* A runner thread: runs queued jobs until the registry stops. */
void *registry_runner_main(void *arg);
/* A job's result of a prepared or finished conversion
 * (conversion_result_to_json; a partition's says what it wrote). */
json_t *registry_conversion_result_json(const struct conversion *conv);
/* Builds j->store (the service's store configuration with j's options.s3
 * over it) and points j->spec.convert.store at it: called before any of
 * j's stores opens.  Code: s3_config. */
int registry_job_store(const struct registry *r, struct job *j, struct err *e);
/* Logs that a plan was made for j, its size and the seconds it took. */
void registry_log_planned(const struct job *j, const struct plan *plan, double seconds);
/* Notes where the credentials came from of a job whose source (NULL: none)
 * or destination is on the object store, once its stores are open (takes
 * the lock). */
void registry_note_credentials(struct registry *r, struct job *j, const char *src, const char *dst);
/* The error of a job cancelled by a DELETE request. */
void registry_cancel_error(struct err *e);
/* Removes what the last run of a job that will not run again left in its
 * claimed destination. */
void registry_clean_interrupted(struct registry *r, struct job *j);

/* ---- registry_submit.c: submissions ------------------------------------------- */

/* A submission thread: prepares pending submissions until the registry
 * stops and none is left. */
void *registry_submitter_main(void *arg);

#endif
