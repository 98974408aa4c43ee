/* SPDX-License-Identifier: MIT */
/*
 * check_partition: partitioned conversions.  The grouping (a known greedy
 * result, determinism, every file in exactly one group, balance, more
 * partitions than files), the --partition syntax, the manifest (round trip,
 * identical bytes, mismatches, text that is not a manifest), and whole runs
 * through convert.h: N partitions then finalize equal one unpartitioned
 * conversion byte for byte; finalize refuses a missing, truncated or
 * changed file, a changed source and a source the caller does not allow,
 * and is idempotent; the destination checks (another plan, unrelated
 * files, overwrite, free space, an unpartitioned overwrite).
 */
#include <check.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/conversion_result.h"
#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/finalize.h"
#include "ckptconv/manifest.h"
#include "ckptconv/exec.h"
#include "ckptconv/partition.h"
#include "ckptconv/progress.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "testutil.h"

#define SHARD 20000 /* makes a dozen shards of the tiny checkpoint */
#define INDEX_NAME "model.safetensors.index.json"

static char *tmp;
static char *src;
static struct exec_pool *pool;

static void setup(void)
{
	struct err e = {0};

	tmp = test_mkdtemp();
	if (asprintf(&src, "%s/tiny/hf", test_golden_dir()) < 0)
		abort();
	pool = exec_pool_new(2, &e);
	ck_assert_ptr_nonnull(pool);
}

static void teardown(void)
{
	exec_pool_free(pool);
	test_rmtree(tmp);
	free(tmp);
	free(src);
	tmp = src = NULL;
	store_local_free_bytes_hook = NULL;
}

static char *scratch(const char *name)
{
	return test_path(tmp, name);
}

static struct convert_options options(uint64_t max_shard, uint32_t index, uint32_t count)
{
	struct convert_options o;

	convert_options_init(&o);
	o.to = LAYOUT_NATIVE;
	o.max_shard_size = max_shard;
	o.durable = false;
	o.partition_index = index;
	o.partition_count = count;
	return o;
}

/* One conversion (a partition when count > 0); 0 or -1 with e set. */
static int convert(const char *dst, uint64_t max_shard, uint32_t index, uint32_t count,
		   bool overwrite, struct err *e)
{
	struct convert_options o = options(max_shard, index, count);
	struct conversion *c;
	int rc;

	o.overwrite = overwrite;
	if (conversion_prepare(src, dst, &o, &c, e))
		return -1;
	rc = conversion_run(c, pool, e);
	conversion_free(c);
	return rc;
}

static void all_partitions(const char *dst, uint64_t max_shard, uint32_t count)
{
	struct err e = {0};
	uint32_t i;

	for (i = 0; i < count; i++)
		ck_assert_msg(convert(dst, max_shard, i, count, false, &e) == 0,
			      "partition %u: %s: %s", i, err_name(e.code), e.msg);
}

static int finalize(const char *dst, struct conversion_result *r, struct err *e)
{
	struct finalize_options o;

	finalize_options_init(&o);
	o.durable = false;
	return finalize_destination(dst, &o, r, e);
}

static struct plan *plan_of(uint64_t max_shard, struct conversion **c)
{
	struct convert_options o = options(max_shard, 0, 0);
	struct err e = {0};
	char *dst = scratch("unused");

	ck_assert_msg(conversion_prepare(src, dst, &o, c, &e) == 0, "%s", e.msg);
	free(dst);
	return (struct plan *)conversion_plan(*c);
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
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* Sorted names in a directory, hidden ones included. */
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

static bool exists(const char *dir, const char *name)
{
	char *p = test_path(dir, name);
	struct stat st;
	bool yes = stat(p, &st) == 0;

	free(p);
	return yes;
}

/* The partition count the destination's plan manifest records. */
static uint32_t manifest_count(const char *dir)
{
	char *path = test_path(dir, PARTITION_MANIFEST), *text;
	struct partition_manifest *m = NULL;
	struct err e = {0};
	uint32_t count;
	size_t len;

	text = (char *)read_whole(path, &len);
	ck_assert_ptr_nonnull(text);
	ck_assert_msg(partition_manifest_parse(text, dir, &m, &e) == 0, "%s", e.msg);
	count = m->count;
	partition_manifest_free(m);
	free(text);
	free(path);
	return count;
}

/* The same names and the same bytes in every file (the same entries in
 * the checksum records, the same plan manifest but for a one-machine
 * run's boot_id). */
static void assert_same_dirs(const char *want, const char *got)
{
	char a[64][128], b[64][128];
	size_t n = list_dir(want, a, 64), m = list_dir(got, b, 64), i, la, lb;

	ck_assert_uint_gt(n, 0);
	ck_assert_uint_eq(n, m);
	for (i = 0; i < n; i++) {
		char *pa = test_path(want, a[i]), *pb = test_path(got, b[i]);
		unsigned char *da, *db;

		ck_assert_str_eq(a[i], b[i]);
		da = read_whole(pa, &la);
		db = read_whole(pb, &lb);
		ck_assert_ptr_nonnull(db);
		if (strcmp(a[i], PARTITION_MANIFEST) == 0)
			test_assert_same_plan_manifest(a[i], da, la, db, lb);
		else if (manifest_is_record(a[i]))
			test_assert_same_sums(a[i], da, la, db, lb);
		else
			ck_assert_msg(la == lb && memcmp(da, db, la) == 0, "%s differs", a[i]);
		free(da);
		free(db);
		free(pa);
		free(pb);
	}
}

/* The plan's file names that partition `index` of `count` writes. */
static size_t files_of(uint64_t max_shard, uint32_t index, uint32_t count, char names[][128])
{
	struct conversion *c;
	const struct plan *p = plan_of(max_shard, &c);
	bool *skip = partition_skip_files(p, index, count);
	size_t i, n = 0;

	for (i = 0; i < p->nfiles; i++)
		if (!skip[i])
			snprintf(names[n++], 128, "%s", p->files[i].name);
	free(skip);
	conversion_free(c);
	return n;
}

/* Hex SHA-256, computed here independently of partition.c. */
static void independent_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	ck_assert_int_eq(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL), 1);
	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* ---- syntax and grouping ------------------------------------------------- */

