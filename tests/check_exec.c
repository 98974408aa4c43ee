/* SPDX-License-Identifier: MIT */
/*
 * check_exec: the worker pool and runs, on plans built by hand over raw
 * source files: every op kind (copy, strided copy, transpose, cast, several
 * ops per piece), byte-exact output for 1, 2 and 4 workers, partitions,
 * progress and tensor states, cancellation of a rate-capped run, a source
 * truncated during a run (checked by the store, and under a live mapping:
 * SIGBUS on the assembling path, EFAULT on the direct-write path), two runs
 * sharing one pool, which worker writes which output file, an unwritable
 * destination, and the workers' names and signal masks.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/crc32c.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/kernels.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "testutil.h"

#define MAX_SRC 4
#define MAX_OUT 8
#define MAX_PIECES 16
#define MAX_OPS 16
#define HEADER_LEN 16

/* A hand-made source checkpoint and plan, and the bytes the plan must
 * produce. */
struct fake {
	char *src_dir, *dst_dir;
	struct store *src, *dst;
	struct ckpt ckpt;
	struct ckpt_file src_files[MAX_SRC];
	struct ckpt_tensor src_tensors[MAX_SRC];
	struct plan plan;
	struct plan_file files[2];
	struct plan_tensor tensors[MAX_OUT];
	struct plan_piece pieces[MAX_OUT][MAX_PIECES];
	struct plan_op ops[MAX_OUT][MAX_OPS];
	char headers[2][HEADER_LEN];
	unsigned char *expected[MAX_OUT]; /* each output tensor's bytes */
	unsigned char *src_data[MAX_SRC]; /* each source tensor's bytes */
};

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static unsigned char *read_whole(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = xmalloc((size_t)n + 1);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}


/* ---- building fakes ------------------------------------------------------ */

static struct fake *fake_new(void)
{
	struct fake *f = xcalloc(1, sizeof(*f));
	struct err e;

	err_clear(&e);
	f->src_dir = test_mkdtemp();
	f->dst_dir = test_mkdtemp();
	ck_assert_int_eq(store_open(f->src_dir, &f->src, &e), 0);
	ck_assert_int_eq(store_open(f->dst_dir, &f->dst, &e), 0);
	f->ckpt.store = f->src;
	f->ckpt.files = f->src_files;
	f->ckpt.tensors = f->src_tensors;
	f->plan.src = &f->ckpt;
	f->plan.tensors = f->tensors;
	f->plan.files = f->files;
	return f;
}

static void fake_free(struct fake *f)
{
	size_t i;

	for (i = 0; i < MAX_OUT; i++)
		free(f->expected[i]);
	for (i = 0; i < MAX_SRC; i++) {
		free(f->src_data[i]);
		free(f->src_files[i].name);
	}
	store_free(f->src);
	store_free(f->dst);
	test_rmtree(f->src_dir);
	test_rmtree(f->dst_dir);
	free(f->src_dir);
	free(f->dst_dir);
	free(f);
}

/* A source file holding one tensor of `nbytes` pattern bytes after a
 * `prefix`-byte preamble; returns the tensor's index. */
static uint32_t add_source(struct fake *f, const char *file, enum dtype dt, uint64_t nbytes,
			   uint64_t prefix, uint32_t seed)
{
	uint32_t i = (uint32_t)f->ckpt.ntensors, x = seed * 2654435761u + 1;
	unsigned char *bytes = xmalloc(prefix + nbytes);
	char *path = test_path(f->src_dir, file);
	uint64_t k;

	for (k = 0; k < prefix + nbytes; k++) {
		x = x * 1103515245u + 12345u;
		bytes[k] = (unsigned char)(x >> 16);
	}
	if (dt == DTYPE_F32) /* finite floats of varied magnitude */
		for (k = prefix + 3; k < prefix + nbytes; k += 4)
			bytes[k] = (unsigned char)(0x3c + (bytes[k] & 0x07) + (bytes[k] & 0x80));
	test_write_file(path, bytes, prefix + nbytes);
	f->src_files[i].name = xstrdup(file);
	f->src_files[i].size = prefix + nbytes;
	f->src_tensors[i] = (struct ckpt_tensor){.name = f->src_files[i].name,
						 .dtype = dt,
						 .ndim = 1,
						 .shape = {nbytes / dtype_size(dt)},
						 .file = i,
						 .offset = prefix,
						 .nbytes = nbytes};
	f->src_data[i] = xmalloc(nbytes);
	memcpy(f->src_data[i], bytes + prefix, nbytes);
	f->ckpt.nfiles++;
	f->ckpt.ntensors++;
	free(path);
	free(bytes);
	return i;
}

static void add_file(struct fake *f, const char *name)
{
	struct plan_file *pf = &f->files[f->plan.nfiles];

	memset(f->headers[f->plan.nfiles], 'a' + (int)f->plan.nfiles, HEADER_LEN);
	pf->name = (char *)name;
	pf->header = f->headers[f->plan.nfiles];
	pf->header_len = HEADER_LEN;
	pf->size = HEADER_LEN;
	pf->first_tensor = (uint32_t)f->plan.ntensors;
	f->plan.nfiles++;
}

