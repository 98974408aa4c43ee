/* SPDX-License-Identifier: MIT */
/*
 * job: one conversion job of the daemon: the request it was made from
 * (a job_spec, job_request.h), its state machine
 * (queued -> running -> succeeded | failed | cancelled, and running ->
 * queued when the service stops) and its JSON form for the API.  Its
 * record in the state dir is job_record.h, its per-tensor listing
 * job_tensors.h.
 *
 * Threads: a job is shared (registry, runner, HTTP threads) and reference
 * counted.  Its spec, id and seq never change after creation; every other
 * field is protected by the registry's lock (registry.h), which callers of
 * the functions marked "locked" hold.
 */
#ifndef CKPTCONV_JOB_H
#define CKPTCONV_JOB_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/job_request.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define JOB_ID_LEN 16 /* lowercase hex characters */
#define JOB_CREDENTIALS_SOURCE_MAX 32

struct job_tensors;

enum job_state {
	JOB_QUEUED = 0,
	JOB_RUNNING,
	JOB_SUCCEEDED,
	JOB_FAILED,
	JOB_CANCELLED,
	JOB_STATE_COUNT
};
const char *job_state_name(enum job_state s);
int job_state_parse(const char *name); /* -1 if unknown */
bool job_state_finished(enum job_state s);

enum job_cancel { JOB_CANCEL_NONE = 0, JOB_CANCEL_USER, JOB_CANCEL_DRAIN };

struct job {
	atomic_int refs;
	char id[JOB_ID_LEN + 1];
	uint64_t seq; /* creation order, for listing and FIFO */
	struct job_spec spec;
	char *resolved_source, *resolved_destination;
	/* What its stores talk to: the service's configuration with the
	 * job's options.s3 over it, built by the thread about to open its
	 * stores (its submitter, then its runner: one at a time) before each
	 * use; spec.convert.store points here then. */
	struct store_config store;
	char *idempotency_key;	 /* NULL if none */
	char request_sha256[65]; /* of the canonical request body */

	/* Protected by the registry lock. */
	enum job_state state;
	int64_t created_ms, started_ms, finished_ms; /* Unix ms; 0 = not yet */
	unsigned restarts;			     /* runs cut short by a crash */
	bool claimed; /* its output started: a rerun may replace it */
	enum job_cancel cancel;
	struct conversion *conv; /* while running */
	/* The conversion planned at submission, suspended (convert.h), kept
	 * for the runner so that a job's source is read and planned once per
	 * start; NULL once a runner took it, for dry runs and finalize jobs,
	 * and for jobs loaded from records (planned when they run).  Freed
	 * with the job. */
	struct conversion *prepared;
	struct exec_progress progress; /* totals always; done as last seen */
	json_t *result;		       /* NULL until succeeded */
	struct err error;	       /* code NULL if none */
	uint8_t *tensor_states;	       /* final per-tensor states, or NULL */
	size_t ntensor_states;
	struct job_tensors *tensors; /* NULL until the listing exists */
	double persisted_at;	     /* monotonic seconds of the last record write */
	bool deleted;		     /* removed from the registry */
	uint64_t version;	     /* bumped when a field of the API form changes */
	char *api_text;		     /* the API form as last built, or NULL */
	size_t api_text_len;
	uint64_t api_text_version;
	double api_text_at; /* monotonic seconds it was built */
	/* Where the object store credentials it used came from ("web_identity",
	 * ...; aws_credentials.h), "" when it used none. */
	char credentials_source[JOB_CREDENTIALS_SOURCE_MAX];
	/* Progress watch of a running job (ckptconv_job_stall_seconds): the
	 * run it belongs to (its started_ms), bytes_done as last seen and
	 * since when (monotonic seconds). */
	int64_t watch_started_ms;
	uint64_t watch_bytes;
	double watch_since;

	pthread_mutex_t write_lock; /* orders record writes of this job */
};

/* A new queued job with a fresh random id; takes over spec's contents. */
struct job *job_new(struct job_spec *spec, uint64_t seq);
struct job *job_ref(struct job *j);
void job_unref(struct job *j);

/* Wall clock in Unix milliseconds. */
int64_t job_now_ms(void);
/* "2025-01-02T03:04:05.678Z" into buf (at least 32 bytes). */
void job_format_time(int64_t ms, char *buf, size_t len);

/* Locked.  Current progress (from the running conversion when there is
 * one) and the state of tensor i. */
void job_current_progress(const struct job *j, struct exec_progress *out);
enum tensor_state job_tensor_state(const struct job *j, size_t i);

/* Locked.  The API form of the job (see docs/openapi.yaml). */
json_t *job_to_json(const struct job *j);
/* Locked.  The progress object of the API form. */
json_t *job_progress_json(const struct job *j);

/* Parses a duration: "7d", "12h", "30m", "45s", "2w" or plain seconds;
 * code invalid_option. */
int job_parse_duration(const char *text, int64_t *ms, struct err *e);

#endif