START_TEST(test_parse)
{
	static const char *const bad[] = {"3/3",
					  "1/0",
					  "",
					  "/",
					  "a/b",
					  "1/2/3",
					  "-1/3",
					  " 1/3",
					  "1/3 ",
					  "1",
					  "4294967296/4294967297",
					  "0x1/3"};
	uint32_t index = 99, count = 99;
	struct err e = {0};
	size_t i;

	ck_assert_int_eq(partition_parse("0/1", &index, &count, &e), 0);
	ck_assert_uint_eq(index, 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_int_eq(partition_parse("15/16", &index, &count, &e), 0);
	ck_assert_uint_eq(index, 15);
	ck_assert_uint_eq(count, 16);
	ck_assert_int_eq(partition_parse("4294967294/4294967295", &index, &count, &e), 0);
	ck_assert_uint_eq(count, 4294967295u);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err_clear(&e);
		ck_assert_msg(partition_parse(bad[i], &index, &count, &e) == -1, "'%s'", bad[i]);
		ck_assert_str_eq(err_name(e.code), "invalid_partition");
	}
	err_clear(&e);
	ck_assert_int_eq(partition_check(2, 2, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_partition");
}
END_TEST

START_TEST(test_groups_greedy)
{
	static const uint64_t sizes[] = {10, 30, 20, 30, 5};
	static const uint32_t two[] = {1, 0, 0, 1, 1}, seven[] = {3, 0, 2, 1, 4};
	struct plan_file files[5];
	struct plan p;
	uint32_t *g;
	size_t i;

	memset(&p, 0, sizeof(p));
	memset(files, 0, sizeof(files));
	for (i = 0; i < 5; i++)
		files[i].size = sizes[i];
	p.files = files;
	p.nfiles = 5;
	/* By size descending (30 #1, 30 #3, 20, 10, 5), each to the lightest
	 * group, ties to the lowest: {30, 20} and {30, 10, 5}. */
	g = partition_groups(&p, 2);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(g[i], two[i]);
	free(g);
	g = partition_groups(&p, 1);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(g[i], 0);
	free(g);
	g = partition_groups(&p, 7);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(g[i], seven[i]);
	free(g);
}
END_TEST

START_TEST(test_groups_of_a_plan)
{
	struct conversion *c;
	const struct plan *p = plan_of(SHARD, &c);
	uint64_t load[64], biggest = 0, lo, hi;
	uint32_t count, k, *g1, *g2;
	size_t i, owners;

	ck_assert_uint_ge(p->nfiles, 5);
	for (i = 0; i < p->nfiles; i++)
		biggest = p->files[i].size > biggest ? p->files[i].size : biggest;
	for (count = 1; count <= p->nfiles + 3; count++) {
		g1 = partition_groups(p, count);
		g2 = partition_groups(p, count);
		memset(load, 0, sizeof(load));
		for (i = 0; i < p->nfiles; i++) {
			ck_assert_uint_eq(g1[i], g2[i]);
			ck_assert_uint_lt(g1[i], count);
			load[g1[i]] += p->files[i].size;
		}
		/* Greedy balance: no group exceeds another by more than one file. */
		for (lo = UINT64_MAX, hi = 0, k = 0; k < count && k < p->nfiles; k++) {
			lo = load[k] < lo ? load[k] : lo;
			hi = load[k] > hi ? load[k] : hi;
		}
		ck_assert_uint_le(hi - lo, biggest);
		/* Every file is written by exactly one partition. */
		for (i = 0; i < p->nfiles; i++) {
			for (owners = 0, k = 0; k < count; k++) {
				bool *skip = partition_skip_files(p, k, count);

				owners += !skip[i];
				free(skip);
			}
			ck_assert_uint_eq(owners, 1);
		}
		free(g1);
		free(g2);
	}
	/* More partitions than files: the ones past the files write nothing. */
	count = (uint32_t)p->nfiles + 3;
	for (k = (uint32_t)p->nfiles; k < count; k++) {
		bool *skip = partition_skip_files(p, k, count);

		for (i = 0; i < p->nfiles; i++)
			ck_assert(skip[i]);
		free(skip);
	}
	conversion_free(c);
}
END_TEST

/* The results of the partitions of a plan add up to the whole plan's: each
 * file once, the tensors, tensor bytes and file bytes; only the whole run
 * lists the copied files and the index.  The JSON form names the
 * partition. */
START_TEST(test_partition_results_add_up)
{
	struct convert_options o = options(SHARD, 0, 0);
	struct conversion_result whole, part;
	uint64_t tensors = 0, bytes = 0, file_bytes = 0, t, b;
	char *dst = scratch("unused");
	struct conversion *c;
	size_t files = 0;
	struct err e = {0};
	uint32_t k;
	json_t *j;

	ck_assert_msg(conversion_prepare(src, dst, &o, &c, &e) == 0, "%s", e.msg);
	conversion_result_init(&whole);
	conversion_describe_result(c, &whole);
	ck_assert_uint_eq(whole.tensors, conversion_plan(c)->ntensors);
	ck_assert_uint_eq(whole.bytes, conversion_plan(c)->total_bytes);
	ck_assert_uint_eq(whole.file_bytes, conversion_plan(c)->total_file_bytes);
	ck_assert_str_eq(whole.files.items[whole.files.len - 1], INDEX_NAME);
	j = conversion_result_to_json(&whole);
	ck_assert_ptr_null(json_object_get(j, "partition"));
	ck_assert_ptr_null(json_object_get(j, "seconds"));
	json_decref(j);
	conversion_free(c);
	for (k = 0; k < 3; k++) {
		o = options(SHARD, k, 3);
		ck_assert_msg(conversion_prepare(src, dst, &o, &c, &e) == 0, "%s", e.msg);
		conversion_result_init(&part);
		conversion_describe_result(c, &part);
		conversion_totals(c, &t, &b);
		ck_assert_uint_eq(t, part.tensors);
		ck_assert_uint_eq(b, part.bytes);
		ck_assert_uint_gt(part.files.len, 0);
		ck_assert_uint_eq(part.planned_files, conversion_plan(c)->nfiles);
		tensors += part.tensors;
		bytes += part.bytes;
		file_bytes += part.file_bytes;
		files += part.files.len;
		part.seconds = 2;
		j = conversion_result_to_json(&part);
		ck_assert_int_eq(json_integer_value(json_object_get(
					 json_object_get(j, "partition"), "index")), k);
		ck_assert_int_eq(json_integer_value(json_object_get(
					 json_object_get(j, "partition"), "count")), 3);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "bytes")), part.bytes);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "file_bytes")),
				 part.file_bytes);
		ck_assert(json_real_value(json_object_get(j, "bytes_per_second")) ==
			  (double)part.bytes / 2);
		json_decref(j);
		/* A resumed run's rate: only the bytes it wrote, not the kept. */
		part.kept_data_bytes = part.bytes / 4;
		j = conversion_result_to_json(&part);
		ck_assert(json_real_value(json_object_get(j, "bytes_per_second")) ==
			  (double)(part.bytes - part.bytes / 4) / 2);
		json_decref(j);
		{
			struct exec_progress pr = {.bytes_total = 400, .bytes_done = 300,
						   .bytes_kept = 100, .elapsed_seconds = 2};

			ck_assert(progress_rate(&pr) == 100.0);
			ck_assert(progress_eta(&pr) == 1.0);
		}
		conversion_result_fini(&part);
		conversion_free(c);
	}
	ck_assert_uint_eq(tensors, whole.tensors);
	ck_assert_uint_eq(bytes, whole.bytes);
	ck_assert_uint_eq(file_bytes, whole.file_bytes);
	/* The whole run's list also has config.json and the index. */
	ck_assert_uint_eq(files + 2, whole.files.len);
	conversion_result_fini(&whole);
	free(dst);
}
END_TEST