/* An output tensor in the last file, with its expected bytes. */
static struct plan_tensor *add_tensor(struct fake *f, const char *name, enum dtype dt,
				      uint64_t nbytes)
{
	size_t i = f->plan.ntensors++;
	struct plan_tensor *t = &f->tensors[i];
	struct plan_file *pf = &f->files[f->plan.nfiles - 1];

	t->name = (char *)name;
	t->dtype = dt;
	t->ndim = 1;
	t->shape[0] = nbytes / dtype_size(dt);
	t->nbytes = nbytes;
	t->file = (uint32_t)(f->plan.nfiles - 1);
	t->offset = pf->size;
	t->pieces = f->pieces[i];
	t->ops = f->ops[i];
	pf->size += nbytes;
	pf->ntensors++;
	f->plan.total_bytes += nbytes;
	f->expected[i] = xcalloc(1, nbytes ? nbytes : 1);
	return t;
}

static void add_piece(struct plan_tensor *t, uint64_t offset, uint64_t nbytes,
		      const struct plan_op *ops, uint32_t nops)
{
	struct plan_piece *pc = &t->pieces[t->npieces++];

	pc->offset = offset;
	pc->nbytes = nbytes;
	pc->first_op = t->nops;
	pc->nops = nops;
	memcpy(&t->ops[t->nops], ops, nops * sizeof(*ops));
	t->nops += nops;
}

static void put_element(unsigned char *dst, enum dtype to, const unsigned char *src,
			enum dtype from)
{
	float v;
	uint16_t h;

	if (from == to) {
		memcpy(dst, src, dtype_size(from));
		return;
	}
	memcpy(&v, src, 4); /* the tests cast only from F32 */
	h = to == DTYPE_BF16 ? kern_f32_to_bf16(v) : kern_f32_to_f16(v);
	memcpy(dst, &h, 2);
}

/* What an op puts into a piece, element by element. */
static void expect_op(struct fake *f, size_t t, const struct plan_piece *pc,
		      const struct plan_op *op)
{
	const unsigned char *src = f->src_data[op->src] + op->src_offset;
	unsigned char *dst = f->expected[t] + pc->offset + op->dst_offset;
	size_t is = dtype_size(op->src_dtype), os = dtype_size(op->dst_dtype);
	uint64_t r, c;

	for (r = 0; r < op->rows; r++)
		for (c = 0; c < op->cols; c++) {
			const unsigned char *s = src + r * op->src_stride + c * is;
			unsigned char *d = op->transpose ? dst + c * op->dst_stride + r * os :
							   dst + r * op->dst_stride + c * os;

			put_element(d, op->dst_dtype, s, op->src_dtype);
		}
}

static void finish_fake(struct fake *f)
{
	size_t t;
	uint32_t k, i;

	for (t = 0; t < f->plan.ntensors; t++) {
		const struct plan_tensor *pt = &f->tensors[t];

		f->plan.npieces += pt->npieces;
		for (k = 0; k < pt->npieces; k++)
			for (i = 0; i < pt->pieces[k].nops; i++)
				expect_op(f, t, &pt->pieces[k],
					  &pt->ops[pt->pieces[k].first_op + i]);
	}
	for (k = 0; k < f->plan.nfiles; k++)
		f->plan.total_file_bytes += f->files[k].size;
}

/*
 * The mixed plan: two output files; a transposed F32 matrix in two pieces,
 * a cast to BF16, a strided cast to F16, a copy in three pieces, a fused
 * tensor of two plain copies, a transposed BF16 matrix and an empty tensor.
 */
static struct fake *mixed_fake(void)
{
	struct fake *f = fake_new();
	uint32_t a = add_source(f, "a.bin", DTYPE_F32, 37 * 53 * 4, 16, 1);
	uint32_t b = add_source(f, "b.bin", DTYPE_BF16, 1000 * 2, 8, 2);
	uint32_t c = add_source(f, "c.bin", DTYPE_BF16, 64 * 48 * 2, 24, 3);
	struct plan_tensor *t;

	add_file(f, "out-1.safetensors");
	t = add_tensor(f, "t0.transposed", DTYPE_F32, 53 * 37 * 4);
	add_piece(t, 0, 27 * 37 * 4,
		  (struct plan_op[]){{a, true, DTYPE_F32, DTYPE_F32, 37, 27, 0, 53 * 4, 0, 37 * 4}},
		  1);
	add_piece(t, 27 * 37 * 4, 26 * 37 * 4,
		  (struct plan_op[]){
			  {a, true, DTYPE_F32, DTYPE_F32, 37, 26, 27 * 4, 53 * 4, 0, 37 * 4}},
		  1);
	t = add_tensor(f, "t1.cast_bf16", DTYPE_BF16, 37 * 53 * 2);
	add_piece(t, 0, 37 * 53 * 2,
		  (struct plan_op[]){{a, false, DTYPE_F32, DTYPE_BF16, 1, 37 * 53, 0, 37 * 53 * 4,
				      0, 37 * 53 * 2}},
		  1);
	t = add_tensor(f, "t2.strided_f16", DTYPE_F16, 37 * 10 * 2);
	add_piece(t, 0, 37 * 10 * 2,
		  (struct plan_op[]){
			  {a, false, DTYPE_F32, DTYPE_F16, 37, 10, 5 * 4, 53 * 4, 0, 10 * 2}},
		  1);

