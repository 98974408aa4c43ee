/* SPDX-License-Identifier: MIT */
/*
 * check_convert: whole conversions through convert.h.  The golden cases
 * (HF -> native, expert-parallel ranks, native -> HF) compared with the
 * reference outputs by verify_checkpoints; determinism across runs and
 * thread counts; cancellation and a source truncated mid-run, each leaving
 * nothing behind; the destination checks (not empty, overwrite with stale
 * shards, insufficient space, not writable); option errors; progress and
 * tensor states; two conversions sharing one pool; removing what a run cut
 * short with its process left (whole and partitioned); a prepared
 * conversion suspended while it waits (no descriptor open, the plan run
 * without reading the headers again, a changed or vanished source seen).
 */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/manifest.h"
#include "ckptconv/partition.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "ckptconv/verify.h"
#include "fixture/fixture.h"
#include "testutil.h"

static char *tmp; /* per-test scratch directory */

static void setup(void)
{
	tmp = test_mkdtemp();
}

static void teardown(void)
{
	test_rmtree(tmp);
	free(tmp);
	tmp = NULL;
	store_local_free_bytes_hook = NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static char *golden(const char *name)
{
	char *p;

	if (asprintf(&p, "%s/tiny/%s", test_golden_dir(), name) < 0)
		abort();
	return p;
}

static char *scratch(const char *name)
{
	return test_path(tmp, name);
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

/* Sorted names in a directory (hidden ones too); returns the count. */
static size_t list_dir(const char *dir, char names[][128], size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0, i, j;

	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && n < max)
			snprintf(names[n++], 128, "%.127s", de->d_name);
	closedir(d);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char t[128];

			memcpy(t, names[j], 128);
			memcpy(names[j], names[j - 1], 128);
			memcpy(names[j - 1], t, 128);
		}
	return n;
}

static size_t count_entries(const char *dir)
{
	char names[64][128];

	return list_dir(dir, names, 64);
}

static bool has_entry(const char *dir, const char *name)
{
	char *p = test_path(dir, name);
	struct stat st;
	bool found = stat(p, &st) == 0;

	free(p);
	return found;
}

/* Both directories hold the same file names with the same bytes (the
 * checksum records the same entries). */
static void assert_same_files(const char *a, const char *b)
{
	char na[64][128], nb[64][128];
	size_t n = list_dir(a, na, 64), i;

	ck_assert_uint_gt(n, 0);
	ck_assert_uint_eq(list_dir(b, nb, 64), n);
	for (i = 0; i < n; i++) {
		char *pa = test_path(a, na[i]), *pb = test_path(b, nb[i]);
		unsigned char *da, *db;
		size_t la, lb;

		ck_assert_str_eq(na[i], nb[i]);
		da = read_whole(pa, &la);
		db = read_whole(pb, &lb);
		if (manifest_is_record(na[i]) && strcmp(na[i], PARTITION_MANIFEST) != 0) {
			test_assert_same_sums(na[i], da, la, db, lb);
		} else {
			ck_assert_uint_eq(la, lb);
			ck_assert_msg(memcmp(da, db, la) == 0, "%s differs", na[i]);
		}
		free(da);
		free(db);
		free(pa);
		free(pb);
	}
}

static void assert_equals_golden(const char *expected_name, const char *actual)
{
	char *expected = golden(expected_name);
	struct verify_report r;
	struct err e;

	err_clear(&e);
	memset(&r, 0, sizeof(r));
	ck_assert_msg(verify_checkpoints(expected, actual, NULL, stderr, 20, &r, &e) == 0, "%s: %s",
		      err_name(e.code), e.msg);
	ck_assert_uint_gt(r.tensors_compared, 0);
	ck_assert_uint_eq(r.differences, 0);
	free(expected);
}

static struct convert_options options(enum layout to)
{
	struct convert_options o;

	convert_options_init(&o);
	o.to = to;
	o.durable = false;
	return o;
}

static int convert_with_pool(const char *src, const char *dst, const struct convert_options *o,
			     struct exec_pool *pool, struct err *e)
{
	struct conversion *c;
	int rc;

	if (conversion_prepare(src, dst, o, &c, e))
		return -1;
	rc = conversion_run(c, pool, e);
	conversion_free(c);
	return rc;
}

static int convert(const char *src, const char *dst, const struct convert_options *o,
		   unsigned threads, struct err *e)
{
	struct exec_pool *pool = exec_pool_new(threads, e);
	int rc;

	ck_assert_ptr_nonnull(pool);
	rc = convert_with_pool(src, dst, o, pool, e);
	exec_pool_free(pool);
	return rc;
}

