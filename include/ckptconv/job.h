/* SPDX-License-Identifier: MIT */
/*
 * job: one conversion job of the daemon: the request it was made from
 * (validated into a job_spec), its state machine
 * (queued -> running -> succeeded | failed | cancelled, and running ->
 * queued when the service stops), its JSON form for the API, its record in
 * the state dir (written atomically) and its per-tensor listing.
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
#include "ckptconv/util.h"

#define JOB_ID_LEN 16	  /* lowercase hex characters */
#define JOB_FIELD_MAX 128 /* longest JSON path reported as "field" */
#define JOB_LABELS_MAX 32
#define JOB_LABEL_KEY_MAX 63
#define JOB_LABEL_VALUE_MAX 256
#define JOB_CREDENTIALS_SOURCE_MAX 32

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

/* An error of a request: a catalogue error plus the JSON path of the field
 * at fault ("" when the request as a whole is). */
struct job_error {
	struct err err;
	char field[JOB_FIELD_MAX];
};
/* Sets je's error (first wins) and its field; returns -1. */
int job_error_set(struct job_error *je, const char *field, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* What a request may name.  Local paths must resolve inside allow_roots;
 * s3:// locations must start with one of allow_s3 (whole path components),
 * and options.s3 is checked by s3_options_check, which the S3 support sets
 * (NULL: requests naming options.s3 are refused).  state_dir is never a
 * destination. */
struct job_policy {
	const struct strvec *allow_roots;	 /* resolved directories */
	const struct strvec *allow_s3;		 /* "s3://bucket[/prefix]" */
	const struct strvec *allow_s3_endpoints; /* endpoint URLs options.s3 may name */
	const char *state_dir;			 /* resolved */
	int (*s3_options_check)(const json_t *s3, const struct job_policy *p, struct job_error *je);
	/* Called on the thread about to open a job's stores with its
	 * options.s3 (NULL when it has none), and with NULL once done; NULL:
	 * nothing to apply. */
	int (*s3_options_apply)(const json_t *s3, struct err *e);
	/* The name of the source the service's object store credentials came
	 * from (aws_credentials.h), or NULL (none yet); NULL: not told. */
	const char *(*s3_credentials_source)(void);
};

/* A validated request. */
struct job_spec {
	char *source, *destination; /* as given */
	enum layout to;
	json_t *options;		/* normalised: every option, defaults filled in */
	json_t *labels;			/* object of strings */
	struct convert_options convert; /* derived; exclude points into options */
	bool dry_run;
	/* options.finalize: finish a partitioned conversion in destination
	 * (partition.h); source and to are optional then (NULL / not given). */
	bool finalize;
	bool to_given;
};

/* Validates a request body (unknown_field, missing_field, invalid_field,
 * invalid_size; je->field names the member).  Does not look at the
 * filesystem. */
int job_spec_parse(const json_t *body, struct job_spec *spec, struct job_error *je);
void job_spec_fini(struct job_spec *spec);
/* The request as the API shows it: {"source","destination","to","options","labels"}
 * (options.s3 left out: it may hold credentials). */
json_t *job_spec_json(const struct job_spec *spec, bool for_record);

/* Checks source and destination against the policy and resolves them.
 * Codes: forbidden_path, forbidden_s3_location, forbidden_s3_endpoint,
 * invalid_field (relative path, destination overlapping the source). */
int job_spec_check(const struct job_spec *spec, const struct job_policy *p, char **resolved_source,
		   char **resolved_destination, struct job_error *je);

/* For finalize_options.check_source: refuses a manifest's source outside
 * the policy's allowed roots and prefixes (arg is the job_policy).
 * Codes: forbidden_path, forbidden_s3_location. */
int job_policy_check_source(const char *source, void *policy, struct err *e);

/* The per-tensor listing of a plan, kept as a file in the state dir and
 * mapped: for each output tensor in plan order, the JSON object without its
 * state ({"name","dtype","shape","bytes","file","sources","state":") so a
 * page of the listing is built by copying bytes.  Immutable; ref counted. */
struct job_tensors;
int job_tensors_write(const struct plan *plan, const char *path, bool durable, struct err *e);
int job_tensors_open(const char *path, struct job_tensors **out, struct err *e);
struct job_tensors *job_tensors_ref(struct job_tensors *t);
void job_tensors_unref(struct job_tensors *t);
size_t job_tensors_count(const struct job_tensors *t);
/* The fragment of tensor i (without its state and closing brace). */
void job_tensors_fragment(const struct job_tensors *t, size_t i, const char **out, size_t *len);

enum job_cancel { JOB_CANCEL_NONE = 0, JOB_CANCEL_USER, JOB_CANCEL_DRAIN };

struct job_progress {
	uint64_t tensors_total, tensors_done, bytes_total, bytes_done;
	double elapsed_seconds;
};

struct job {
	atomic_int refs;
	char id[JOB_ID_LEN + 1];
	uint64_t seq; /* creation order, for listing and FIFO */
	struct job_spec spec;
	char *resolved_source, *resolved_destination;
	char *idempotency_key;	 /* NULL if none */
	char request_sha256[65]; /* of the canonical request body */

	/* Protected by the registry lock. */
	enum job_state state;
	int64_t created_ms, started_ms, finished_ms; /* Unix ms; 0 = not yet */
	unsigned restarts;			     /* runs cut short by a crash */
	bool claimed; /* its output started: a rerun may replace it */
	enum job_cancel cancel;
	struct conversion *conv;      /* while running */
	struct job_progress progress; /* totals always; done as last seen */
	json_t *result;		      /* NULL until succeeded */
	struct err error;	      /* code NULL if none */
	uint8_t *tensor_states;	      /* final per-tensor states, or NULL */
	size_t ntensor_states;
	struct job_tensors *tensors; /* NULL until the listing exists */
	/* Where the object store credentials it used came from ("web_identity",
	 * ...; aws_credentials.h), "" when it used none. */
	char credentials_source[JOB_CREDENTIALS_SOURCE_MAX];
	double persisted_at;	     /* monotonic seconds of the last record write */
	bool deleted;		     /* removed from the registry */
	uint64_t version;	     /* bumped when a field of the API form changes */
	char *api_text;		     /* the API form as last built, or NULL */
	size_t api_text_len;
	uint64_t api_text_version;
	double api_text_at; /* monotonic seconds it was built */
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
void job_current_progress(const struct job *j, struct job_progress *out);
enum tensor_state job_tensor_state(const struct job *j, size_t i);

/* Locked.  The API form of the job (see docs/openapi.yaml). */
json_t *job_to_json(const struct job *j);
/* Locked.  The progress object of the API form. */
json_t *job_progress_json(const struct job *j);

/* Locked.  The record's JSON; job_from_record rebuilds a job from it
 * (codes: config_invalid naming what is wrong). */
json_t *job_record_json(const struct job *j);
int job_from_record(const json_t *record, struct job **out, struct err *e);

/* Writes `json` to dir/name atomically (temporary file, fsync, rename,
 * fsync of the directory).  Code io_error. */
int job_write_atomic(const char *dir, const char *name, const char *data, size_t len, bool durable,
		     struct err *e);

/* A growable byte buffer for responses built by copying (aborts on
 * out-of-memory, like xmalloc). */
struct job_buf {
	char *data;
	size_t len, cap;
};
void job_buf_append(struct job_buf *b, const char *s, size_t n);
void job_buf_puts(struct job_buf *b, const char *s);
void job_buf_printf(struct job_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string literal, quotes included. */
void job_buf_json_string(struct job_buf *b, const char *s);
void job_buf_fini(struct job_buf *b);

/* Parses a duration: "7d", "12h", "30m", "45s", "2w" or plain seconds;
 * code invalid_option. */
int job_parse_duration(const char *text, int64_t *ms, struct err *e);

#endif
