/* SPDX-License-Identifier: MIT */
/*
 * exec: the worker pool and the runs it executes.  A run flattens its plan
 * into work items (one per piece, grouped by output file, in plan order
 * within each); idle workers take an unclaimed item from the active runs in
 * turn (where the destination locks files, each from an output file no
 * other worker is writing while there is one; elsewhere in plan order),
 * read the sources in bounded
 * bands copied into their own buffer (or through bounded views), assemble
 * the piece in their own piece buffer (a plain copy goes straight through)
 * and write it at its final offset.  The worker
 * that completes a file's last piece commits the file.  A run's read-rate
 * cap is applied when its pieces are handed out, so a throttled run never
 * holds a worker idle that another run could use.  A SIGBUS raised by a
 * source truncated under a mapping is caught on the worker and fails only
 * that run; a source changed since the run's store first opened it fails
 * the run before the next file is published.  The first failure or a
 * cancellation stops the run: no new pieces are handed out, pieces in
 * flight finish, unfinished outputs are aborted and files the run had
 * committed are removed.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/kernels.h"
#include "ckptconv/output.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

struct work_item {
	uint32_t tensor;
	uint32_t piece;
	uint64_t source_bytes; /* what the rate cap charges for it */
};

struct worker {
	struct exec_pool *pool;
	unsigned index;
	pthread_t thread;
	bool started;
	unsigned char *buffer;	/* PLAN_PIECE_MAX bytes, this worker's only */
	unsigned char *band;	/* EXEC_BAND_MAX bytes of source */
	struct store_view view; /* the view being read; survives a fault */
	/* The output file of its last piece (pool lock): the file it holds
	 * while no other worker takes it. */
	uint64_t last_run_id;
	uint32_t last_file;
};

struct exec_pool {
	pthread_mutex_t lock;
	pthread_cond_t work; /* signalled when pieces become available
			      * (CLOCK_MONOTONIC, for rate-capped runs) */
	unsigned nthreads;
	struct worker *workers;
	bool stopping;		   /* lock */
	struct exec_run *runs;	   /* active runs, lock */
	struct exec_run *next_run; /* where the round-robin resumes, lock */
	uint64_t run_ids;	   /* the last run id handed out, lock */
	_Atomic unsigned busy;
};

struct exec_run {
	const struct plan *plan;
	struct store *src, *dst;
	uint64_t max_bytes_per_second;
	bool *skip_file; /* nfiles entries */
	bool *kept_file; /* nfiles entries */
	int (*on_published)(void *arg, uint32_t file, uint32_t crc32c,
			    const struct store_identity *id, struct err *e);
	void *on_published_arg;
	bool copy_in;	/* sources read in bands, not views */
	bool fast_copy; /* plain copies may be written from views */
	bool own_files; /* workers hold output files of their own */

	struct work_item *items; /* grouped by output file, plan order within */
	size_t nitems;
	size_t *file_end; /* nfiles: one past a file's last item */

	/* Scheduling, protected by the pool's lock. */
	struct exec_run *next;	/* in pool->runs */
	uint64_t id;		/* while registered: nonzero, unique in the pool */
	pthread_cond_t changed; /* a piece finished or the run stopped */
	size_t *file_next;	/* nfiles: a file's next unclaimed item */
	unsigned *file_workers; /* nfiles: its pieces being written now */
	size_t first_open;	/* no file before it has unclaimed items */
	size_t items_claimed, items_finished, in_flight;
	bool stopped;
	bool executed;
	double rate_next; /* when the next piece may be handed out */

	_Atomic(struct exec_pool *) pool;
	atomic_bool cancelled;
	atomic_bool failed;

	pthread_mutex_t err_lock;
	struct err err; /* first failure, err_lock */

	/* Outputs. */
	struct store_writer **writers; /* NULL once committed or aborted */
	bool *published;
	_Atomic uint64_t *file_remaining;
	_Atomic uint32_t *tensor_remaining;
	atomic_uchar *tensor_state;

	/* Progress. */
	uint64_t tensors_total, bytes_total;
	uint64_t bytes_kept; /* of bytes_done, the kept files' (not written by this run) */
	_Atomic uint64_t tensors_done, bytes_done;
	_Atomic uint64_t start_ns, end_ns;
	_Atomic(_Atomic uint32_t *) slots; /* per worker: tensor + 1, 0 = idle */
	_Atomic unsigned nslots;
};

const char *tensor_state_name(enum tensor_state s)
{
	switch (s) {
	case TENSOR_PENDING:
		return "pending";
	case TENSOR_RUNNING:
		return "running";
	case TENSOR_DONE:
		return "done";
	case TENSOR_FAILED:
		return "failed";
	}
	return "unknown";
}

/* ---- SIGBUS from truncated sources ------------------------------------ */

static __thread sigjmp_buf *volatile fault_jump;
static pthread_once_t fault_handler_once = PTHREAD_ONCE_INIT;