#define ASSERT_OK(rc, e) ck_assert_msg((rc) == 0, "%s: %s", err_name((e).code), (e).msg)

/* A writable copy of a golden checkpoint under the scratch directory. */
static char *copy_golden(const char *name, const char *as)
{
	char *from = golden(name), *to = scratch(as);
	char names[64][128];
	size_t n = list_dir(from, names, 64), i;

	ck_assert_int_eq(mkdir(to, 0755), 0);
	for (i = 0; i < n; i++) {
		char *pf = test_path(from, names[i]), *pt = test_path(to, names[i]);
		unsigned char *data;
		size_t len;

		data = read_whole(pf, &len);
		test_write_file(pt, data, len);
		free(data);
		free(pf);
		free(pt);
	}
	free(from);
	return to;
}

/* ---- golden ---------------------------------------------------------------- */

START_TEST(test_golden_hf_to_native)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out"), *cfg_a, *cfg_b;
	unsigned char *a, *b;
	size_t la, lb;
	struct err e;

	err_clear(&e);
	o.durable = true;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	assert_equals_golden("native", dst);
	/* One shard: model.safetensors without an index, plus config.json and
	 * the conversion's records (docs/manifest.md). */
	ck_assert_uint_eq(count_entries(dst), 4);
	ck_assert(has_entry(dst, "ckptconv-plan.json"));
	ck_assert(has_entry(dst, "ckptconv-sums.json"));
	ck_assert(has_entry(dst, "model.safetensors"));
	cfg_a = test_path(src, "config.json");
	cfg_b = test_path(dst, "config.json");
	a = read_whole(cfg_a, &la);
	b = read_whole(cfg_b, &lb);
	ck_assert_uint_eq(la, lb);
	ck_assert_int_eq(memcmp(a, b, la), 0);
	free(a);
	free(b);
	free(cfg_a);
	free(cfg_b);
	free(src);
	free(dst);
}
END_TEST

static void check_ep_rank(uint32_t rank, const char *expected)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	struct err e;

	err_clear(&e);
	o.ep_size = 2;
	o.ep_rank = rank;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	assert_equals_golden(expected, dst);
	free(src);
	free(dst);
}

START_TEST(test_golden_ep2_rank0)
{
	check_ep_rank(0, "native-ep2-rank0");
}
END_TEST

START_TEST(test_golden_ep2_rank1)
{
	check_ep_rank(1, "native-ep2-rank1");
}
END_TEST

START_TEST(test_golden_native_to_hf)
{
	struct convert_options o = options(LAYOUT_HF);
	char *src = golden("native"), *dst = scratch("out");
	struct err e;

	err_clear(&e);
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	assert_equals_golden("hf-from-native", dst);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_sharded_output_has_index)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	struct err e;

	err_clear(&e);
	o.max_shard_size = 40000;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	ck_assert(has_entry(dst, "model.safetensors.index.json"));
	ck_assert(!has_entry(dst, "model.safetensors"));
	ck_assert_uint_gt(count_entries(dst), 3);
	assert_equals_golden("native", dst);
	free(src);
	free(dst);
}
END_TEST

/* ---- determinism ------------------------------------------------------------- */

START_TEST(test_deterministic_across_runs_and_threads)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	const unsigned threads[] = {1, 2, 4, 2};
	char *src = golden("hf"), *dst[4];
	struct err e;
	size_t i;

	err_clear(&e);
	o.max_shard_size = 40000; /* several shards and an index */
	for (i = 0; i < 4; i++) {
		char name[16];

		snprintf(name, sizeof(name), "out%zu", i);
		dst[i] = scratch(name);
		ASSERT_OK(convert(src, dst[i], &o, threads[i], &e), e);
	}
	for (i = 1; i < 4; i++)
		assert_same_files(dst[0], dst[i]);
	for (i = 0; i < 4; i++)
		free(dst[i]);
	free(src);
}
END_TEST

START_TEST(test_deterministic_to_hf)
{
	struct convert_options o = options(LAYOUT_HF);
	char *src = golden("native"), *a = scratch("a"), *b = scratch("b");
	struct err e;

	err_clear(&e);
	ASSERT_OK(convert(src, a, &o, 1, &e), e);
	ASSERT_OK(convert(src, b, &o, 4, &e), e);
	assert_same_files(a, b);
	free(src);
	free(a);
	free(b);
}
END_TEST

/* ---- progress ---------------------------------------------------------------- */