	add_file(f, "out-2.safetensors");
	t = add_tensor(f, "t3.copy", DTYPE_BF16, 1000 * 2);
	add_piece(t, 0, 700,
		  (struct plan_op[]){{b, false, DTYPE_BF16, DTYPE_BF16, 1, 350, 0, 700, 0, 700}},
		  1);
	add_piece(t, 700, 700,
		  (struct plan_op[]){{b, false, DTYPE_BF16, DTYPE_BF16, 1, 350, 700, 700, 0, 700}},
		  1);
	add_piece(t, 1400, 600,
		  (struct plan_op[]){{b, false, DTYPE_BF16, DTYPE_BF16, 1, 300, 1400, 600, 0, 600}},
		  1);
	t = add_tensor(f, "t4.fused", DTYPE_BF16, 66 * 48 * 2);
	add_piece(t, 0, 66 * 48 * 2,
		  (struct plan_op[]){{c, false, DTYPE_BF16, DTYPE_BF16, 64, 48, 0, 96, 0, 96},
				     {b, false, DTYPE_BF16, DTYPE_BF16, 2, 48, 0, 96, 64 * 96, 96}},
		  2);
	t = add_tensor(f, "t5.transposed_bf16", DTYPE_BF16, 48 * 64 * 2);
	add_piece(t, 0, 48 * 64 * 2,
		  (struct plan_op[]){{c, true, DTYPE_BF16, DTYPE_BF16, 64, 48, 0, 96, 0, 128}}, 1);
	add_tensor(f, "t6.empty", DTYPE_BF16, 0);
	finish_fake(f);
	return f;
}

/* One tensor of `size` bytes copied from big.bin in pieces of `piece`. */
static struct fake *big_fake(uint64_t size, uint64_t piece)
{
	struct fake *f = fake_new();
	uint32_t s = add_source(f, "big.bin", DTYPE_U8, size, 8, 7);
	struct plan_tensor *t;
	uint64_t off;

	add_file(f, "big.safetensors");
	t = add_tensor(f, "big", DTYPE_U8, size);
	for (off = 0; off < size; off += piece) {
		struct plan_op op = {s, false, DTYPE_U8, DTYPE_U8, 1, piece, off, piece, 0, piece};

		add_piece(t, off, piece, &op, 1);
	}
	finish_fake(f);
	return f;
}

/* The output files hold the headers and exactly the expected bytes. */
static void check_output(const struct fake *f, const bool *skip)
{
	size_t fi, t;

	for (fi = 0; fi < f->plan.nfiles; fi++) {
		const struct plan_file *pf = &f->files[fi];
		char *path = test_path(f->dst_dir, pf->name);
		unsigned char *data;
		size_t len;

		data = read_whole(path, &len);
		if (skip && skip[fi]) {
			ck_assert_ptr_null(data);
			free(path);
			continue;
		}
		ck_assert_msg(data != NULL, "%s missing", path);
		ck_assert_uint_eq(len, pf->size);
		ck_assert_int_eq(memcmp(data, pf->header, pf->header_len), 0);
		for (t = pf->first_tensor; t < pf->first_tensor + pf->ntensors; t++)
			ck_assert_msg(memcmp(data + f->tensors[t].offset, f->expected[t],
					     f->tensors[t].nbytes) == 0,
				      "%s: bytes differ", f->tensors[t].name);
		free(data);
		free(path);
	}
}

static int run_fake(struct fake *f, struct exec_pool *pool, const struct exec_options *o,
		    struct exec_run **out, struct err *e)
{
	struct exec_run *run = exec_run_new(&f->plan, f->src, f->dst, o);
	int rc = exec_run_execute(run, pool, e);

	if (out)
		*out = run;
	else
		exec_run_free(run);
	return rc;
}

/* ---- tests ---------------------------------------------------------------- */

/* Ops larger than a band: row bands of a transpose, rows longer than a
 * band (a cast, a strided cast, a transpose), and a long plain copy. */
static struct fake *large_ops_fake(void)
{
	struct fake *f = fake_new();
	uint32_t m = add_source(f, "m.bin", DTYPE_F32, 700 * 600 * 4, 8, 4);
	uint32_t v = add_source(f, "v.bin", DTYPE_F32, 2 * 300000 * 4, 8, 5);
	struct plan_tensor *t;

	add_file(f, "out.safetensors");
	t = add_tensor(f, "transposed", DTYPE_F32, 600 * 700 * 4);
	add_piece(t, 0, 600 * 700 * 4,
		  (struct plan_op[]){{m, true, DTYPE_F32, DTYPE_F32, 700, 600, 0, 2400, 0, 2800}},
		  1);
	t = add_tensor(f, "cast_long_row", DTYPE_BF16, 600000 * 2);
	add_piece(t, 0, 600000 * 2,
		  (struct plan_op[]){
			  {v, false, DTYPE_F32, DTYPE_BF16, 1, 600000, 0, 2400000, 0, 1200000}},
		  1);
	t = add_tensor(f, "strided_long_rows", DTYPE_F16, 2 * 290000 * 2);
	add_piece(t, 0, 2 * 290000 * 2,
		  (struct plan_op[]){
			  {v, false, DTYPE_F32, DTYPE_F16, 2, 290000, 40, 1200000, 0, 580000}},
		  1);
	t = add_tensor(f, "transposed_long_rows", DTYPE_F32, 2 * 300000 * 4);
	add_piece(t, 0, 2 * 300000 * 4,
		  (struct plan_op[]){{v, true, DTYPE_F32, DTYPE_F32, 2, 300000, 0, 1200000, 0, 8}},
		  1);
	t = add_tensor(f, "copy", DTYPE_F32, 2 * 300000 * 4);
	add_piece(t, 0, 2 * 300000 * 4,
		  (struct plan_op[]){
			  {v, false, DTYPE_F32, DTYPE_F32, 2, 300000, 0, 1200000, 0, 1200000}},
		  1);
	finish_fake(f);
	return f;
}