/* ---- the manifest -------------------------------------------------------- */

START_TEST(test_manifest_round_trip)
{
	struct conversion *c, *again;
	const struct plan *p = plan_of(SHARD, &c);
	struct convert_options o = options(SHARD, 1, 3), back;
	struct partition_manifest *m;
	char digest[65], sha_hex[65], *text, *text2, *real = realpath(src, NULL), *dst;
	struct err e = {0};
	size_t i;

	text = partition_manifest_build(p, src, &o, 3, NULL, 0);
	text2 = partition_manifest_build(p, src, &o, 3, NULL, 0);
	ck_assert_str_eq(text, text2);
	ck_assert_ptr_null(strstr(text, ".safetensors\"\n"));
	ck_assert_int_eq(partition_manifest_parse(text, "here", &m, &e), 0);
	plan_digest(p, digest);
	ck_assert_str_eq(m->plan_digest, digest);
	ck_assert_str_eq(m->source, real);
	ck_assert_uint_eq(m->count, 3);
	ck_assert_str_eq(m->to, "native");
	ck_assert_str_eq(m->dtype, "auto");
	ck_assert_uint_eq(m->max_shard_size, SHARD);
	ck_assert_ptr_null(m->exclude);
	ck_assert(m->has_index);
	ck_assert_uint_eq(m->nfiles, p->nfiles);
	for (i = 0; i < p->nfiles; i++) {
		ck_assert_str_eq(m->files[i].name, p->files[i].name);
		ck_assert_uint_eq(m->files[i].size, p->files[i].size);
		independent_sha256_hex(p->files[i].header, p->files[i].header_len, sha_hex);
		ck_assert_str_eq(m->files[i].header_sha256, sha_hex);
	}
	/* The options it records plan the same output again. */
	ck_assert_int_eq(partition_manifest_options(m, &back, &e), 0);
	dst = scratch("again");
	ck_assert_int_eq(conversion_prepare(m->source, dst, &back, &again, &e), 0);
	plan_digest(conversion_plan(again), digest);
	ck_assert_str_eq(digest, m->plan_digest);
	conversion_free(again);
	partition_manifest_free(m);
	free(dst);
	free(text2);
	free(text);
	free(real);
	conversion_free(c);
}
END_TEST

/* --allow-gaps shapes a consolidation's plan: the manifest keeps it and
 * hands it back to finalize's planning (absent: false). */
