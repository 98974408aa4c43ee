/* SPDX-License-Identifier: MIT */
/*
 * exec: the worker pool that runs plans.  One pool serves every conversion
 * of the process (the CLI's single run, or all of the daemon's jobs); the
 * pieces of the running conversions are shared out among its threads.
 * Source bytes are read in bounded bands copied into a per-worker buffer
 * (store_read) or through bounded views (store_view), see exec_read_mode;
 * each piece is assembled in a per-worker buffer of at most PLAN_PIECE_MAX
 * bytes (a plain copy goes straight through) and written once to its
 * output file; each worker holds an output file no other worker writes
 * while there is one (several only when fewer files with pieces left
 * than workers remain); a file is committed by the worker that finishes
 * its last piece.  Progress is counted with atomics and may be read from any
 * thread while the run goes on.  A SIGBUS from a source truncated under us
 * fails the run with an error naming the file; the process carries on
 * (a source read by copies reports the same error from the short read).
 */
#ifndef CKPTCONV_EXEC_H
#define CKPTCONV_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct err;
struct plan;
struct store;
struct store_identity;
struct exec_pool;
struct exec_run;

enum tensor_state { TENSOR_PENDING = 0, TENSOR_RUNNING, TENSOR_DONE, TENSOR_FAILED };
const char *tensor_state_name(enum tensor_state s);

/* Starts `threads` workers (0 = the CPUs this process may use).  Workers
 * block signals and are named "ckptconv-wN". */
struct exec_pool *exec_pool_new(unsigned threads, struct err *e);
void exec_pool_free(struct exec_pool *pool);   /* waits for the workers */
unsigned exec_pool_threads(const struct exec_pool *pool);
unsigned exec_pool_busy(const struct exec_pool *pool);

/* Runs fn(arg, i, e) for every i in [0, n), on the calling thread and up
 * to threads - 1 more (exec_pool_threads of the run's pool; at most one
 * per task), in no particular order; returns when all have returned.  fn
 * must be safe to call from several threads at once.  After a task fails
 * no new one starts; the result is -1 with the error of the lowest task
 * that failed, else 0.  Used where the work is not a plan's pieces (a
 * resumed conversion re-reading its kept files' CRC-32C). */
int exec_each(unsigned threads, size_t n, int (*fn)(void *arg, size_t i, struct err *e),
	      void *arg, struct err *e);

/* The CPUs this process may use: its affinity mask, limited by the cgroup
 * CPU quota (cpu.max, rounded up); at least 1. */
unsigned exec_cpus_available(void);
/* CPUs a cgroup v2 cpu.max line ("QUOTA PERIOD" or "max PERIOD") allows,
 * rounded up; 0 = no limit. */
unsigned exec_cpu_quota_limit(const char *cpu_max);

/* How workers read source bytes.  Copying bounded bands (at most
 * EXEC_BAND_MAX bytes, store_read) into a per-worker buffer is the default
 * for local sources: on machines whose page tables are virtualised, touching
 * a freshly mapped page costs more than copying it.  Mapped views
 * (store_view, one per op window) are the default for remote stores, whose
 * views are fetched whole. */
enum exec_read_mode { EXEC_READ_AUTO = 0, EXEC_READ_COPY, EXEC_READ_VIEW };
#define EXEC_BAND_MAX (1u << 20)

struct exec_options {
	uint64_t max_bytes_per_second;  /* source read rate cap; 0 = none */
	/* Only files with skip_file[i] false are written (partitions); NULL = all. */
	const bool *skip_file;
	/* Files a resumed conversion keeps from an earlier run (kept_file[i]
	 * true): not written, but counted as done in the progress; NULL =
	 * none. */
	const bool *kept_file;
	enum exec_read_mode read_mode;
	/* Called on the worker that published file `file` (renamed or
	 * uploaded under its final name) with the CRC-32C of its bytes
	 * (store_writer_crc32c) and its identity as published
	 * (store_writer_publish; kind STORE_ID_NONE when the store could not
	 * tell); a nonzero return with e set fails the run.  Called from
	 * several workers at once: it serialises itself.  NULL: not told. */
	int (*published)(void *arg, uint32_t file, uint32_t crc32c,
			 const struct store_identity *id, struct err *e);
	void *published_arg;
};

/* A run of one plan from `src` into prepared writers of `dst`. */
struct exec_run *exec_run_new(const struct plan *plan, struct store *src, struct store *dst,
			      const struct exec_options *o);
void exec_run_free(struct exec_run *run);

/* Runs to completion on the pool, blocking the caller: opens a writer per
 * output file, writes every piece, commits each file when complete.  On
 * failure or cancellation, aborts unfinished writers and removes files it
 * committed; returns -1 with e set (code "cancelled" when cancelled). */
int exec_run_execute(struct exec_run *run, struct exec_pool *pool, struct err *e);
/* Asks the run to stop between pieces.  Any thread (it takes the pool's
 * lock: not from a signal handler). */
void exec_run_cancel(struct exec_run *run);

struct exec_progress {
	uint64_t tensors_total, tensors_done;
	uint64_t bytes_total, bytes_done;   /* output tensor bytes */
	uint64_t bytes_kept;   /* of bytes_done, those of files kept from an
				* interrupted run: not written by this one */
	double elapsed_seconds;
};
void exec_run_progress(const struct exec_run *run, struct exec_progress *out);
enum tensor_state exec_run_tensor_state(const struct exec_run *run, size_t tensor);
/* Up to max output-tensor indices being worked on now; returns the count. */
size_t exec_run_in_flight(const struct exec_run *run, uint32_t *out, size_t max);

#endif