static void check_fake_with(struct fake *f, unsigned threads, enum exec_read_mode mode)
{
	struct exec_options o = {.read_mode = mode};
	struct exec_pool *pool;
	struct exec_progress pr;
	struct exec_run *run;
	uint32_t inflight[8];
	struct err e;
	size_t i;

	err_clear(&e);
	pool = exec_pool_new(threads, &e);
	ck_assert_ptr_nonnull(pool);
	ck_assert_uint_eq(exec_pool_threads(pool), threads);
	f->dst->out.durable = true;
	ck_assert_msg(run_fake(f, pool, &o, &run, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(f, NULL);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), f->plan.nfiles);

	exec_run_progress(run, &pr);
	ck_assert_uint_eq(pr.tensors_total, f->plan.ntensors);
	ck_assert_uint_eq(pr.tensors_done, pr.tensors_total);
	ck_assert_uint_eq(pr.bytes_total, f->plan.total_bytes);
	ck_assert_uint_eq(pr.bytes_done, pr.bytes_total);
	ck_assert(pr.elapsed_seconds > 0);
	for (i = 0; i < f->plan.ntensors; i++)
		ck_assert_int_eq(exec_run_tensor_state(run, i), TENSOR_DONE);
	ck_assert_uint_eq(exec_run_in_flight(run, inflight, 8), 0);
	ck_assert_uint_eq(exec_pool_busy(pool), 0);
	exec_run_free(run);
	exec_pool_free(pool);
	fake_free(f);
}

static void check_mixed_with_threads(unsigned threads)
{
	check_fake_with(mixed_fake(), threads, EXEC_READ_AUTO); /* copies, local */
	check_fake_with(mixed_fake(), threads, EXEC_READ_VIEW);
}

START_TEST(test_mixed_plan_1_thread)
{
	check_mixed_with_threads(1);
}
END_TEST

START_TEST(test_mixed_plan_2_threads)
{
	check_mixed_with_threads(2);
}
END_TEST

START_TEST(test_mixed_plan_4_threads)
{
	check_mixed_with_threads(4);
}
END_TEST

START_TEST(test_ops_larger_than_a_band)
{
	check_fake_with(large_ops_fake(), 2, EXEC_READ_COPY);
	check_fake_with(large_ops_fake(), 1, EXEC_READ_VIEW);
}
END_TEST

START_TEST(test_progress_before_execute)
{
	struct fake *f = mixed_fake();
	struct exec_run *run = exec_run_new(&f->plan, f->src, f->dst, NULL);
	struct exec_progress pr;
	uint32_t inflight[4];

	exec_run_progress(run, &pr);
	ck_assert_uint_eq(pr.tensors_total, 7);
	ck_assert_uint_eq(pr.tensors_done, 0);
	ck_assert_uint_eq(pr.bytes_total, f->plan.total_bytes);
	ck_assert_uint_eq(pr.bytes_done, 0);
	ck_assert(pr.elapsed_seconds == 0);
	ck_assert_int_eq(exec_run_tensor_state(run, 0), TENSOR_PENDING);
	ck_assert_uint_eq(exec_run_in_flight(run, inflight, 4), 0);
	exec_run_free(run);
	fake_free(f);
}
END_TEST