static void on_fault(int sig, siginfo_t *info, void *context)
{
	(void)info;
	(void)context;
	if (fault_jump)
		siglongjmp(*fault_jump, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_fault_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	/* SA_NODEFER: leaving the handler by siglongjmp leaves SIGBUS
	 * deliverable without saving and restoring the mask around every op
	 * (a system call each). */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

/* Runs a plan op with the kernels: src at the op's first source byte,
 * piece at the first byte of the piece the op fills. */
static void run_op(const struct plan_op *op, const unsigned char *src, unsigned char *piece)
{
	const struct kern_op k = {
		.transpose = op->transpose,
		.src_dtype = op->src_dtype,
		.dst_dtype = op->dst_dtype,
		.rows = op->rows,
		.cols = op->cols,
		.src_stride = op->src_stride,
		.dst_stride = op->dst_stride,
	};

	kern_run_op(&k, src, piece + op->dst_offset);
}

/* Runs an op over mapped source bytes; false when the source faulted. */
static bool run_op_guarded(const struct plan_op *op, const unsigned char *src, unsigned char *dst)
{
	sigjmp_buf jump;
	sigset_t bus;

	if (sigsetjmp(jump, 0)) {
		fault_jump = NULL;
		sigemptyset(&bus);
		sigaddset(&bus, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
		return false;
	}
	fault_jump = &jump;
	run_op(op, src, dst);
	fault_jump = NULL;
	return true;
}

/* ---- failing and stopping a run --------------------------------------- */

static void run_record_error(struct exec_run *run, const struct err *e)
{
	pthread_mutex_lock(&run->err_lock);
	if (!run->err.code && e->code)
		run->err = *e;
	pthread_mutex_unlock(&run->err_lock);
	if (e->code && e->code != ERR_CANCELLED)
		atomic_store(&run->failed, true);
}

static bool run_stopping(const struct exec_run *run)
{
	return atomic_load(&run->cancelled) || atomic_load(&run->failed);
}

static int cancelled_error(struct err *e)
{
	return err_set(e, ERR_CANCELLED, "conversion cancelled");
}

/* ---- executing one piece ---------------------------------------------- */

static const char *source_file_name(const struct exec_run *run, const struct plan_op *op)
{
	const struct ckpt *c = run->plan->src;

	return c->files[c->tensors[op->src].file].name;
}

static uint64_t op_window_len(const struct plan_op *op)
{
	if (op->rows == 0 || op->cols == 0)
		return 0;
	return (op->rows - 1) * op->src_stride + op->cols * dtype_size(op->src_dtype);
}

static int source_truncated(struct err *e, const struct exec_run *run, const char *file)
{
	return err_set(e, ERR_SOURCE_TRUNCATED,
		       "%s/%s: source file shrank while being read (truncated during conversion?)",
		       run->src->location, file);
}

/* Maps the op's source window into w->view. */
static int view_op_source(struct worker *w, struct exec_run *run, const struct plan_op *op,
			  struct err *e)
{
	const struct ckpt_tensor *t = &run->plan->src->tensors[op->src];
	const char *file = source_file_name(run, op);
	uint64_t len = op_window_len(op);
	int rc;

	rc = store_view(run->src, file, t->offset + op->src_offset, (size_t)len, &w->view, e);
	if (rc != 0 && e->code && e->code == ERR_FILE_TRUNCATED) {
		/* The file was whole when the checkpoint was opened. */
		err_clear(e);
		return source_truncated(e, run, file);
	}
	return rc;
}

static void release_view(struct worker *w)
{
	if (w->view.base || w->view.data) {
		store_view_release(&w->view);
		memset(&w->view, 0, sizeof(w->view));
	}
}

/* A plain copy: same dtype, no transpose, contiguous source and
 * destination, so its bytes are the view's bytes. */
static bool op_is_plain_copy(const struct plan_op *op)
{
	uint64_t row_bytes = op->cols * dtype_size(op->src_dtype);

	return !op->transpose && op->src_dtype == op->dst_dtype &&
	       (op->rows == 1 || (op->src_stride == row_bytes && op->dst_stride == row_bytes));
}

static bool piece_is_plain_copy(const struct plan_tensor *t, const struct plan_piece *pc)
{
	uint32_t i;

	for (i = 0; i < pc->nops; i++)
		if (!op_is_plain_copy(&t->ops[pc->first_op + i]))
			return false;
	return true;
}

/* Writes bytes that come from a source mapping: a fault while the kernel
 * reads the mapping arrives as EFAULT instead of SIGBUS. */
static int write_from_view(const struct exec_run *run, struct store_writer *wr, uint64_t off,
			   const struct store_view *v, const char *file, struct err *e)
{
	struct err werr;
	sigjmp_buf jump;
	int rc;

	err_clear(&werr);
	/* The store computes the bytes' checksum on this thread: a fault
	 * there is a SIGBUS. */
	if (sigsetjmp(jump, 0)) {
		sigset_t bus;

		fault_jump = NULL;
		sigemptyset(&bus);
		sigaddset(&bus, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
		return source_truncated(e, run, file);
	}
	fault_jump = &jump;
	rc = store_writer_write(wr, off, v->data, v->len, &werr);
	fault_jump = NULL;
	if (rc == 0)
		return 0;
	if (werr.errnum == EFAULT)
		return source_truncated(e, run, file);
	*e = werr;
	return -1;
}

static int write_plain_copy(struct worker *w, struct exec_run *run, const struct plan_tensor *t,
			    const struct plan_piece *pc, struct err *e)
{
	struct store_writer *wr = run->writers[t->file];
	uint32_t i;
	int rc = 0;

	for (i = 0; i < pc->nops && rc == 0; i++) {
		const struct plan_op *op = &t->ops[pc->first_op + i];
		uint64_t off = t->offset + pc->offset + op->dst_offset;

		if (view_op_source(w, run, op, e) != 0)
			return -1;
		rc = write_from_view(run, wr, off, &w->view, source_file_name(run, op), e);
		release_view(w);
	}
	return rc;
}

/* ---- reading sources in bands ------------------------------------------ */

/* Copies [off, off+len) of the op's source tensor into w->band. */
static int read_band(struct worker *w, struct exec_run *run, const struct plan_op *op, uint64_t off,
		     size_t len, struct err *e)
{
	const struct ckpt_tensor *t = &run->plan->src->tensors[op->src];
	const char *file = source_file_name(run, op);

	if (store_read(run->src, file, t->offset + off, w->band, len, e) == 0)
		return 0;
	if (e->code && e->code == ERR_FILE_TRUNCATED) {
		/* The file was whole when the checkpoint was opened. */
		err_clear(e);
		return source_truncated(e, run, file);
	}
	return -1;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* The part of op covering source rows [r, r+n) and columns [c, c+m). */
static struct plan_op sub_op(const struct plan_op *op, uint64_t r, uint64_t n, uint64_t c,
			     uint64_t m)
{
	size_t isize = dtype_size(op->src_dtype), osize = dtype_size(op->dst_dtype);
	struct plan_op sub = *op;

	sub.rows = n;
	sub.cols = m;
	sub.src_offset = op->src_offset + r * op->src_stride + c * isize;
	if (op->transpose)
		sub.dst_offset = op->dst_offset + c * op->dst_stride + r * osize;
	else
		sub.dst_offset = op->dst_offset + r * op->dst_stride + c * osize;
	return sub;
}

static int run_sub_op(struct worker *w, struct exec_run *run, const struct plan_op *sub,
		      unsigned char *piece, struct err *e)
{
	if (read_band(w, run, sub, sub->src_offset, (size_t)op_window_len(sub), e) != 0)
		return -1;
	/* The band starts at the op's source offset. */
	run_op(sub, w->band, piece);
	return 0;
}

/* Runs op through w->band: bands of whole source rows, or pieces of one
 * row when a row alone is larger than a band. */
static int run_op_banded(struct worker *w, struct exec_run *run, const struct plan_op *op,
			 unsigned char *piece, struct err *e)
{
	uint64_t row_bytes = op->cols * dtype_size(op->src_dtype);
	uint64_t r, c, band_rows, band_cols;
	struct plan_op sub;

	if (row_bytes <= EXEC_BAND_MAX) {
		band_rows = op->src_stride ? 1 + (EXEC_BAND_MAX - row_bytes) / op->src_stride :
					     op->rows;
		for (r = 0; r < op->rows; r += band_rows) {
			sub = sub_op(op, r, min_u64(band_rows, op->rows - r), 0, op->cols);
			if (run_sub_op(w, run, &sub, piece, e) != 0)
				return -1;
		}
		return 0;
	}
	band_cols = EXEC_BAND_MAX / dtype_size(op->src_dtype);
	for (r = 0; r < op->rows; r++) {
		for (c = 0; c < op->cols; c += band_cols) {
			sub = sub_op(op, r, 1, c, min_u64(band_cols, op->cols - c));
			if (run_sub_op(w, run, &sub, piece, e) != 0)
				return -1;
		}
	}
	return 0;
}

/* A plain copy through w->band, a band at a time: read, then write. */
static int copy_plain_piece(struct worker *w, struct exec_run *run, const struct plan_tensor *t,
			    const struct plan_piece *pc, struct err *e)
{
	struct store_writer *wr = run->writers[t->file];
	uint32_t i;

	for (i = 0; i < pc->nops; i++) {
		const struct plan_op *op = &t->ops[pc->first_op + i];
		uint64_t len = op->rows * op->cols * dtype_size(op->src_dtype), k;

		for (k = 0; k < len; k += EXEC_BAND_MAX) {
			size_t n = (size_t)min_u64(EXEC_BAND_MAX, len - k);

			if (read_band(w, run, op, op->src_offset + k, n, e) != 0 ||
			    store_writer_write(wr, t->offset + pc->offset + op->dst_offset + k,
					       w->band, n, e) != 0)
				return -1;
		}
	}
	return 0;
}

/* Writes in chunks of a band: workers writing one file take turns on its
 * lock instead of one waiting out another's whole piece. */
static int write_chunked(struct store_writer *wr, uint64_t off, const unsigned char *buf,
			 uint64_t len, struct err *e)
{
	uint64_t k;

	for (k = 0; k < len; k += EXEC_BAND_MAX)
		if (store_writer_write(wr, off + k, buf + k,
				       (size_t)min_u64(EXEC_BAND_MAX, len - k), e))
			return -1;
	return 0;
}

static int assemble_piece(struct worker *w, struct exec_run *run, const struct plan_tensor *t,
			  const struct plan_piece *pc, struct err *e)
{
	uint32_t i;

	if (pc->zero_fill)
		memset(w->buffer, 0, pc->nbytes);
	for (i = 0; i < pc->nops; i++) {
		const struct plan_op *op = &t->ops[pc->first_op + i];
		bool ok;

		if (run->copy_in) {
			if (run_op_banded(w, run, op, w->buffer, e) != 0)
				return -1;
			continue;
		}
		if (view_op_source(w, run, op, e) != 0)
			return -1;
		ok = run_op_guarded(op, w->view.data, w->buffer);
		release_view(w);
		if (!ok)
			return source_truncated(e, run, source_file_name(run, op));
	}
	return write_chunked(run->writers[t->file], t->offset + pc->offset, w->buffer, pc->nbytes,
			     e);
}

static int write_piece(struct worker *w, struct exec_run *run, const struct work_item *it,
		       struct err *e)
{
	const struct plan_tensor *t = &run->plan->tensors[it->tensor];
	const struct plan_piece *pc = &t->pieces[it->piece];
	bool plain = !pc->zero_fill && piece_is_plain_copy(t, pc);

	if (run->copy_in && !w->band)
		w->band = xmalloc(EXEC_BAND_MAX);
	if (run->copy_in && plain)
		return copy_plain_piece(w, run, t, pc, e);
	if (!run->copy_in && plain && run->fast_copy)
		return write_plain_copy(w, run, t, pc, e);
	if (!w->buffer)
		w->buffer = xmalloc(PLAN_PIECE_MAX);
	return assemble_piece(w, run, t, pc, e);
}

/* The file's last piece is written: make it durable and publish it.  Its
 * sources have been read for the last time for this file; every source
 * read so far is checked against the version the run started on first,
 * so a published file holds one version of each (store_check_sources). */
static int commit_file(struct exec_run *run, uint32_t file, struct err *e)
{
	struct store_writer *wr = run->writers[file];
	struct store_identity id;
	uint32_t crc;

	if (atomic_load(&run->failed))
		return 0; /* run_cleanup aborts it */
	if (store_check_sources(run->src, e) != 0 || store_writer_crc32c(wr, &crc, e) != 0)
		return -1; /* run_cleanup aborts it */
	run->writers[file] = NULL;
	if (store_writer_publish(wr, &id, e) != 0)
		return -1;
	run->published[file] = true;
	if (run->on_published)
		return run->on_published(run->on_published_arg, file, crc, &id, e);
	return 0;
}

static int finish_piece(struct exec_run *run, const struct work_item *it, struct err *e)
{
	const struct plan_tensor *t = &run->plan->tensors[it->tensor];

	atomic_fetch_add(&run->bytes_done, t->pieces[it->piece].nbytes);
	if (atomic_fetch_sub(&run->tensor_remaining[it->tensor], 1) == 1) {
		atomic_store(&run->tensor_state[it->tensor], TENSOR_DONE);
		atomic_fetch_add(&run->tensors_done, 1);
	}
	if (atomic_fetch_sub(&run->file_remaining[t->file], 1) == 1)
		return commit_file(run, t->file, e);
	return 0;
}

static bool run_item(struct worker *w, struct exec_run *run, size_t item)
{
	const struct work_item *it = &run->items[item];
	_Atomic uint32_t *slots = atomic_load(&run->slots);
	unsigned char pending = TENSOR_PENDING;
	struct err e;
	int rc;

	err_clear(&e);
	atomic_store(&slots[w->index], it->tensor + 1);
	atomic_compare_exchange_strong(&run->tensor_state[it->tensor], &pending, TENSOR_RUNNING);
	rc = write_piece(w, run, it, &e);
	/* The piece's bytes are written: committing its file (fsync) is not
	 * work on the tensor, so it no longer counts as in flight. */
	atomic_store(&slots[w->index], 0);
	if (rc == 0)
		rc = finish_piece(run, it, &e);
	if (rc == 0)
		return true;
	if (e.code && e.code != ERR_CANCELLED) {
		atomic_store(&run->tensor_state[it->tensor], TENSOR_FAILED);
		err_set_tensor(&e, run->plan->tensors[it->tensor].name);
	}
	run_record_error(run, &e);
	return false;
}

/* ---- the pool ---------------------------------------------------------- */

static bool run_has_work(const struct exec_run *run)
{
	return !run->stopped && !run_stopping(run) && run->items_claimed < run->nitems;
}

static bool file_has_work(const struct exec_run *run, size_t f)
{
	return run->file_next[f] < run->file_end[f];
}

/* The output file w's next piece of run comes from; the run has work.
 * Without STORE_FILE_WRITE_LOCK, the first file with pieces left (plan
 * order).  With it, writers of one file queue on its lock (the inode's, in
 * a local filesystem), so each worker holds a file of its own: the file of its
 * last piece while it has pieces left and no other worker took it over,
 * else the first file nobody is writing.  Only when every file with
 * pieces left is being written (fewer such files than workers) does a
 * worker join one: the one with the fewest writers, then the most pieces
 * left.  Pool lock held. */
static size_t choose_file(struct exec_run *run, const struct worker *w)
{
	const size_t nfiles = run->plan->nfiles;
	size_t f, best = nfiles;

	while (run->first_open < nfiles && !file_has_work(run, run->first_open))
		run->first_open++;
	if (!run->own_files)
		return run->first_open;
	if (w->last_run_id == run->id && w->last_file < nfiles &&
	    file_has_work(run, w->last_file) && run->file_workers[w->last_file] == 0)
		return w->last_file;
	for (f = run->first_open; f < nfiles; f++) {
		if (!file_has_work(run, f))
			continue;
		if (run->file_workers[f] == 0)
			return f;
		if (best == nfiles || run->file_workers[f] < run->file_workers[best] ||
		    (run->file_workers[f] == run->file_workers[best] &&
		     run->file_end[f] - run->file_next[f] >
			     run->file_end[best] - run->file_next[best]))
			best = f;
	}
	return best;
}

/* The rate cap: a capped run's pieces are handed out no faster than its
 * rate allows, so waiting for it never occupies a worker that another run
 * could use.  Pool lock held. */
static bool rate_allows(struct exec_run *run, size_t item, double now, double *wake)
{
	if (!run->max_bytes_per_second)
		return true;
	if (run->rate_next > now) {
		if (*wake == 0 || run->rate_next < *wake)
			*wake = run->rate_next;
		return false;
	}
	run->rate_next =
		now + (double)run->items[item].source_bytes / (double)run->max_bytes_per_second;
	return true;
}

/* Takes w's next piece from the runs in turn; pool lock held.  *wake is
 * set to when a rate-capped run may next be served (0 = no such run). */
static struct exec_run *claim_piece(struct exec_pool *pool, struct worker *w, size_t *item,
				    double *wake)
{
	struct exec_run *start = pool->next_run ? pool->next_run : pool->runs;
	struct exec_run *run = start;
	double now = now_seconds();

	*wake = 0;
	if (!run)
		return NULL;
	do {
		size_t f = run_has_work(run) ? choose_file(run, w) : run->plan->nfiles;

		if (f < run->plan->nfiles && rate_allows(run, run->file_next[f], now, wake)) {
			*item = run->file_next[f]++;
			run->file_workers[f]++;
			run->items_claimed++;
			run->in_flight++;
			w->last_run_id = run->id;
			w->last_file = (uint32_t)f;
			pool->next_run = run->next ? run->next : pool->runs;
			return run;
		}
		run = run->next ? run->next : pool->runs;
	} while (run != start);
	return NULL;
}

/* Sleeps until work arrives or, with a rate-capped run waiting, until
 * its next piece is due.  Pool lock held. */
static void wait_for_work(struct exec_pool *pool, double wake)
{
	struct timespec ts;

	if (wake == 0) {
		pthread_cond_wait(&pool->work, &pool->lock);
		return;
	}
	ts.tv_sec = (time_t)wake;
	ts.tv_nsec = (long)((wake - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	pthread_cond_timedwait(&pool->work, &pool->lock, &ts);
}

static bool run_settled(const struct exec_run *run)
{
	return run->items_finished == run->nitems || (run->stopped && run->in_flight == 0);
}

/* Pool lock held. */
static void release_piece(struct exec_run *run, size_t item, bool ok)
{
	run->file_workers[run->plan->tensors[run->items[item].tensor].file]--;
	run->in_flight--;
	if (ok)
		run->items_finished++;
	else
		run->stopped = true;
	if (run_settled(run) || run->stopped)
		pthread_cond_broadcast(&run->changed);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct exec_pool *pool = w->pool;
	char name[16];

	snprintf(name, sizeof(name), "ckptconv-w%u", w->index);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&pool->lock);
	while (!pool->stopping) {
		struct exec_run *run;
		double wake;
		size_t item;
		bool ok;

		run = claim_piece(pool, w, &item, &wake);
		if (!run) {
			wait_for_work(pool, wake);
			continue;
		}
		atomic_fetch_add(&pool->busy, 1);
		pthread_mutex_unlock(&pool->lock);
		ok = run_item(w, run, item);
		pthread_mutex_lock(&pool->lock);
		atomic_fetch_sub(&pool->busy, 1);
		release_piece(run, item, ok);
	}
	pthread_mutex_unlock(&pool->lock);
	free(w->buffer);
	free(w->band);
	w->buffer = w->band = NULL;
	return NULL;
}

static int start_worker(struct worker *w, struct err *e)
{
	sigset_t all, old;
	int rc;

	/* Created with every signal but the fault signals blocked, so the
	 * process's handlers run on the threads that expect them. */
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return err_set_errno(e, ERR_INTERNAL_ERROR, rc, "cannot start worker thread %u",
				     w->index);
	w->started = true;
	return 0;
}

struct exec_pool *exec_pool_new(unsigned threads, struct err *e)
{
	struct exec_pool *pool = xcalloc(1, sizeof(*pool));
	pthread_condattr_t attr;
	unsigned i;

	pthread_once(&fault_handler_once, install_fault_handler);
	pool->nthreads = threads ? threads : exec_cpus_available();
	pthread_mutex_init(&pool->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool->work, &attr);
	pthread_condattr_destroy(&attr);
	pool->workers = xcalloc(pool->nthreads, sizeof(*pool->workers));
	for (i = 0; i < pool->nthreads; i++) {
		pool->workers[i].pool = pool;
		pool->workers[i].index = i;
		if (start_worker(&pool->workers[i], e) != 0)
			goto out_free;
	}
	return pool;
out_free:
	exec_pool_free(pool);
	return NULL;
}

void exec_pool_free(struct exec_pool *pool)
{
	unsigned i;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->work);
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; i < pool->nthreads; i++)
		if (pool->workers[i].started)
			pthread_join(pool->workers[i].thread, NULL);
	pthread_cond_destroy(&pool->work);
	pthread_mutex_destroy(&pool->lock);
	free(pool->workers);
	free(pool);
}

unsigned exec_pool_threads(const struct exec_pool *pool)
{
	return pool->nthreads;
}

unsigned exec_pool_busy(const struct exec_pool *pool)
{
	return atomic_load(&((struct exec_pool *)pool)->busy);
}

/* ---- runs -------------------------------------------------------------- */

/* Not written by this run: another partition's, or kept from an earlier
 * run (which still counts in the progress). */
static bool file_skipped(const struct exec_run *run, uint32_t file)
{
	return run->skip_file[file] || run->kept_file[file];
}

/* A kept file's tensors are done before the run starts. */
static void count_kept(struct exec_run *run, size_t t)
{
	const struct plan_tensor *pt = &run->plan->tensors[t];

	atomic_store(&run->tensor_state[t], TENSOR_DONE);
	run->tensors_total++;
	run->bytes_total += pt->nbytes;
	atomic_fetch_add(&run->tensors_done, 1);
	atomic_fetch_add(&run->bytes_done, pt->nbytes);
	run->bytes_kept += pt->nbytes;
}

static uint64_t piece_source_bytes(const struct plan_tensor *t, const struct plan_piece *pc)
{
	uint64_t n = 0;
	uint32_t i;

	for (i = 0; i < pc->nops; i++)
		n += op_window_len(&t->ops[pc->first_op + i]);
	return n;
}

/* Work items grouped by output file, in plan order within each, and the
 * counts that tell when a tensor or a file is complete. */
static void run_flatten(struct exec_run *run)
{
	const struct plan *p = run->plan;
	size_t t, f, n = 0;
	uint32_t k;

	run->file_end = xcalloc(p->nfiles, sizeof(*run->file_end));
	run->file_next = xcalloc(p->nfiles, sizeof(*run->file_next));
	run->file_workers = xcalloc(p->nfiles, sizeof(*run->file_workers));
	for (t = 0; t < p->ntensors; t++)
		if (!file_skipped(run, p->tensors[t].file))
			run->file_end[p->tensors[t].file] += p->tensors[t].npieces;
	/* file_next: where each file's items start; file_end: their end. */
	for (f = 0; f < p->nfiles; f++) {
		run->file_next[f] = n;
		n += run->file_end[f];
		run->file_end[f] = run->file_next[f];
	}
	run->items = xcalloc(n, sizeof(*run->items));
	run->nitems = n;
	for (t = 0; t < p->ntensors; t++) {
		const struct plan_tensor *pt = &p->tensors[t];

		if (run->kept_file[pt->file] && !run->skip_file[pt->file])
			count_kept(run, t);
		if (file_skipped(run, pt->file))
			continue;
		for (k = 0; k < pt->npieces; k++)
			run->items[run->file_end[pt->file]++] = (struct work_item){
				(uint32_t)t, k, piece_source_bytes(pt, &pt->pieces[k])};
		atomic_init(&run->tensor_remaining[t], pt->npieces);
		atomic_fetch_add(&run->file_remaining[pt->file], pt->npieces);
		run->tensors_total++;
		run->bytes_total += pt->nbytes;
	}
}

struct exec_run *exec_run_new(const struct plan *plan, struct store *src, struct store *dst,
			      const struct exec_options *o)
{
	struct exec_run *run = xcalloc(1, sizeof(*run));
	size_t i;

	run->plan = plan;
	run->src = src;
	run->dst = dst;
	run->max_bytes_per_second = o ? o->max_bytes_per_second : 0;
	/* A store that kept our buffers past the call could fault on a
	 * mapping outside our guard: only one done with them in the call is
	 * written from views. */
	run->fast_copy = dst && (store_caps(dst) & STORE_WRITES_IN_CALL);
	/* Writers of one file wait for each other only where the store
	 * locks the file; elsewhere plan order keeps few files unfinished
	 * (an object store buffers each one's incomplete part). */
	run->own_files = dst && (store_caps(dst) & STORE_FILE_WRITE_LOCK);
	/* A remote source is read into fetched views whatever the mode: bands
	 * would be a request each. */
	run->copy_in = (store_caps(src) & STORE_CHEAP_READ) != 0 &&
		       (!o || o->read_mode != EXEC_READ_VIEW);
	run->skip_file = xcalloc(plan->nfiles, sizeof(bool));
	if (o && o->skip_file)
		memcpy(run->skip_file, o->skip_file, plan->nfiles * sizeof(bool));
	run->kept_file = xcalloc(plan->nfiles, sizeof(bool));
	if (o && o->kept_file)
		memcpy(run->kept_file, o->kept_file, plan->nfiles * sizeof(bool));
	run->on_published = o ? o->published : NULL;
	run->on_published_arg = o ? o->published_arg : NULL;
	run->writers = xcalloc(plan->nfiles, sizeof(*run->writers));
	run->published = xcalloc(plan->nfiles, sizeof(bool));
	run->file_remaining = xcalloc(plan->nfiles, sizeof(*run->file_remaining));
	run->tensor_remaining = xcalloc(plan->ntensors, sizeof(*run->tensor_remaining));
	run->tensor_state = xcalloc(plan->ntensors, sizeof(*run->tensor_state));
	for (i = 0; i < plan->ntensors; i++)
		atomic_init(&run->tensor_state[i], TENSOR_PENDING);
	pthread_cond_init(&run->changed, NULL);
	pthread_mutex_init(&run->err_lock, NULL);
	run_flatten(run);
	return run;
}

void exec_run_free(struct exec_run *run)
{
	size_t i;

	if (!run)
		return;
	for (i = 0; i < run->plan->nfiles; i++)
		store_writer_abort(run->writers[i]);
	pthread_mutex_destroy(&run->err_lock);
	pthread_cond_destroy(&run->changed);
	free((void *)atomic_load(&run->slots));
	free(run->tensor_state);
	free(run->tensor_remaining);
	free(run->file_remaining);
	free(run->published);
	free(run->writers);
	free(run->skip_file);
	free(run->kept_file);
	free(run->items);
	free(run->file_end);
	free(run->file_next);
	free(run->file_workers);
	free(run);
}

void exec_run_cancel(struct exec_run *run)
{
	struct exec_pool *pool;

	atomic_store(&run->cancelled, true);
	pool = atomic_load(&run->pool);
	if (pool) {
		pthread_mutex_lock(&pool->lock);
		pthread_cond_broadcast(&run->changed);
		pthread_mutex_unlock(&pool->lock);
	}
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Opens a temporary output per file and writes its header. */
static int open_writers(struct exec_run *run, struct err *e)
{
	const struct plan *p = run->plan;
	size_t f;

	for (f = 0; f < p->nfiles; f++) {
		const struct plan_file *pf = &p->files[f];

		if (file_skipped(run, (uint32_t)f))
			continue;
		if (store_writer_open(run->dst, pf->name, pf->size, &run->writers[f], e) != 0)
			return -1;
		if (store_writer_write(run->writers[f], 0, pf->header, pf->header_len, e) != 0)
			return -1;
	}
	return 0;
}

/* Files and tensors without data bytes are complete before any piece. */
static int finish_empty(struct exec_run *run, struct err *e)
{
	const struct plan *p = run->plan;
	size_t i;

	for (i = 0; i < p->ntensors; i++) {
		if (file_skipped(run, p->tensors[i].file) || p->tensors[i].npieces)
			continue;
		atomic_store(&run->tensor_state[i], TENSOR_DONE);
		atomic_fetch_add(&run->tensors_done, 1);
	}
	for (i = 0; i < p->nfiles; i++)
		if (run->writers[i] && atomic_load(&run->file_remaining[i]) == 0 &&
		    commit_file(run, (uint32_t)i, e) != 0)
			return -1;
	return 0;
}

static void pool_register(struct exec_pool *pool, struct exec_run *run)
{
	run->id = ++pool->run_ids;
	run->next = pool->runs;
	pool->runs = run;
	pthread_cond_broadcast(&pool->work);
}

static void pool_unregister(struct exec_pool *pool, struct exec_run *run)
{
	struct exec_run **p;

	for (p = &pool->runs; *p; p = &(*p)->next) {
		if (*p == run) {
			*p = run->next;
			break;
		}
	}
	if (pool->next_run == run)
		pool->next_run = pool->runs;
	run->next = NULL;
}

/* Blocks until every piece is written, or until the run stopped and no
 * piece is in flight any more. */
static void wait_for_run(struct exec_pool *pool, struct exec_run *run)
{
	pthread_mutex_lock(&pool->lock);
	pool_register(pool, run);
	for (;;) {
		if (run_stopping(run))
			run->stopped = true;
		if (run_settled(run))
			break;
		pthread_cond_wait(&run->changed, &pool->lock);
	}
	pool_unregister(pool, run);
	pthread_mutex_unlock(&pool->lock);
}

/* Undoes a failed run: unfinished outputs discarded, published ones removed. */
static void run_cleanup(struct exec_run *run)
{
	const struct plan *p = run->plan;
	size_t i;

	for (i = 0; i < p->nfiles; i++) {
		store_writer_abort(run->writers[i]);
		run->writers[i] = NULL;
		if (run->published[i]) {
			output_remove_after_failure(run->dst, p->files[i].name);
			run->published[i] = false;
		}
	}
	for (i = 0; i < p->ntensors; i++) {
		unsigned char running = TENSOR_RUNNING;

		atomic_compare_exchange_strong(&run->tensor_state[i], &running, TENSOR_PENDING);
	}
}

static int run_result(struct exec_run *run, struct err *e)
{
	int rc = 0;

	pthread_mutex_lock(&run->err_lock);
	if (run->err.code) {
		if (e && !e->code)
			*e = run->err;
		rc = -1;
	}
	pthread_mutex_unlock(&run->err_lock);
	if (rc == 0 && run->items_finished < run->nitems) {
		/* Stopped without an error of its own: a cancel. */
		rc = cancelled_error(e);
	}
	return rc;
}

int exec_run_execute(struct exec_run *run, struct exec_pool *pool, struct err *e)
{
	struct err local;
	int rc = -1;

	err_clear(&local);
	if (run->executed)
		return err_set(e, ERR_INTERNAL_ERROR, "a run executes only once");
	run->executed = true;
	atomic_store(&run->slots, xcalloc(pool->nthreads, sizeof(_Atomic uint32_t)));
	atomic_store(&run->nslots, pool->nthreads);
	atomic_store(&run->start_ns, monotonic_ns());
	atomic_store(&run->pool, pool);
	if (atomic_load(&run->cancelled))
		cancelled_error(&local);
	else if (open_writers(run, &local) == 0 && finish_empty(run, &local) == 0)
		wait_for_run(pool, run);
	if (local.code)
		run_record_error(run, &local);
	rc = run_result(run, e);
	if (rc != 0)
		run_cleanup(run);
	atomic_store(&run->end_ns, monotonic_ns());
	return rc;
}

void exec_run_progress(const struct exec_run *run, struct exec_progress *out)
{
	struct exec_run *r = (struct exec_run *)run;
	uint64_t start = atomic_load(&r->start_ns), end = atomic_load(&r->end_ns);

	memset(out, 0, sizeof(*out));
	out->tensors_total = run->tensors_total;
	out->bytes_total = run->bytes_total;
	out->tensors_done = atomic_load(&r->tensors_done);
	out->bytes_done = atomic_load(&r->bytes_done);
	out->bytes_kept = run->bytes_kept;
	if (start)
		out->elapsed_seconds = (double)((end ? end : monotonic_ns()) - start) / 1e9;
}

enum tensor_state exec_run_tensor_state(const struct exec_run *run, size_t tensor)
{
	if (tensor >= run->plan->ntensors)
		return TENSOR_PENDING;
	return (enum tensor_state)atomic_load(&((struct exec_run *)run)->tensor_state[tensor]);
}

size_t exec_run_in_flight(const struct exec_run *run, uint32_t *out, size_t max)
{
	struct exec_run *r = (struct exec_run *)run;
	_Atomic uint32_t *slots = atomic_load(&r->slots);
	unsigned i, nslots = atomic_load(&r->nslots);
	size_t n = 0, k;

	if (!slots)
		return 0;
	for (i = 0; i < nslots && n < max; i++) {
		uint32_t v = atomic_load(&slots[i]);
		bool seen = false;

		if (!v)
			continue;
		for (k = 0; k < n && !seen; k++)
			seen = out[k] == v - 1;
		if (!seen)
			out[n++] = v - 1;
	}
	return n;
}