START_TEST(test_manifest_allow_gaps)
{
	struct conversion *c;
	const struct plan *p = plan_of(SHARD, &c);
	struct convert_options o = options(SHARD, 1, 3), back;
	struct partition_manifest *m;
	struct err e = {0};
	char *text;
	int gaps;

	for (gaps = 0; gaps <= 1; gaps++) {
		o.allow_gaps = gaps;
		text = partition_manifest_build(p, src, &o, 3, NULL, 0);
		ck_assert_int_eq(partition_manifest_parse(text, "here", &m, &e), 0);
		ck_assert_int_eq(m->allow_gaps, gaps);
		ck_assert_int_eq(partition_manifest_options(m, &back, &e), 0);
		ck_assert_int_eq(back.allow_gaps, gaps);
		ck_assert_int_eq(strstr(text, "\"allow_gaps\": true") != NULL, gaps);
		partition_manifest_free(m);
		free(text);
	}
	conversion_free(c);
}
END_TEST

START_TEST(test_manifest_mismatch)
{
	struct conversion *ca, *cb;
	const struct plan *a = plan_of(SHARD, &ca), *b = plan_of(SHARD + 10000, &cb);
	struct convert_options o = options(SHARD, 0, 3);
	struct partition_manifest *ma, *ma4, *mb, *mother;
	char *ta = partition_manifest_build(a, src, &o, 3, NULL, 0);
	char *ta4 = partition_manifest_build(a, src, &o, 4, NULL, 0);
	char *tb = partition_manifest_build(b, src, &o, 3, NULL, 0);
	char *tother = partition_manifest_build(a, "/elsewhere/hf", &o, 3, NULL, 0);
	struct err e = {0};

	ck_assert_int_eq(partition_manifest_parse(ta, "d", &ma, &e), 0);
	ck_assert_int_eq(partition_manifest_parse(ta4, "d", &ma4, &e), 0);
	ck_assert_int_eq(partition_manifest_parse(tb, "d", &mb, &e), 0);
	ck_assert_int_eq(partition_manifest_parse(tother, "d", &mother, &e), 0);
	ck_assert_int_eq(partition_manifest_compare(ma, ma, "d", false, &e), 0);
	ck_assert_int_eq(partition_manifest_compare(ma, mb, "d", false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	ck_assert_msg(strncmp(e.msg, "d: the destination holds a conversion in 3 partitions of "
				     "another plan (digest ", 78) == 0, "%s", e.msg);
	ck_assert_msg(strstr(e.msg, "other options or input); remove it first to start over"),
		      "%s", e.msg);
	err_clear(&e);
	{
		/* not partitioned: worded by the count, and --overwrite replaces it */
		char *t0a = partition_manifest_build(a, src, &o, 0, NULL, 0);
		char *t0b = partition_manifest_build(b, src, &o, 0, NULL, 0);
		struct partition_manifest *m0a, *m0b;

		ck_assert_int_eq(partition_manifest_parse(t0a, "d", &m0a, &e), 0);
		ck_assert_int_eq(partition_manifest_parse(t0b, "d", &m0b, &e), 0);
		ck_assert_int_eq(partition_manifest_compare(m0a, m0b, "d", true, &e), -1);
		ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
		ck_assert_msg(strncmp(e.msg, "d: the destination holds a conversion of another "
					     "plan (digest ", 62) == 0, "%s", e.msg);
		ck_assert_msg(strstr(e.msg, "other options or input); remove it or pass "
					    "--overwrite (without --resume) to replace it"),
			      "%s", e.msg);
		err_clear(&e);
		partition_manifest_free(m0a);
		partition_manifest_free(m0b);
		free(t0a);
		free(t0b);
	}
	ck_assert_int_eq(partition_manifest_compare(ma, ma4, "d", false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	ck_assert_ptr_nonnull(strstr(e.msg, "in 3 partitions, not 4"));
	err_clear(&e);
	ck_assert_int_eq(partition_manifest_compare(ma, mother, "d", false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	ck_assert_ptr_nonnull(strstr(e.msg, "/elsewhere/hf"));
	err_clear(&e);
	{
		/* the same tensor plan with another --dtype or --allow-gaps */
		struct convert_options od = o;
		struct partition_manifest *md;
		char *td;

		od.dtype = DTYPE_CHOICE_F32;
		od.allow_gaps = true;
		td = partition_manifest_build(a, src, &od, 3, NULL, 0);
		ck_assert_int_eq(partition_manifest_parse(td, "d", &md, &e), 0);
		ck_assert_int_eq(partition_manifest_compare(ma, md, "d", false, &e), -1);
		ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
		ck_assert_str_eq(e.msg, "d: the destination holds a partitioned conversion with"
					" --dtype auto, not --dtype f32 --allow-gaps; run every"
					" partition with the same options");
		partition_manifest_free(md);
		free(td);
	}
	partition_manifest_free(ma);
	partition_manifest_free(ma4);
	partition_manifest_free(mb);
	partition_manifest_free(mother);
	free(ta);
	free(ta4);
	free(tb);
	free(tother);
	conversion_free(ca);
	conversion_free(cb);
}
END_TEST

/* The identities of the source files round-trip through the manifest; a
 * file with another size, mtime or ETag is source_changed, another st_dev,
 * st_ino or ctime alone is not (a pod on another node). */
START_TEST(test_manifest_sources)
{
	struct conversion *c;
	const struct plan *p = plan_of(SHARD, &c);
	struct convert_options o = options(SHARD, 0, 3);
	struct store_source srcs[2] = {
		{.name = "model-00001-of-00002.safetensors",
		 .id = {.kind = STORE_ID_FILE, .dev = UINT64_MAX, .ino = 42, .size = 1000,
			.mtime_ns = 1700000000000000001, .ctime_ns = -5}},
		{.name = "model-00002-of-00002.safetensors",
		 .id = {.kind = STORE_ID_OBJECT, .etag = "\"abc-2\"", .version_id = "v1"}},
	};
	struct partition_manifest *ma, *mb, *mold;
	char *ta, *tb, *told;
	struct err e = {0};

	ta = partition_manifest_build(p, src, &o, 3, srcs, 2);
	ck_assert_int_eq(partition_manifest_parse(ta, "d", &ma, &e), 0);
	ck_assert_uint_eq(ma->nsources, 2);
	ck_assert_str_eq(ma->sources[0].name, srcs[0].name);
	ck_assert(!store_identity_differs(&srcs[0].id, &ma->sources[0].id, false, e.msg, 64));
	ck_assert(!store_identity_differs(&srcs[1].id, &ma->sources[1].id, false, e.msg, 64));
	ck_assert_uint_eq(ma->sources[0].id.dev, UINT64_MAX);

	/* Another node: other st_dev, st_ino and ctime, the same file. */
	srcs[0].id.dev = 7;
	srcs[0].id.ino = 8;
	srcs[0].id.ctime_ns = 1;
	tb = partition_manifest_build(p, src, &o, 3, srcs, 2);
	ck_assert_int_eq(partition_manifest_parse(tb, "d", &mb, &e), 0);
	ck_assert_int_eq(partition_manifest_compare(ma, mb, "d", false, &e), 0);
	partition_manifest_free(mb);
	free(tb);

	/* Rewritten in place: another mtime. */
	srcs[0].id.mtime_ns++;
	tb = partition_manifest_build(p, src, &o, 3, srcs, 2);
	ck_assert_int_eq(partition_manifest_parse(tb, "d", &mb, &e), 0);
	ck_assert_int_eq(partition_manifest_compare(ma, mb, "d", false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_changed");
	ck_assert_ptr_nonnull(strstr(e.msg, "model-00001-of-00002.safetensors"));
	ck_assert_ptr_nonnull(strstr(e.msg, "mtime"));
	partition_manifest_free(mb);
	free(tb);

	/* Uploaded again: another ETag. */
	srcs[0].id.mtime_ns--;
	strcpy(srcs[1].id.etag, "\"def-2\"");
	tb = partition_manifest_build(p, src, &o, 3, srcs, 2);
	ck_assert_int_eq(partition_manifest_parse(tb, "d", &mb, &e), 0);
	err_clear(&e);
	ck_assert_int_eq(partition_manifest_compare(ma, mb, "d", false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_changed");
	ck_assert_ptr_nonnull(strstr(e.msg, "model-00002-of-00002.safetensors"));

	/* A manifest of an earlier version records no sources: nothing to
	 * hold to; a malformed record is not ours. */
	told = partition_manifest_build(p, src, &o, 3, NULL, 0);
	ck_assert_int_eq(partition_manifest_parse(told, "d", &mold, &e), 0);
	ck_assert_uint_eq(mold->nsources, 0);
	ck_assert_int_eq(partition_manifest_compare(mold, mb, "d", false, &e), 0);
	partition_manifest_free(mold);
	free(told);
	told = strdup(ta);
	memcpy(strstr(told, "\"mtime_ns\""), "\"mtime_xx\"", 10);
	err_clear(&e);
	ck_assert_int_eq(partition_manifest_parse(told, "d", &mold, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	ck_assert_ptr_nonnull(strstr(e.msg, "source_files"));
	free(told);

	partition_manifest_free(mb);
	partition_manifest_free(ma);
	free(tb);
	free(ta);
	conversion_free(c);
}
END_TEST

START_TEST(test_manifest_not_ours)
{
	static const char *const texts[] = {
		"not json",
		"[]",
		"{}",
		"{\"format\": \"something-else\", \"version\": 1}",
		"{\"format\": \"ckptconv-plan\", \"version\": 2}",
		"{\"format\": \"ckptconv-plan\", \"version\": 1, \"source\": \"/s\", \"partitions\": -1,"
		" \"plan_digest\": \""
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"\", \"index\": true, \"options\": {\"to\": \"native\", \"dtype\": \"auto\","
		" \"max_shard_size\": 1}, \"files\": []}",
		"{\"format\": \"ckptconv-plan\", \"version\": 1, \"source\": \"/s\", \"partitions\": 2,"
		" \"plan_digest\": \"xyz\", \"index\": true, \"options\": {\"to\": \"native\","
		" \"dtype\": \"auto\", \"max_shard_size\": 1}, \"files\": []}",
		"{\"format\": \"ckptconv-plan\", \"version\": 1, \"source\": \"/s\", \"partitions\": 2,"
		" \"plan_digest\": \""
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"\", \"index\": true, \"options\": {\"to\": \"native\", \"dtype\": \"auto\","
		" \"max_shard_size\": 1}, \"files\": [{\"name\": \"../x\", \"size\": 1,"
		" \"header_sha256\": \""
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"\"}]}",
	};
	struct partition_manifest *m;
	struct err e;
	size_t i;

	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		err_clear(&e);
		ck_assert_msg(partition_manifest_parse(texts[i], "d", &m, &e) == -1, "text %zu", i);
		ck_assert_ptr_null(m);
		ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	}
}
END_TEST

/* ---- whole runs ---------------------------------------------------------- */

START_TEST(test_partitions_equal_one_run)
{
	char *ref = scratch("ref"), *out = scratch("out");
	struct conversion_result r;
	struct err e = {0};

	ck_assert_int_eq(convert(ref, SHARD, 0, 0, false, &e), 0);
	all_partitions(out, SHARD, 3);
	ck_assert(exists(out, PARTITION_MANIFEST));
	ck_assert(!exists(out, INDEX_NAME));
	ck_assert(!exists(out, "config.json"));
	ck_assert_msg(finalize(out, &r, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	ck_assert(!r.already_finished);
	ck_assert_uint_eq(r.files.len, 14);
	ck_assert_str_eq(r.files.items[r.files.len - 1], INDEX_NAME);
	ck_assert_uint_gt(r.tensors, 0);
	conversion_result_fini(&r);
	/* The manifest is a finished conversion's now, as one run leaves. */
	ck_assert_uint_eq(manifest_count(out), 0);
	ck_assert(!exists(out, "ckptconv-sums.0.json"));
	assert_same_dirs(ref, out);
	/* Idempotent: a finished checkpoint is validated and left as it is. */
	ck_assert_int_eq(finalize(out, &r, &e), 0);
	ck_assert(r.already_finished);
	ck_assert_uint_eq(r.files.len, 14);
	conversion_result_fini(&r);
	assert_same_dirs(ref, out);
	free(ref);
	free(out);
}
END_TEST

START_TEST(test_single_file_plan)
{
	char *ref = scratch("ref"), *out = scratch("out");
	struct conversion_result r;
	struct err e = {0};

	ck_assert_int_eq(convert(ref, 0, 0, 0, false, &e), 0);
	ck_assert(!exists(ref, INDEX_NAME));
	all_partitions(out, 0, 2);
	ck_assert(exists(out, "model.safetensors"));
	ck_assert_msg(finalize(out, &r, &e) == 0, "%s", e.msg);
	conversion_result_fini(&r);
	assert_same_dirs(ref, out);
	free(ref);
	free(out);
}
END_TEST

START_TEST(test_more_partitions_than_files)
{
	char *out = scratch("out"), names[64][128];
	struct err e = {0};

	ck_assert_int_eq(convert(out, SHARD, 39, 40, false, &e), 0);
	/* The manifest and the partition's empty checksum record. */
	ck_assert_uint_eq(list_dir(out, names, 64), 2);
	ck_assert_str_eq(names[0], PARTITION_MANIFEST);
	ck_assert_str_eq(names[1], "ckptconv-sums.39.json");
	free(out);
}
END_TEST

/* Runs every partition but `skipped` into out. */
static void all_but(const char *out, uint32_t skipped)
{
	struct err e = {0};
	uint32_t i;

	for (i = 0; i < 3; i++)
		if (i != skipped)
			ck_assert_int_eq(convert(out, SHARD, i, 3, false, &e), 0);
}

static void assert_incomplete(const char *out, const char *name, const char *why)
{
	struct conversion_result r;
	struct err e = {0};
	char *needle;

	if (asprintf(&needle, "%s (%s", name, why) < 0)
		abort();
	ck_assert_int_eq(finalize(out, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "partition_incomplete");
	ck_assert_msg(strstr(e.msg, needle) != NULL, "'%s' not in: %s", needle, e.msg);
	ck_assert(exists(out, PARTITION_MANIFEST));
	ck_assert(!exists(out, INDEX_NAME));
	ck_assert(!exists(out, "config.json"));
	free(needle);
}

START_TEST(test_finalize_missing_partition)
{
	char *out = scratch("out"), names[64][128];
	size_t n = files_of(SHARD, 1, 3, names);

	all_but(out, 1);
	ck_assert_uint_gt(n, 0);
	assert_incomplete(out, names[0], "missing");
	free(out);
}
END_TEST

START_TEST(test_finalize_truncated_file)
{
	char *out = scratch("out"), names[64][128], *path, why[64];
	struct stat st;

	files_of(SHARD, 2, 3, names);
	all_but(out, 3);
	path = test_path(out, names[0]);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(truncate(path, st.st_size - 1), 0);
	snprintf(why, sizeof(why), "%lld bytes, planned %lld", (long long)st.st_size - 1,
		 (long long)st.st_size);
	assert_incomplete(out, names[0], why);
	free(path);
	free(out);
}
END_TEST

START_TEST(test_finalize_changed_header)
{
	char *out = scratch("out"), names[64][128], *path;
	struct conversion_result r;
	struct err e = {0};
	FILE *f;

	files_of(SHARD, 0, 3, names);
	all_but(out, 3);
	path = test_path(out, names[0]);
	f = fopen(path, "r+b");
	ck_assert_ptr_nonnull(f);
	fseek(f, 20, SEEK_SET);
	fputc('#', f);
	fclose(f);
	assert_incomplete(out, names[0], "header not as planned");
	/* Rerunning the partition that owns the file repairs it. */
	ck_assert_int_eq(convert(out, SHARD, 0, 3, false, &e), 0);
	ck_assert_msg(finalize(out, &r, &e) == 0, "%s", e.msg);
	conversion_result_fini(&r);
	free(path);
	free(out);
}
END_TEST

START_TEST(test_finalize_source_changed)
{
	char *out = scratch("out"), *path, *text;
	struct conversion_result r;
	struct err e = {0};
	size_t len;
	char *digest;

	all_but(out, 3);
	path = test_path(out, PARTITION_MANIFEST);
	text = (char *)read_whole(path, &len);
	digest = strstr(text, "\"plan_digest\": \"");
	ck_assert_ptr_nonnull(digest);
	digest += strlen("\"plan_digest\": \"");
	digest[0] = digest[0] == '0' ? '1' : '0';
	test_write_file(path, text, len);
	ck_assert_int_eq(finalize(out, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	ck_assert_ptr_nonnull(strstr(e.msg, "no longer gives the planned output"));
	ck_assert(!exists(out, INDEX_NAME));
	free(text);
	free(path);
	free(out);
}
END_TEST

START_TEST(test_finalize_nothing_there)
{
	char *out = scratch("empty");
	struct conversion_result r;
	struct err e = {0};

	ck_assert_int_eq(mkdir(out, 0755), 0);
	ck_assert_int_eq(finalize(out, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "partition_incomplete");
	err_clear(&e);
	free(out);
	out = scratch("absent");
	ck_assert_int_eq(finalize(out, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "partition_incomplete");
	free(out);
}
END_TEST

/* ---- the destination ----------------------------------------------------- */

START_TEST(test_another_plan_refused)
{
	char *out = scratch("out"), before[64][128], after[64][128];
	struct err e = {0};
	size_t n, i;

	ck_assert_int_eq(convert(out, SHARD, 0, 3, false, &e), 0);
	n = list_dir(out, before, 64);
	ck_assert_int_eq(convert(out, SHARD + 10000, 1, 3, false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	err_clear(&e);
	ck_assert_int_eq(convert(out, SHARD, 1, 4, true, &e), -1);
	ck_assert_str_eq(err_name(e.code), "manifest_mismatch");
	ck_assert_uint_eq(list_dir(out, after, 64), n);
	for (i = 0; i < n; i++)
		ck_assert_str_eq(before[i], after[i]);
	free(out);
}
END_TEST

START_TEST(test_unrelated_files)
{
	char *out = scratch("out"), *notes;
	struct conversion_result r;
	struct err e = {0};

	ck_assert_int_eq(mkdir(out, 0755), 0);
	notes = test_path(out, "notes.txt");
	test_write_file(notes, "hello\n", 6);
	ck_assert_int_eq(convert(out, SHARD, 0, 3, false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	ck_assert_ptr_nonnull(strstr(e.msg, "notes.txt"));
	ck_assert(!exists(out, PARTITION_MANIFEST));
	err_clear(&e);
	/* With overwrite the partitions go ahead and leave the file alone. */
	ck_assert_int_eq(convert(out, SHARD, 0, 3, true, &e), 0);
	ck_assert_int_eq(convert(out, SHARD, 1, 3, true, &e), 0);
	ck_assert_int_eq(convert(out, SHARD, 2, 3, false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	err_clear(&e);
	ck_assert_int_eq(convert(out, SHARD, 2, 3, true, &e), 0);
	ck_assert_msg(finalize(out, &r, &e) == 0, "%s", e.msg);
	conversion_result_fini(&r);
	ck_assert(exists(out, "notes.txt"));
	free(notes);
	free(out);
}
END_TEST

START_TEST(test_overwrite_previous_checkpoint)
{
	char *out = scratch("out"), *ref = scratch("ref");
	struct conversion_result r;
	struct err e = {0};

	/* A finished checkpoint of another plan (one big shard) is there. */
	ck_assert_int_eq(convert(out, 0, 0, 0, false, &e), 0);
	ck_assert(exists(out, "model.safetensors"));
	ck_assert_int_eq(convert(out, SHARD, 0, 3, false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	err_clear(&e);
	ck_assert_int_eq(convert(out, SHARD, 0, 3, true, &e), 0);
	ck_assert(!exists(out, "model.safetensors"));
	ck_assert(!exists(out, INDEX_NAME));
	ck_assert_int_eq(convert(out, SHARD, 1, 3, false, &e), 0);
	ck_assert_int_eq(convert(out, SHARD, 2, 3, false, &e), 0);
	ck_assert_msg(finalize(out, &r, &e) == 0, "%s", e.msg);
	conversion_result_fini(&r);
	ck_assert_int_eq(convert(ref, SHARD, 0, 0, false, &e), 0);
	assert_same_dirs(ref, out);
	free(ref);
	free(out);
}
END_TEST

START_TEST(test_unpartitioned_overwrite)
{
	char *out = scratch("out"), *ref = scratch("ref");
	struct err e = {0};

	ck_assert_int_eq(convert(out, SHARD, 0, 3, false, &e), 0);
	ck_assert_int_eq(convert(out, SHARD, 0, 0, false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	err_clear(&e);
	/* Replacing an abandoned partitioned conversion drops its records:
	 * the manifest there now is the new conversion's (0 partitions). */
	ck_assert_int_eq(convert(out, SHARD, 0, 0, true, &e), 0);
	ck_assert(!exists(out, "ckptconv-sums.0.json"));
	ck_assert(exists(out, "ckptconv-sums.json"));
	ck_assert_uint_eq(manifest_count(out), 0);
	ck_assert_int_eq(convert(ref, SHARD, 0, 0, false, &e), 0);
	assert_same_dirs(ref, out);
	free(ref);
	free(out);
}
END_TEST

static int refuse_source(const char *source, void *arg, struct err *e)
{
	*(char **)arg = xstrdup(source);
	return err_set(e, ERR_FORBIDDEN_PATH, "%s: not allowed", source);
}

START_TEST(test_finalize_source_vetted)
{
	char *out = scratch("out"), *seen = NULL, *real = realpath(src, NULL);
	struct finalize_options o;
	struct conversion_result r;
	struct err e = {0};

	all_partitions(out, SHARD, 2);
	finalize_options_init(&o);
	o.check_source = refuse_source;
	o.check_source_arg = &seen;
	ck_assert_int_eq(finalize_destination(out, &o, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	ck_assert_str_eq(seen, real);
	ck_assert(!exists(out, INDEX_NAME));
	ck_assert(exists(out, PARTITION_MANIFEST));
	free(seen);
	free(real);
	free(out);
}
END_TEST

static int little_space(const char *dir, uint64_t *free_bytes)
{
	(void)dir;
	*free_bytes = 1000;
	return 0;
}

START_TEST(test_insufficient_space)
{
	char *out = scratch("out");
	struct err e = {0};

	store_local_free_bytes_hook = little_space;
	ck_assert_int_eq(convert(out, SHARD, 1, 3, false, &e), -1);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	ck_assert_ptr_nonnull(strstr(e.msg, "this partition needs"));
	ck_assert(!exists(out, PARTITION_MANIFEST));
	free(out);
}
END_TEST

/* A partition rerun with resume keeps its own finished files (same inode
 * and mtime) and writes again only the one whose byte was changed; the
 * other partitions' files are not its to check. */
START_TEST(test_partition_resume)
{
	char *out = scratch("out"), *ref = scratch("ref"), names[64][128], *path;
	struct convert_options o = options(SHARD, 1, 3);
	struct conversion_result r;
	uint64_t kept_files, kept_bytes;
	struct stat before[64], after;
	struct conversion *c;
	struct err e = {0};
	size_t n, i;
	int byte;
	FILE *f;

	all_partitions(out, SHARD, 3);
	n = files_of(SHARD, 1, 3, names);
	ck_assert_uint_gt(n, 1);
	for (i = 0; i < n; i++) {
		path = test_path(out, names[i]);
		ck_assert_int_eq(stat(path, &before[i]), 0);
		free(path);
	}
	/* One byte of the partition's first file changed in place. */
	path = test_path(out, names[0]);
	f = fopen(path, "r+b");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, (long)before[0].st_size - 1, SEEK_SET), 0);
	byte = fgetc(f);
	ck_assert_int_ne(byte, EOF);
	ck_assert_int_eq(fseek(f, (long)before[0].st_size - 1, SEEK_SET), 0);
	ck_assert_int_eq(fputc(byte ^ 0x5a, f), byte ^ 0x5a);
	fclose(f);
	free(path);
	o.resume = true;
	ck_assert_msg(conversion_prepare(src, out, &o, &c, &e) == 0, "%s", e.msg);
	ck_assert_msg(conversion_run(c, pool, &e) == 0, "%s: %s", err_name(e.code), e.msg);
	conversion_kept(c, &kept_files, &kept_bytes);
	conversion_free(c);
	ck_assert_uint_eq(kept_files, n - 1);
	for (i = 0; i < n; i++) {
		path = test_path(out, names[i]);
		ck_assert_int_eq(stat(path, &after), 0);
		free(path);
		if (i == 0)
			ck_assert(after.st_ino != before[i].st_ino);
		else
			ck_assert_msg(after.st_ino == before[i].st_ino &&
					      after.st_mtim.tv_nsec == before[i].st_mtim.tv_nsec &&
					      after.st_mtime == before[i].st_mtime,
				      "%s was written again", names[i]);
	}
	ck_assert_msg(finalize(out, &r, &e) == 0, "%s", e.msg);
	conversion_result_fini(&r);
	ck_assert_int_eq(convert(ref, SHARD, 0, 0, false, &e), 0);
	assert_same_dirs(ref, out);
	free(ref);
	free(out);
}
END_TEST

static Suite *partition_suite(void)
{
	Suite *s = suite_create("partition");
	TCase *tc = tcase_create("partition");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_parse);
	tcase_add_test(tc, test_groups_greedy);
	tcase_add_test(tc, test_groups_of_a_plan);
	tcase_add_test(tc, test_partition_results_add_up);
	tcase_add_test(tc, test_manifest_round_trip);
	tcase_add_test(tc, test_manifest_allow_gaps);
	tcase_add_test(tc, test_manifest_mismatch);
	tcase_add_test(tc, test_manifest_sources);
	tcase_add_test(tc, test_manifest_not_ours);
	tcase_add_test(tc, test_partitions_equal_one_run);
	tcase_add_test(tc, test_single_file_plan);
	tcase_add_test(tc, test_more_partitions_than_files);
	tcase_add_test(tc, test_finalize_missing_partition);
	tcase_add_test(tc, test_finalize_truncated_file);
	tcase_add_test(tc, test_finalize_changed_header);
	tcase_add_test(tc, test_finalize_source_changed);
	tcase_add_test(tc, test_finalize_nothing_there);
	tcase_add_test(tc, test_another_plan_refused);
	tcase_add_test(tc, test_unrelated_files);
	tcase_add_test(tc, test_overwrite_previous_checkpoint);
	tcase_add_test(tc, test_insufficient_space);
	tcase_add_test(tc, test_unpartitioned_overwrite);
	tcase_add_test(tc, test_partition_resume);
	tcase_add_test(tc, test_finalize_source_vetted);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(partition_suite());
}