START_TEST(test_skip_file)
{
	struct fake *f = mixed_fake();
	bool skip[2] = {true, false};
	struct exec_options o = {.skip_file = skip};
	struct exec_pool *pool;
	struct exec_progress pr;
	struct exec_run *run;
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(2, &e);
	ck_assert_msg(run_fake(f, pool, &o, &run, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(f, skip);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 1);
	exec_run_progress(run, &pr);
	ck_assert_uint_eq(pr.tensors_total, 4);
	ck_assert_uint_eq(pr.tensors_done, 4);
	ck_assert_uint_eq(pr.bytes_total, f->files[1].size - HEADER_LEN);
	ck_assert_int_eq(exec_run_tensor_state(run, 0), TENSOR_PENDING);
	ck_assert_int_eq(exec_run_tensor_state(run, 3), TENSOR_DONE);
	exec_run_free(run);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

/* exec_options.published: which file, and its CRC-32C. */
struct published_note {
	int calls;
	uint32_t file, crc;
	struct store_identity id;
};

static int note_published(void *arg, uint32_t file, uint32_t crc,
			  const struct store_identity *id, struct err *e)
{
	struct published_note *n = arg;

	(void)e;
	n->calls++;
	n->file = file;
	n->crc = crc;
	n->id = *id;
	return 0;
}

/* A file kept from an interrupted run is not written, but its tensors
 * count as done from the start; the file written is reported published
 * with the CRC-32C of its bytes as they are on disk. */
START_TEST(test_kept_file)
{
	struct fake *f = mixed_fake();
	bool kept[2] = {true, false};
	struct published_note note = {0};
	struct exec_options o = {.kept_file = kept, .published = note_published,
				 .published_arg = &note};
	struct exec_pool *pool;
	struct exec_progress pr;
	struct exec_run *run;
	unsigned char *bytes;
	struct stat st;
	struct err e;
	size_t len;
	char *path;

	err_clear(&e);
	run = exec_run_new(&f->plan, f->src, f->dst, &o);
	exec_run_progress(run, &pr);
	ck_assert_uint_eq(pr.tensors_total, 7);
	ck_assert_uint_eq(pr.tensors_done, 3);
	ck_assert_uint_eq(pr.bytes_total, f->plan.total_bytes);
	ck_assert_uint_eq(pr.bytes_done, f->files[0].size - HEADER_LEN);
	ck_assert_int_eq(exec_run_tensor_state(run, 0), TENSOR_DONE);
	exec_run_free(run);
	pool = exec_pool_new(2, &e);
	ck_assert_msg(run_fake(f, pool, &o, &run, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(f, kept);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 1);
	exec_run_progress(run, &pr);
	ck_assert_uint_eq(pr.tensors_done, 7);
	ck_assert_uint_eq(pr.bytes_done, f->plan.total_bytes);
	ck_assert_int_eq(note.calls, 1);
	ck_assert_uint_eq(note.file, 1);
	path = test_path(f->dst_dir, f->plan.files[1].name);
	bytes = read_whole(path, &len);
	ck_assert_uint_eq(len, f->files[1].size);
	ck_assert_uint_eq(note.crc, crc32c(0, bytes, len));
	/* Its identity as published: taken after the rename, so it equals
	 * the file's now (a stat before the rename has another ctime). */
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(note.id.kind, STORE_ID_FILE);
	ck_assert_uint_eq(note.id.ino, (uint64_t)st.st_ino);
	ck_assert_uint_eq(note.id.size, len);
	ck_assert_int_eq(note.id.mtime_ns,
			 (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	ck_assert_int_eq(note.id.ctime_ns,
			 (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec);
	free(bytes);
	free(path);
	exec_run_free(run);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

struct canceller {
	struct exec_run *run;
	long after_ms;
	const char *truncate_path;
	struct exec_progress seen;
};

static void *cancel_later(void *arg)
{
	struct canceller *c = arg;

	sleep_ms(c->after_ms);
	exec_run_progress(c->run, &c->seen);
	if (c->truncate_path)
		ck_assert_int_eq(truncate(c->truncate_path, 0), 0);
	else
		exec_run_cancel(c->run);
	return NULL;
}

START_TEST(test_cancel_throttled_run)
{
	struct fake *f = big_fake(8 << 20, 1 << 20);
	struct exec_options o = {.max_bytes_per_second = 1 << 20};
	struct canceller c = {.after_ms = 300};
	struct exec_progress pr;
	struct exec_pool *pool;
	pthread_t thread;
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(2, &e);
	c.run = exec_run_new(&f->plan, f->src, f->dst, &o);
	pthread_create(&thread, NULL, cancel_later, &c);
	ck_assert_int_eq(exec_run_execute(c.run, pool, &e), -1);
	pthread_join(thread, NULL);
	ck_assert_str_eq(err_name(e.code), "cancelled");
	ck_assert_str_eq(e.msg, "conversion cancelled");
	/* Throttled to 1 piece a second, it was still going when cancelled. */
	ck_assert_uint_gt(c.seen.bytes_done, 0);
	ck_assert_uint_lt(c.seen.bytes_done, c.seen.bytes_total);
	exec_run_progress(c.run, &pr);
	ck_assert_uint_lt(pr.bytes_done, pr.bytes_total);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 0);
	ck_assert_int_ne(exec_run_tensor_state(c.run, 0), TENSOR_RUNNING);
	ck_assert_uint_eq(exec_pool_busy(pool), 0);
	exec_run_free(c.run);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

START_TEST(test_cancel_before_execute)
{
	struct fake *f = mixed_fake();
	struct exec_pool *pool;
	struct exec_run *run;
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(2, &e);
	run = exec_run_new(&f->plan, f->src, f->dst, NULL);
	exec_run_cancel(run);
	ck_assert_int_eq(exec_run_execute(run, pool, &e), -1);
	ck_assert_str_eq(err_name(e.code), "cancelled");
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 0);
	exec_run_free(run);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

static void check_truncated_during_run(enum exec_read_mode mode)
{
	struct fake *f = big_fake(8 << 20, 1 << 20);
	struct exec_options o = {.max_bytes_per_second = 2 << 20, .read_mode = mode};
	struct canceller c = {.after_ms = 200};
	struct exec_pool *pool;
	pthread_t thread;
	struct err e;

	err_clear(&e);
	c.truncate_path = test_path(f->src_dir, "big.bin");
	pool = exec_pool_new(2, &e);
	c.run = exec_run_new(&f->plan, f->src, f->dst, &o);
	pthread_create(&thread, NULL, cancel_later, &c);
	ck_assert_int_eq(exec_run_execute(c.run, pool, &e), -1);
	pthread_join(thread, NULL);
	ck_assert_str_eq(err_name(e.code), "source_truncated");
	ck_assert_msg(strstr(e.msg, "big.bin") != NULL, "%s", e.msg);
	ck_assert_str_eq(e.tensor, "big");
	ck_assert_int_eq(exec_run_tensor_state(c.run, 0), TENSOR_FAILED);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 0);
	exec_run_free(c.run);
	exec_pool_free(pool);
	free((char *)c.truncate_path);
	fake_free(f);
}

START_TEST(test_source_truncated_during_run)
{
	check_truncated_during_run(EXEC_READ_COPY);
	check_truncated_during_run(EXEC_READ_VIEW);
}
END_TEST

/* A local store whose views truncate their file right after mapping it:
 * the worst moment, when only the fault handler can notice. */
static struct store_backend truncating_backend;

static int truncating_view(struct store *s, const char *name, uint64_t off, size_t len,
			   struct store_view *v, struct err *e)
{
	char *path = test_path(s->location, name);
	int rc = store_local_backend.view(s, name, off, len, v, e);

	if (rc == 0)
		ck_assert_int_eq(truncate(path, 0), 0);
	free(path);
	return rc;
}

static void use_truncating_source(struct fake *f)
{
	truncating_backend = store_local_backend;
	truncating_backend.view = truncating_view;
	f->src->backend = &truncating_backend;
}

/* After a caught fault the process and the pool carry on. */
static void check_pool_still_works(struct exec_pool *pool)
{
	struct fake *ok = mixed_fake();
	struct err e;

	err_clear(&e);
	ck_assert_msg(run_fake(ok, pool, NULL, NULL, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(ok, NULL);
	fake_free(ok);
}

/* Only the transposes, which read the mapping in the kernel. */
static void check_sigbus_caught(struct exec_pool *pool)
{
	struct exec_options o = {.read_mode = EXEC_READ_VIEW};
	struct fake *f = mixed_fake();
	struct exec_run *run;
	struct err e;

	err_clear(&e);
	use_truncating_source(f);
	f->plan.ntensors = 1;
	f->files[0].ntensors = 1;
	f->plan.nfiles = 1;
	ck_assert_int_eq(run_fake(f, pool, &o, &run, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_truncated");
	ck_assert_msg(strstr(e.msg, "a.bin: source file shrank while being read") != NULL, "%s",
		      e.msg);
	ck_assert_str_eq(e.tensor, "t0.transposed");
	ck_assert_int_eq(exec_run_tensor_state(run, 0), TENSOR_FAILED);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 0);
	exec_run_free(run);
	fake_free(f);
}

START_TEST(test_sigbus_while_assembling)
{
	struct exec_pool *pool;
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(1, &e);
	check_sigbus_caught(pool);
	check_pool_still_works(pool);
	/* The same worker catches a second fault. */
	check_sigbus_caught(pool);
	check_pool_still_works(pool);
	exec_pool_free(pool);
}
END_TEST

START_TEST(test_fault_while_writing_from_view)
{
	struct exec_options o = {.read_mode = EXEC_READ_VIEW};
	struct fake *f = big_fake(1 << 20, 1 << 20);
	struct exec_pool *pool;
	struct err e;

	err_clear(&e);
	use_truncating_source(f);
	pool = exec_pool_new(2, &e);
	ck_assert_int_eq(run_fake(f, pool, &o, NULL, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_truncated");
	ck_assert_msg(strstr(e.msg, "big.bin: source file shrank") != NULL, "%s", e.msg);
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 0);
	check_pool_still_works(pool);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

struct background_run {
	struct fake *f;
	struct exec_pool *pool;
	struct exec_run *run;
	struct exec_options o;
	int rc;
	struct err e;
};

static void *execute_in_background(void *arg)
{
	struct background_run *b = arg;

	b->rc = exec_run_execute(b->run, b->pool, &b->e);
	return NULL;
}

START_TEST(test_two_runs_share_pool)
{
	struct background_run a = {.o = {.max_bytes_per_second = 4 << 20}};
	struct fake *small = mixed_fake();
	struct exec_progress pr;
	pthread_t thread;
	struct err e;

	err_clear(&e);
	err_clear(&a.e);
	a.f = big_fake(8 << 20, 1 << 20);
	a.pool = exec_pool_new(2, &e);
	a.run = exec_run_new(&a.f->plan, a.f->src, a.f->dst, &a.o);
	pthread_create(&thread, NULL, execute_in_background, &a);
	do {
		sleep_ms(5);
		exec_run_progress(a.run, &pr);
	} while (pr.bytes_done == 0);

	/* The throttled run leaves the workers free for the other one. */
	ck_assert_msg(run_fake(small, a.pool, NULL, NULL, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	exec_run_progress(a.run, &pr);
	ck_assert_uint_lt(pr.bytes_done, pr.bytes_total);
	check_output(small, NULL);

	pthread_join(thread, NULL);
	ck_assert_msg(a.rc == 0, "%s: %s", err_name(a.e.code), a.e.msg);
	check_output(a.f, NULL);
	exec_run_free(a.run);
	exec_pool_free(a.pool);
	fake_free(a.f);
	fake_free(small);
}
END_TEST

/* ---- which worker writes which file ------------------------------------ */

/* Output files of `pieces` plain-copy pieces of `piece` bytes each, one
 * tensor per file, all from one source. */
static struct fake *files_fake(unsigned nfiles, unsigned pieces, uint64_t piece)
{
	static const char *const names[] = {"f0.safetensors", "f1.safetensors"};
	static const char *const tensors[] = {"f0.t", "f1.t"};
	struct fake *f = fake_new();
	uint32_t s = add_source(f, "src.bin", DTYPE_U8, nfiles * pieces * piece, 8, 9);
	struct plan_tensor *t;
	unsigned i, k;

	for (i = 0; i < nfiles; i++) {
		add_file(f, names[i]);
		t = add_tensor(f, tensors[i], DTYPE_U8, pieces * piece);
		for (k = 0; k < pieces; k++) {
			uint64_t off = (uint64_t)(i * pieces + k) * piece;
			struct plan_op op = {s, false, DTYPE_U8, DTYPE_U8, 1, piece, off, piece,
					     0,	    piece};

			add_piece(t, k * piece, piece, &op, 1);
		}
	}
	finish_fake(f);
	return f;
}

/* What the destination's writes saw: per file, the writes in progress,
 * the bytes written, and how often a write began while another write to
 * the same file was in progress, with another file not yet complete. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	const struct fake *f;
	unsigned writing[2], most_writing[2];
	uint64_t written[2];
	unsigned shared_early; /* a file shared while another was unfinished */
	unsigned late_first;   /* data writes to f0 begun after f1's first */
	bool data_begun[2];
	bool wait_for_second;  /* the first data write waits for a second one */
	bool waited;
} watch = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};

static struct store_backend watching_backend;

static int watching_write(struct store_writer *w, uint64_t off, const void *buf, size_t len,
			  struct err *e)
{
	unsigned fi = strcmp(w->name, watch.f->files[0].name) == 0 ? 0 : 1, j;
	bool first_data;
	int rc;

	pthread_mutex_lock(&watch.lock);
	if (watch.writing[fi] > 0)
		for (j = 0; j < watch.f->plan.nfiles; j++)
			if (j != fi && watch.written[j] < watch.f->files[j].size)
				watch.shared_early++;
	if (off >= HEADER_LEN) {
		watch.late_first += fi == 0 && watch.data_begun[1];
		watch.data_begun[fi] = true;
	}
	first_data = off >= HEADER_LEN && watch.wait_for_second && !watch.waited;
	watch.waited = watch.waited || first_data;
	watch.writing[fi]++;
	if (watch.writing[fi] > watch.most_writing[fi])
		watch.most_writing[fi] = watch.writing[fi];
	pthread_cond_broadcast(&watch.changed);
	if (first_data) {
		/* A second worker must write this file while this write is
		 * held (the guard only ends a broken run). */
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 30;
		while (watch.writing[fi] < 2 &&
		       pthread_cond_timedwait(&watch.changed, &watch.lock, &until) == 0)
			;
	}
	pthread_mutex_unlock(&watch.lock);
	sleep_ms(1);
	rc = store_local_backend.writer_write(w, off, buf, len, e);
	pthread_mutex_lock(&watch.lock);
	watch.writing[fi]--;
	watch.written[fi] += len;
	pthread_mutex_unlock(&watch.lock);
	return rc;
}

static void watch_writes(struct fake *f, bool wait_for_second, bool file_write_lock)
{
	pthread_mutex_lock(&watch.lock);
	memset(watch.writing, 0, sizeof(watch.writing));
	memset(watch.most_writing, 0, sizeof(watch.most_writing));
	memset(watch.written, 0, sizeof(watch.written));
	watch.shared_early = 0;
	watch.late_first = 0;
	memset(watch.data_begun, 0, sizeof(watch.data_begun));
	watch.wait_for_second = wait_for_second;
	watch.waited = false;
	watch.f = f;
	pthread_mutex_unlock(&watch.lock);
	watching_backend = store_local_backend;
	watching_backend.writer_write = watching_write;
	if (!file_write_lock)
		watching_backend.caps &= ~(unsigned)STORE_FILE_WRITE_LOCK;
	f->dst->backend = &watching_backend;
}

/* Two files, two workers: each worker writes a file of its own, so no
 * file is written by two workers at once until the other file is
 * complete; the output is the same. */
START_TEST(test_workers_hold_files_of_their_own)
{
	struct fake *f = files_fake(2, 12, 64 << 10);
	struct exec_pool *pool;
	struct exec_run *run;
	struct exec_progress pr;
	struct err e;

	err_clear(&e);
	watch_writes(f, false, true);
	pool = exec_pool_new(2, &e);
	ck_assert_msg(run_fake(f, pool, NULL, &run, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(f, NULL);
	ck_assert_uint_eq(watch.shared_early, 0);
	ck_assert_uint_eq(watch.written[0], f->files[0].size);
	ck_assert_uint_eq(watch.written[1], f->files[1].size);
	exec_run_progress(run, &pr);
	ck_assert_uint_eq(pr.tensors_done, 2);
	ck_assert_uint_eq(pr.bytes_done, pr.bytes_total);
	exec_run_free(run);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

/* Two files, two workers, a destination without per-file write locks (an
 * object store buffers each unfinished file's part): pieces go in plan
 * order, so f1 is begun only once every piece of f0 is handed out; after
 * f1's first data write at most the other worker's one piece of f0 is still
 * to begin (each piece is one write here). */
START_TEST(test_workers_follow_plan_order_without_file_locks)
{
	struct fake *f = files_fake(2, 12, 64 << 10);
	struct exec_pool *pool;
	struct err e;

	err_clear(&e);
	watch_writes(f, false, false);
	pool = exec_pool_new(2, &e);
	ck_assert_msg(run_fake(f, pool, NULL, NULL, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(f, NULL);
	ck_assert_uint_le(watch.late_first, 1);
	ck_assert_uint_eq(watch.written[0], f->files[0].size);
	ck_assert_uint_eq(watch.written[1], f->files[1].size);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

/* One file, two workers: fewer files than workers, so both write it. */
START_TEST(test_workers_share_a_lone_file)
{
	struct fake *f = files_fake(1, 8, 64 << 10);
	struct exec_pool *pool;
	struct err e;

	err_clear(&e);
	watch_writes(f, true, true);
	pool = exec_pool_new(2, &e);
	ck_assert_msg(run_fake(f, pool, NULL, NULL, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	check_output(f, NULL);
	ck_assert(watch.waited);
	ck_assert_uint_eq(watch.most_writing[0], 2);
	exec_pool_free(pool);
	fake_free(f);
}
END_TEST

START_TEST(test_unwritable_destination)
{
	struct fake *f = mixed_fake();
	char *blocker = test_path(f->dst_dir, "file");
	char *below = test_path(blocker, "sub");
	struct exec_pool *pool;
	struct store *dst;
	struct err e;

	err_clear(&e);
	test_write_file(blocker, "x", 1);
	ck_assert_int_eq(store_open(below, &dst, &e), 0);
	store_free(f->dst);
	f->dst = dst;
	pool = exec_pool_new(2, &e);
	ck_assert_int_eq(run_fake(f, pool, NULL, NULL, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_writable");
	ck_assert_uint_eq(test_count_entries(f->dst_dir), 1);
	exec_pool_free(pool);
	free(below);
	free(blocker);
	fake_free(f);
}
END_TEST

START_TEST(test_cpu_quota)
{
	cpu_set_t set;

	ck_assert_uint_eq(exec_cpu_quota_limit("max 100000\n"), 0);
	ck_assert_uint_eq(exec_cpu_quota_limit("100000 100000\n"), 1);
	ck_assert_uint_eq(exec_cpu_quota_limit("150000 100000\n"), 2);
	ck_assert_uint_eq(exec_cpu_quota_limit("50000 100000"), 1);
	ck_assert_uint_eq(exec_cpu_quota_limit("400000 100000"), 4);
	ck_assert_uint_eq(exec_cpu_quota_limit(""), 0);
	ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	ck_assert_uint_ge(exec_cpus_available(), 1);
	ck_assert_uint_le(exec_cpus_available(), (unsigned)CPU_COUNT(&set));
}
END_TEST

START_TEST(test_default_pool_size)
{
	struct exec_pool *pool;
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(0, &e);
	ck_assert_ptr_nonnull(pool);
	ck_assert_uint_eq(exec_pool_threads(pool), exec_cpus_available());
	ck_assert_uint_eq(exec_pool_busy(pool), 0);
	exec_pool_free(pool);
}
END_TEST

/* Whether /proc/self/task/<tid>/status shows `sig` blocked. */
static bool blocked_in(const char *status, int sig)
{
	const char *p = strstr(status, "SigBlk:");
	unsigned long long mask;

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p, "SigBlk: %llx", &mask), 1);
	return (mask >> (sig - 1)) & 1;
}

static unsigned count_named_workers(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	unsigned n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		char path[320], comm[32] = "";
		FILE *fp;

		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		fp = de->d_name[0] != '.' ? fopen(path, "r") : NULL;
		if (fp && fgets(comm, sizeof(comm), fp) && strncmp(comm, "ckptconv-w", 10) == 0)
			n++;
		if (fp)
			fclose(fp);
	}
	closedir(d);
	return n;
}

START_TEST(test_workers_named_and_masked)
{
	struct exec_pool *pool;
	struct dirent *de;
	unsigned named = 0;
	struct err e;
	DIR *d;

	err_clear(&e);
	pool = exec_pool_new(3, &e);
	/* Workers name themselves once they run; wait until all three do. */
	while (count_named_workers() < 3)
		sleep_ms(5);
	d = opendir("/proc/self/task");
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		char path[320], comm[32] = "", status[4096];
		size_t len;
		FILE *fp;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		fp = fopen(path, "r");
		if (!fp || !fgets(comm, sizeof(comm), fp)) {
			if (fp)
				fclose(fp);
			continue;
		}
		fclose(fp);
		if (strncmp(comm, "ckptconv-w", 10) != 0)
			continue;
		named++;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
		fp = fopen(path, "r");
		ck_assert_ptr_nonnull(fp);
		len = fread(status, 1, sizeof(status) - 1, fp);
		status[len] = '\0';
		fclose(fp);
		ck_assert(blocked_in(status, SIGTERM));
		ck_assert(blocked_in(status, SIGINT));
		ck_assert(blocked_in(status, SIGPIPE));
		ck_assert(!blocked_in(status, SIGBUS));
		ck_assert(!blocked_in(status, SIGSEGV));
	}
	closedir(d);
	ck_assert_uint_eq(named, 3);
	exec_pool_free(pool);
}
END_TEST

START_TEST(test_tensor_state_names)
{
	ck_assert_str_eq(tensor_state_name(TENSOR_PENDING), "pending");
	ck_assert_str_eq(tensor_state_name(TENSOR_RUNNING), "running");
	ck_assert_str_eq(tensor_state_name(TENSOR_DONE), "done");
	ck_assert_str_eq(tensor_state_name(TENSOR_FAILED), "failed");
}
END_TEST

static Suite *exec_suite(void)
{
	Suite *s = suite_create("exec");
	TCase *tc = tcase_create("exec");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mixed_plan_1_thread);
	tcase_add_test(tc, test_mixed_plan_2_threads);
	tcase_add_test(tc, test_mixed_plan_4_threads);
	tcase_add_test(tc, test_ops_larger_than_a_band);
	tcase_add_test(tc, test_progress_before_execute);
	tcase_add_test(tc, test_skip_file);
	tcase_add_test(tc, test_kept_file);
	tcase_add_test(tc, test_cancel_throttled_run);
	tcase_add_test(tc, test_cancel_before_execute);
	tcase_add_test(tc, test_source_truncated_during_run);
	tcase_add_test(tc, test_sigbus_while_assembling);
	tcase_add_test(tc, test_fault_while_writing_from_view);
	tcase_add_test(tc, test_two_runs_share_pool);
	tcase_add_test(tc, test_workers_hold_files_of_their_own);
	tcase_add_test(tc, test_workers_share_a_lone_file);
	tcase_add_test(tc, test_workers_follow_plan_order_without_file_locks);
	tcase_add_test(tc, test_unwritable_destination);
	tcase_add_test(tc, test_cpu_quota);
	tcase_add_test(tc, test_default_pool_size);
	tcase_add_test(tc, test_workers_named_and_masked);
	tcase_add_test(tc, test_tensor_state_names);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(exec_suite());
}