START_TEST(test_progress_and_states)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	struct exec_progress pr;
	struct exec_pool *pool;
	struct conversion *c;
	const struct plan *p;
	uint32_t in_flight[8];
	struct err e;
	size_t i;

	err_clear(&e);
	pool = exec_pool_new(2, &e);
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	p = conversion_plan(c);
	ck_assert_uint_gt(p->ntensors, 0);
	conversion_progress(c, &pr);
	ck_assert_uint_eq(pr.tensors_total, 0);
	ck_assert_uint_eq(pr.bytes_done, 0);
	ck_assert_int_eq(conversion_tensor_state(c, 0), TENSOR_PENDING);
	ck_assert_uint_eq(conversion_in_flight(c, in_flight, 8), 0);
	ck_assert_uint_eq(count_entries(tmp), 0); /* prepare writes nothing */

	ASSERT_OK(conversion_run(c, pool, &e), e);
	conversion_progress(c, &pr);
	ck_assert_uint_eq(pr.tensors_total, p->ntensors);
	ck_assert_uint_eq(pr.tensors_done, p->ntensors);
	ck_assert_uint_eq(pr.bytes_total, p->total_bytes);
	ck_assert_uint_eq(pr.bytes_done, p->total_bytes);
	for (i = 0; i < p->ntensors; i++)
		ck_assert_int_eq(conversion_tensor_state(c, i), TENSOR_DONE);
	ck_assert_uint_eq(conversion_in_flight(c, in_flight, 8), 0);
	ck_assert_uint_eq(exec_pool_busy(pool), 0);
	/* A conversion runs once. */
	ck_assert_int_eq(conversion_run(c, pool, &e), -1);
	ck_assert_str_eq(err_name(e.code), "internal_error");
	conversion_free(c);
	exec_pool_free(pool);
	free(src);
	free(dst);
}
END_TEST

/* ---- cancellation and failures ----------------------------------------------- */

struct interrupter {
	struct conversion *c;
	long after_ms;
	char *truncate_dir; /* truncate every shard here instead of cancelling */
	struct exec_progress seen;
};

static void truncate_shards(const char *dir)
{
	char names[64][128];
	size_t n = list_dir(dir, names, 64), i;

	for (i = 0; i < n; i++) {
		if (strstr(names[i], ".safetensors") && !strstr(names[i], ".json")) {
			char *p = test_path(dir, names[i]);

			ck_assert_int_eq(truncate(p, 0), 0);
			free(p);
		}
	}
}

static void *interrupt_later(void *arg)
{
	struct interrupter *it = arg;

	sleep_ms(it->after_ms);
	conversion_progress(it->c, &it->seen);
	if (it->truncate_dir)
		truncate_shards(it->truncate_dir);
	else
		conversion_cancel(it->c);
	return NULL;
}

static char *tiny_fixture(const char *name)
{
	struct fixture_options fo = {.preset = FIXTURE_TINY, .seed = 7};
	char *dir = scratch(name);
	struct err e;

	err_clear(&e);
	ASSERT_OK(fixture_write(dir, &fo, &e), e);
	return dir;
}

static int run_interrupted(const char *src, const char *dst, struct interrupter *it, struct err *e)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	struct exec_pool *pool = exec_pool_new(2, e);
	pthread_t thread;
	int rc;

	o.max_bytes_per_second = 50000; /* the tiny checkpoint takes ~4 s */
	ASSERT_OK(conversion_prepare(src, dst, &o, &it->c, e), *e);
	pthread_create(&thread, NULL, interrupt_later, it);
	rc = conversion_run(it->c, pool, e);
	pthread_join(thread, NULL);
	conversion_free(it->c);
	exec_pool_free(pool);
	return rc;
}

START_TEST(test_cancel_mid_run)
{
	char *src = tiny_fixture("src"), *dst = scratch("out");
	struct interrupter it = {.after_ms = 400};
	struct err e;

	err_clear(&e);
	ck_assert_int_eq(run_interrupted(src, dst, &it, &e), -1);
	ck_assert_str_eq(err_name(e.code), "cancelled");
	ck_assert_str_eq(e.msg, "conversion cancelled");
	/* It was cancelled while writing, and left nothing at all. */
	ck_assert_uint_gt(it.seen.bytes_done, 0);
	ck_assert_uint_lt(it.seen.bytes_done, it.seen.bytes_total);
	ck_assert_uint_eq(count_entries(dst), 0);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_cancel_before_run)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	struct exec_pool *pool;
	struct conversion *c;
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(2, &e);
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	conversion_cancel(c);
	ck_assert_int_eq(conversion_run(c, pool, &e), -1);
	ck_assert_str_eq(err_name(e.code), "cancelled");
	ck_assert_uint_eq(count_entries(tmp), 0);
	conversion_free(c);
	exec_pool_free(pool);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_source_truncated_mid_run)
{
	char *src = tiny_fixture("src"), *dst = scratch("out"), *again = scratch("again");
	struct interrupter it = {.after_ms = 400};
	struct convert_options o = options(LAYOUT_NATIVE);
	struct err e;

	err_clear(&e);
	it.truncate_dir = src;
	ck_assert_int_eq(run_interrupted(src, dst, &it, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_truncated");
	ck_assert_msg(strstr(e.msg, src) && strstr(e.msg, ".safetensors"), "%s", e.msg);
	ck_assert_str_ne(e.tensor, "");
	ck_assert_uint_eq(count_entries(dst), 0);

	/* The process carries on: another conversion works. */
	free(src);
	src = golden("hf");
	err_clear(&e);
	ASSERT_OK(convert(src, again, &o, 2, &e), e);
	assert_equals_golden("native", again);
	free(src);
	free(dst);
	free(again);
}
END_TEST

/* ---- destination checks -------------------------------------------------------- */

START_TEST(test_destination_not_empty)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out"), *stray;
	struct err e;

	err_clear(&e);
	ck_assert_int_eq(mkdir(dst, 0755), 0);
	stray = test_path(dst, "notes.txt");
	test_write_file(stray, "keep", 4);
	ck_assert_int_eq(convert(src, dst, &o, 2, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	ck_assert_uint_eq(count_entries(dst), 1);
	ck_assert(has_entry(dst, "notes.txt"));
	free(stray);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_overwrite_removes_stale_shards)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	struct err e;

	err_clear(&e);
	o.max_shard_size = 30000;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	ck_assert(has_entry(dst, "model.safetensors.index.json"));
	ck_assert_uint_gt(count_entries(dst), 5);

	/* Without overwrite the finished checkpoint is refused... */
	o.max_shard_size = 0;
	ck_assert_int_eq(convert(src, dst, &o, 2, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");

	/* ...with it, the new single file replaces every old shard. */
	err_clear(&e);
	o.overwrite = true;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	ck_assert_uint_eq(count_entries(dst), 4); /* and the records */
	ck_assert(has_entry(dst, "model.safetensors"));
	ck_assert(has_entry(dst, "config.json"));
	assert_equals_golden("native", dst);
	free(src);
	free(dst);
}
END_TEST

static int little_space(const char *dir, uint64_t *free_bytes)
{
	(void)dir;
	*free_bytes = 100000; /* half of what the tiny output needs */
	return 0;
}

START_TEST(test_insufficient_space)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	struct err e;

	err_clear(&e);
	store_local_free_bytes_hook = little_space;
	ck_assert_int_eq(convert(src, dst, &o, 2, &e), -1);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	ck_assert_msg(strstr(e.msg, "100000") != NULL, "%s", e.msg);
	ck_assert_uint_eq(count_entries(dst), 0);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_destination_not_writable)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *blocker = scratch("file"), *dst = test_path(blocker, "out");
	struct err e;

	err_clear(&e);
	test_write_file(blocker, "x", 1);
	ck_assert_int_eq(convert(src, dst, &o, 2, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_writable");
	ck_assert_uint_eq(count_entries(tmp), 1);
	free(src);
	free(blocker);
	free(dst);
}
END_TEST

START_TEST(test_destination_is_source)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = copy_golden("hf", "hf"),
	     *file = test_path(src, "model-00001-of-00005.safetensors");
	struct conversion *c = NULL;
	struct err e;

	err_clear(&e);
	o.overwrite = true;
	ck_assert_int_eq(conversion_prepare(src, src, &o, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_option");
	ck_assert_ptr_null(c);
	err_clear(&e);
	ck_assert_int_eq(conversion_prepare(file, src, &o, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_option");
	ck_assert_uint_eq(count_entries(src), 7);
	free(file);
	free(src);
}
END_TEST

/* ---- options and source errors --------------------------------------------------- */

static void check_prepare_fails(const char *src_name, const struct convert_options *o,
				const char *code)
{
	char *src = golden(src_name), *dst = scratch("out");
	struct conversion *c = NULL;
	struct err e;

	err_clear(&e);
	ck_assert_int_eq(conversion_prepare(src, dst, o, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), code);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(count_entries(tmp), 0);
	free(src);
	free(dst);
}

START_TEST(test_invalid_options)
{
	struct convert_options o = options(LAYOUT_HF);

	o.ep_size = 2;
	check_prepare_fails("native", &o, "invalid_option");
	o = options(LAYOUT_HF);
	o.dtype = DTYPE_CHOICE_BF16;
	check_prepare_fails("native", &o, "invalid_option");
	o = options(LAYOUT_NATIVE);
	o.ep_size = 2;
	o.ep_rank = 2;
	check_prepare_fails("hf", &o, "invalid_option");
	o = options(LAYOUT_NATIVE);
	o.ep_rank = 1;
	check_prepare_fails("hf", &o, "invalid_option");
	o = options(LAYOUT_UNKNOWN);
	check_prepare_fails("hf", &o, "invalid_option");
	o = options(LAYOUT_NATIVE);
	o.exclude = "(unclosed";
	check_prepare_fails("hf", &o, "invalid_exclude");
}
END_TEST

START_TEST(test_already_in_layout)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("native"), *dst = scratch("out"), expect[512];
	struct conversion *c = NULL;
	struct err e;

	err_clear(&e);
	ck_assert_int_eq(conversion_prepare(src, dst, &o, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "already_in_layout");
	snprintf(expect, sizeof(expect), "%s is already in native layout", src);
	ck_assert_str_eq(e.msg, expect);
	o = options(LAYOUT_HF);
	free(src);
	src = golden("hf");
	err_clear(&e);
	ck_assert_int_eq(conversion_prepare(src, dst, &o, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "already_in_layout");
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_source_missing)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = scratch("nothing-here"), *dst = scratch("out");
	struct conversion *c = NULL;
	struct err e;

	err_clear(&e);
	ck_assert_int_eq(conversion_prepare(src, dst, &o, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_exclude_and_warnings)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = copy_golden("hf", "hf"), *dst = scratch("out"), *p;
	const struct strvec *w;
	struct exec_pool *pool;
	struct conversion *c;
	struct err e;

	err_clear(&e);
	p = test_path(src, "pytorch_model.bin");
	test_write_file(p, "weights", 7);
	free(p);
	p = test_path(src, "tokenizer.json");
	test_write_file(p, "{}", 2);
	free(p);
	p = test_path(src, "extra");
	ck_assert_int_eq(mkdir(p, 0755), 0);
	free(p);
	o.exclude = "experts";
	pool = exec_pool_new(2, &e);
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	w = conversion_warnings(c);
	ck_assert_uint_eq(w->len, 2);
	ck_assert(strstr(w->items[0], "extra") || strstr(w->items[1], "extra"));
	ck_assert(strstr(w->items[0], "pytorch_model.bin") ||
		  strstr(w->items[1], "pytorch_model.bin"));
	ck_assert_int_lt(
		plan_find(conversion_plan(c), "model.layers.1.mlp.experts.gate_and_up_projs"), 0);
	ck_assert_int_ge(plan_find(conversion_plan(c), "model.embed_tokens.weight"), 0);
	ASSERT_OK(conversion_run(c, pool, &e), e);
	ck_assert(has_entry(dst, "tokenizer.json"));
	ck_assert(has_entry(dst, "config.json"));
	ck_assert(!has_entry(dst, "pytorch_model.bin"));
	ck_assert(!has_entry(dst, "extra"));
	conversion_free(c);
	exec_pool_free(pool);
	free(src);
	free(dst);
}
END_TEST

/* ---- round trips and casts ------------------------------------------------------ */

static char *fixture(const char *name, enum dtype dt)
{
	struct fixture_options fo = {.preset = FIXTURE_TINY, .dtype = dt, .seed = 11};
	char *dir = scratch(name);
	struct err e;

	err_clear(&e);
	ASSERT_OK(fixture_write(dir, &fo, &e), e);
	return dir;
}

static void assert_same_tensors(const char *expected, const char *actual)
{
	struct verify_report r;
	struct err e;

	err_clear(&e);
	memset(&r, 0, sizeof(r));
	ck_assert_msg(verify_checkpoints(expected, actual, NULL, stderr, 20, &r, &e) == 0, "%s: %s",
		      err_name(e.code), e.msg);
	ck_assert_uint_gt(r.tensors_compared, 0);
	ck_assert_uint_eq(r.differences, 0);
}

static void check_round_trip(enum dtype dt, enum dtype_choice choice)
{
	char *src = fixture("src", dt), *native = scratch("native"), *back = scratch("back");
	struct convert_options o = options(LAYOUT_NATIVE);
	struct err e;

	err_clear(&e);
	o.dtype = choice;
	ASSERT_OK(convert(src, native, &o, 2, &e), e);
	o = options(LAYOUT_HF);
	ASSERT_OK(convert(native, back, &o, 2, &e), e);
	assert_same_tensors(src, back);
	free(src);
	free(native);
	free(back);
}

START_TEST(test_round_trip_bf16)
{
	check_round_trip(DTYPE_BF16, DTYPE_CHOICE_AUTO);
}
END_TEST

START_TEST(test_round_trip_f32_keep)
{
	check_round_trip(DTYPE_F32, DTYPE_CHOICE_KEEP);
}
END_TEST

/* A tensor's bytes, read through a checkpoint opened for the purpose. */
static unsigned char *tensor_bytes(const char *dir, const char *name, enum dtype *dt, size_t *len)
{
	struct ckpt *c;
	unsigned char *buf;
	struct err e;
	long i;

	err_clear(&e);
	ASSERT_OK(ckpt_open(dir, 0, &c, &e), e);
	i = ckpt_find(c, name);
	ck_assert_msg(i >= 0, "%s: no tensor %s", dir, name);
	*dt = c->tensors[i].dtype;
	*len = (size_t)c->tensors[i].nbytes;
	buf = xmalloc(*len);
	ASSERT_OK(store_read(c->store, c->files[c->tensors[i].file].name, c->tensors[i].offset, buf,
			     *len, &e),
		  e);
	ckpt_free(c);
	return buf;
}

/* Round to nearest even by the bit pattern (finite inputs). */
static uint16_t naive_bf16(float f)
{
	uint32_t bits;

	memcpy(&bits, &f, 4);
	return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* The compiler's conversion, correctly rounded. */
static uint16_t naive_f16(float f)
{
	_Float16 h = (_Float16)f;
	uint16_t bits;

	memcpy(&bits, &h, 2);
	return bits;
}

static void check_cast(const char *reference, const char *cast, const char *name, enum dtype to)
{
	enum dtype ref_dt, cast_dt;
	size_t ref_len, cast_len, i, n;
	unsigned char *ref = tensor_bytes(reference, name, &ref_dt, &ref_len);
	unsigned char *out = tensor_bytes(cast, name, &cast_dt, &cast_len);

	ck_assert_int_eq(ref_dt, DTYPE_F32);
	ck_assert_int_eq(cast_dt, to);
	n = ref_len / 4;
	ck_assert_uint_eq(cast_len, n * 2);
	for (i = 0; i < n; i++) {
		float f;
		uint16_t got, want;

		memcpy(&f, ref + 4 * i, 4);
		memcpy(&got, out + 2 * i, 2);
		want = to == DTYPE_BF16 ? naive_bf16(f) : naive_f16(f);
		ck_assert_msg(got == want, "%s[%zu]: %04x, expected %04x", name, i, got, want);
	}
	free(ref);
	free(out);
}

START_TEST(test_cast_grouped_experts)
{
	static const char *grouped[] = {"model.layers.1.mlp.experts.gate_and_up_projs",
					"model.layers.1.mlp.experts.down_projs"};
	char *src = fixture("src", DTYPE_F32), *keep = scratch("keep");
	char *bf16 = scratch("bf16"), *f16 = scratch("f16");
	struct convert_options o = options(LAYOUT_NATIVE);
	enum dtype dt;
	size_t i, len;
	struct err e;

	err_clear(&e);
	o.dtype = DTYPE_CHOICE_KEEP;
	ASSERT_OK(convert(src, keep, &o, 2, &e), e);
	o.dtype = DTYPE_CHOICE_BF16;
	ASSERT_OK(convert(src, bf16, &o, 2, &e), e);
	o.dtype = DTYPE_CHOICE_F16;
	ASSERT_OK(convert(src, f16, &o, 2, &e), e);
	for (i = 0; i < 2; i++) {
		check_cast(keep, bf16, grouped[i], DTYPE_BF16);
		check_cast(keep, f16, grouped[i], DTYPE_F16);
	}
	/* Only the grouped tensors are cast. */
	free(tensor_bytes(bf16, "model.embed_tokens.weight", &dt, &len));
	ck_assert_int_eq(dt, DTYPE_F32);
	free(src);
	free(keep);
	free(bf16);
	free(f16);
}
END_TEST

/* ---- one pool, two conversions ---------------------------------------------------- */

struct background {
	const char *src, *dst;
	struct convert_options o;
	struct exec_pool *pool;
	struct err e;
	int rc;
};

static void *convert_in_background(void *arg)
{
	struct background *b = arg;

	err_clear(&b->e);
	b->rc = convert_with_pool(b->src, b->dst, &b->o, b->pool, &b->e);
	return NULL;
}

START_TEST(test_two_conversions_share_pool)
{
	char *hf = golden("hf"), *native = golden("native");
	char *out_native = scratch("native"), *out_hf = scratch("hf");
	struct background a = {.src = hf, .dst = out_native, .o = options(LAYOUT_NATIVE)};
	struct background b = {.src = native, .dst = out_hf, .o = options(LAYOUT_HF)};
	pthread_t ta, tb;
	struct err e;

	err_clear(&e);
	a.pool = b.pool = exec_pool_new(2, &e);
	a.o.max_bytes_per_second = b.o.max_bytes_per_second = 400000; /* overlap */
	pthread_create(&ta, NULL, convert_in_background, &a);
	pthread_create(&tb, NULL, convert_in_background, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	ASSERT_OK(a.rc, a.e);
	ASSERT_OK(b.rc, b.e);
	assert_equals_golden("native", out_native);
	assert_equals_golden("hf-from-native", out_hf);
	exec_pool_free(a.pool);
	free(hf);
	free(native);
	free(out_native);
	free(out_hf);
}
END_TEST

/* ---- output of a run cut short ----------------------------------------------- */

static void plant(const char *dir, const char *name)
{
	char *p = test_path(dir, name);

	test_write_file(p, "partial", 7);
	free(p);
}

static void clean(const char *src, const char *dst, const struct convert_options *o)
{
	struct conversion *c;
	struct err e;

	err_clear(&e);
	ASSERT_OK(conversion_prepare(src, dst, o, &c, &e), e);
	ASSERT_OK(conversion_clean_destination(c, &e), e);
	conversion_free(c);
}

/* What a killed run leaves (published shards, the copied config, the
 * index, reserved temporary files of this and an earlier naming) goes; a
 * file the destination held before and another name's temporary file
 * stay. */
START_TEST(test_clean_destination)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = golden("hf"), *dst = scratch("out");
	char names[64][128];
	struct err e;
	size_t n;

	err_clear(&e);
	o.max_shard_size = 30000;
	ck_assert_int_eq(mkdir(dst, 0755), 0);
	plant(dst, "notes.txt");
	o.overwrite = true;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	ck_assert_uint_gt(count_entries(dst), 5);
	plant(dst, ".ckptconv-tmp.model-00002-of-00009.safetensors.tmp");
	plant(dst, ".ckptconv-tmp.model-00003-of-00009.safetensors");
	plant(dst, ".ckptconv-tmp.config.json.4242.7.tmp");
	plant(dst, ".ckptconv-tmp.someone-else.bin.tmp");
	clean(src, dst, &o);
	n = list_dir(dst, names, 64);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(names[0], ".ckptconv-tmp.someone-else.bin.tmp");
	ck_assert_str_eq(names[1], "notes.txt");
	/* a destination that is gone already is clean */
	test_rmtree(dst);
	clean(src, dst, &o);
	free(src);
	free(dst);
}
END_TEST

/* A partition's cleanup leaves the other partitions' output and the
 * shared manifest alone. */
START_TEST(test_clean_destination_partition)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	struct convert_options other;
	char *src = golden("hf"), *dst = scratch("out");
	struct conversion *c;
	bool *skip;
	struct err e;
	size_t i, nfiles;
	char **shards;

	err_clear(&e);
	o.max_shard_size = 30000;
	o.partition_count = 2;
	other = o;
	other.partition_index = 1;
	ASSERT_OK(convert(src, dst, &o, 2, &e), e);
	ASSERT_OK(convert(src, dst, &other, 2, &e), e);
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	nfiles = conversion_plan(c)->nfiles;
	skip = partition_skip_files(conversion_plan(c), 0, 2);
	shards = xcalloc(nfiles, sizeof(*shards));
	for (i = 0; i < nfiles; i++)
		shards[i] = xstrdup(conversion_plan(c)->files[i].name);
	conversion_free(c);
	for (i = 0; i < nfiles; i++)
		ck_assert(has_entry(dst, shards[i]));
	clean(src, dst, &o);
	for (i = 0; i < nfiles; i++) {
		ck_assert_msg(has_entry(dst, shards[i]) == skip[i], "%s", shards[i]);
		free(shards[i]);
	}
	ck_assert(has_entry(dst, PARTITION_MANIFEST));
	free(shards);
	free(skip);
	free(src);
	free(dst);
}
END_TEST

/* ---- a prepared conversion waiting to run ------------------------------------ */

/* Descriptors this process has open. */
static size_t open_descriptors(void)
{
	return test_count_entries("/proc/self/fd");
}

/* The first byte of a shard's header JSON becomes 'X'; the size stays. */
static void overwrite_header(const char *dir, const char *shard)
{
	char *path = test_path(dir, shard);
	FILE *f = fopen(path, "r+b");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, 8, SEEK_SET), 0);
	ck_assert_int_eq(fputc('X', f), 'X');
	ck_assert_int_eq(fclose(f), 0);
	free(path);
}

START_TEST(test_suspend_and_resume)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = copy_golden("hf", "src"), *dst = scratch("out"),
	     *notes = test_path(src, "NOTES.md");
	struct exec_pool *pool;
	struct conversion *c;
	struct ckpt *fresh = NULL;
	size_t before = open_descriptors();
	struct err e;

	err_clear(&e);
	pool = exec_pool_new(2, &e);
	ck_assert_ptr_nonnull(pool);
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	ck_assert_uint_gt(open_descriptors(), before + 1); /* the directory and shards */
	ASSERT_OK(conversion_suspend(c, &e), e);
	ck_assert_uint_eq(open_descriptors(), before);
	/* A suspended conversion does not run before it is resumed. */
	ck_assert_int_eq(conversion_run(c, pool, &e), -1);
	ck_assert_str_eq(err_name(e.code), "internal_error");
	ck_assert(!has_entry(tmp, "out"));

	/* A file added: the source changed; removed again: it is as planned. */
	test_write_file(notes, "notes", 5);
	err_clear(&e);
	ck_assert_int_eq(conversion_resume(c, &e), 1);
	ck_assert_uint_eq(open_descriptors(), before);
	ck_assert_int_eq(unlink(notes), 0);

	/* As planned: it runs. */
	err_clear(&e);
	ck_assert_int_eq(conversion_resume(c, &e), 0);
	ASSERT_OK(conversion_run(c, pool, &e), e);
	assert_equals_golden("native", dst);
	conversion_free(c);

	/* A header overwritten in place keeps the listing but not the file's
	 * mtime and ctime: the plan made before no longer describes it. */
	free(dst);
	dst = scratch("out2");
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	ASSERT_OK(conversion_suspend(c, &e), e);
	overwrite_header(src, "model-00002-of-00005.safetensors");
	ck_assert_int_eq(ckpt_open(src, CKPT_REQUIRE_CONFIG, &fresh, &e), -1);
	ck_assert_str_eq(err_name(e.code), "header_not_object");
	err_clear(&e);
	ck_assert_int_eq(conversion_resume(c, &e), 1);
	ck_assert_uint_eq(open_descriptors(), before);
	conversion_free(c);
	free(notes);
	free(src);
	free(dst);
	exec_pool_free(pool);
}
END_TEST

START_TEST(test_resume_source_gone)
{
	struct convert_options o = options(LAYOUT_NATIVE);
	char *src = copy_golden("hf", "src"), *dst = scratch("out"), *moved = scratch("moved");
	struct conversion *c;
	struct err e;

	err_clear(&e);
	ASSERT_OK(conversion_prepare(src, dst, &o, &c, &e), e);
	ASSERT_OK(conversion_suspend(c, &e), e);
	ck_assert_int_eq(rename(src, moved), 0);
	ck_assert_int_eq(conversion_resume(c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	conversion_free(c);
	free(moved);
	free(src);
	free(dst);
}
END_TEST

static Suite *convert_suite(void)
{
	Suite *s = suite_create("convert");
	TCase *tc = tcase_create("convert");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_golden_hf_to_native);
	tcase_add_test(tc, test_golden_ep2_rank0);
	tcase_add_test(tc, test_golden_ep2_rank1);
	tcase_add_test(tc, test_golden_native_to_hf);
	tcase_add_test(tc, test_sharded_output_has_index);
	tcase_add_test(tc, test_deterministic_across_runs_and_threads);
	tcase_add_test(tc, test_deterministic_to_hf);
	tcase_add_test(tc, test_progress_and_states);
	tcase_add_test(tc, test_cancel_mid_run);
	tcase_add_test(tc, test_cancel_before_run);
	tcase_add_test(tc, test_source_truncated_mid_run);
	tcase_add_test(tc, test_destination_not_empty);
	tcase_add_test(tc, test_overwrite_removes_stale_shards);
	tcase_add_test(tc, test_insufficient_space);
	tcase_add_test(tc, test_destination_not_writable);
	tcase_add_test(tc, test_destination_is_source);
	tcase_add_test(tc, test_invalid_options);
	tcase_add_test(tc, test_already_in_layout);
	tcase_add_test(tc, test_source_missing);
	tcase_add_test(tc, test_exclude_and_warnings);
	tcase_add_test(tc, test_round_trip_bf16);
	tcase_add_test(tc, test_round_trip_f32_keep);
	tcase_add_test(tc, test_cast_grouped_experts);
	tcase_add_test(tc, test_two_conversions_share_pool);
	tcase_add_test(tc, test_clean_destination);
	tcase_add_test(tc, test_clean_destination_partition);
	tcase_add_test(tc, test_suspend_and_resume);
	tcase_add_test(tc, test_resume_source_gone);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(convert_suite());
}
