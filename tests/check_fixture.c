/* SPDX-License-Identifier: MIT */
/*
 * check_fixture: the synthetic checkpoints.  The tiny preset has exactly the
 * golden HF checkpoint's tensor names, dtypes, shapes and config; output is
 * byte-identical for the same options and differs with the seed; the f32
 * variant, the mini preset's Ling-mini-2.0 shapes and shard split, the
 * destination checks, and a failed write leaving nothing behind.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "ckptconv/verify.h"
#include "fixture/fixture.h"
#include "testutil.h"

static char *tmp;

static void setup(void)
{
	tmp = test_mkdtemp();
}

static void teardown(void)
{
	test_rmtree(tmp);
	free(tmp);
	tmp = NULL;
}

static struct fixture_options tiny_options(void)
{
	struct fixture_options o = {.preset = FIXTURE_TINY, .dtype = DTYPE_BF16, .seed = 1};

	return o;
}

/* Writes a fixture into tmp/name; returns the path (caller frees). */
static char *make_fixture(const char *name, const struct fixture_options *o)
{
	char *dir = test_path(tmp, name);
	struct err e = {0};

	ck_assert_msg(fixture_write(dir, o, &e) == 0, "fixture_write: %s: %s", e.code, e.msg);
	return dir;
}

static struct ckpt *open_ckpt(const char *dir)
{
	struct ckpt *c = NULL;
	struct err e = {0};

	ck_assert_msg(ckpt_open(dir, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s: %s: %s", dir, e.code,
		      e.msg);
	return c;
}

static void assert_same_shape(const struct ckpt_tensor *a, const struct ckpt_tensor *b)
{
	int i;

	ck_assert_int_eq(a->ndim, b->ndim);
	for (i = 0; i < a->ndim; i++)
		ck_assert_uint_eq(a->shape[i], b->shape[i]);
}

static char *read_whole(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	ck_assert_msg(f != NULL, "%s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert(fread(buf, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Sorted names of the entries of dir, one string joined by '\n'. */
static char *list_dir(const char *dir)
{
	struct strvec v = {0};
	struct dirent **entries;
	size_t len = 1, i;
	int n, k;
	char *out;

	n = scandir(dir, &entries, NULL, alphasort);
	ck_assert_msg(n >= 0, "%s", dir);
	for (k = 0; k < n; k++) {
		if (strcmp(entries[k]->d_name, ".") && strcmp(entries[k]->d_name, ".."))
			strvec_push(&v, entries[k]->d_name);
		free(entries[k]);
	}
	free(entries);
	for (i = 0; i < v.len; i++)
		len += strlen(v.items[i]) + 1;
	out = calloc(1, len);
	for (i = 0; i < v.len; i++) {
		strcat(out, v.items[i]);
		strcat(out, "\n");
	}
	strvec_fini(&v);
	return out;
}

START_TEST(tiny_has_golden_layout)
{
	struct fixture_options o = tiny_options();
	char *dir = make_fixture("tiny", &o), *golden_dir = test_path(test_golden_dir(), "tiny/hf");
	struct ckpt *ours = open_ckpt(dir), *golden = open_ckpt(golden_dir);
	struct verify_report r;
	struct err e = {0};
	const char *key;
	json_t *value;
	size_t i;

	ck_assert_uint_eq(ours->ntensors, golden->ntensors);
	for (i = 0; i < golden->ntensors; i++) {
		ck_assert_str_eq(ours->tensors[i].name, golden->tensors[i].name);
		ck_assert_msg(ours->tensors[i].dtype == golden->tensors[i].dtype, "%s",
			      golden->tensors[i].name);
		assert_same_shape(&ours->tensors[i], &golden->tensors[i]);
	}
	/* the same config keys with the same values */
	ck_assert_uint_eq(json_object_size(ours->config), json_object_size(golden->config));
	json_object_foreach(golden->config, key, value)
		ck_assert_msg(json_equal(value, json_object_get(ours->config, key)),
			      "config key %s", key);
	/* several shards and an index, like the golden input */
	ck_assert(ours->has_index);
	ck_assert_uint_ge(ours->nfiles, 3);
	/* verify agrees: only the random bytes differ */
	ck_assert_int_eq(verify_checkpoints(golden_dir, dir, NULL, NULL, 0, &r, &e), 0);
	ck_assert_uint_eq(r.tensors_compared, golden->ntensors);
	ck_assert_uint_eq(r.only_expected + r.only_actual + r.dtype_mismatch + r.shape_mismatch, 0);
	ck_assert_uint_eq(r.bytes_mismatch, golden->ntensors);
	ckpt_free(ours);
	ckpt_free(golden);
	free(dir);
	free(golden_dir);
}
END_TEST

START_TEST(same_options_same_bytes)
{
	struct fixture_options o = tiny_options();
	char *a = make_fixture("a", &o), *b = make_fixture("b", &o);
	char *la = list_dir(a), *lb = list_dir(b), *name, *save = NULL;
	size_t files = 0;

	ck_assert_str_eq(la, lb);
	for (name = strtok_r(la, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
		char *pa = test_path(a, name), *pb = test_path(b, name), *da, *db;
		size_t na, nb;

		da = read_whole(pa, &na);
		db = read_whole(pb, &nb);
		ck_assert_msg(na == nb && memcmp(da, db, na) == 0, "%s differs", name);
		files++;
		free(da);
		free(db);
		free(pa);
		free(pb);
	}
	ck_assert_uint_ge(files, 5); /* config, shards, index */
	free(la);
	free(lb);
	free(a);
	free(b);
}
END_TEST

START_TEST(seed_changes_every_tensor)
{
	struct fixture_options o = tiny_options();
	char *a = make_fixture("a", &o), *b;
	struct verify_report r;
	struct err e = {0};

	o.seed = 2;
	b = make_fixture("b", &o);
	ck_assert_int_eq(verify_checkpoints(a, b, NULL, NULL, 0, &r, &e), 0);
	ck_assert_uint_eq(r.tensors_compared, 35);
	ck_assert_uint_eq(r.bytes_mismatch, 35);
	ck_assert_uint_eq(r.differences, 35);
	free(a);
	free(b);
}
END_TEST

/* Values are small finite numbers, and F32 ones use their whole mantissa
 * (so a cast to BF16 has something to round). */
START_TEST(f32_variant)
{
	struct fixture_options o = tiny_options();
	char *dir;
	struct ckpt *c;
	FILE *f;
	char *path;
	size_t i, k, low_bits_set = 0, values = 0;

	o.dtype = DTYPE_F32;
	dir = make_fixture("f32", &o);
	c = open_ckpt(dir);
	ck_assert_str_eq(ckpt_config_string(c, "torch_dtype"), "float32");
	for (i = 0; i < c->ntensors; i++) {
		const struct ckpt_tensor *t = &c->tensors[i];
		float *data = malloc(t->nbytes);

		ck_assert_msg(t->dtype == DTYPE_F32, "%s", t->name);
		path = test_path(dir, c->files[t->file].name);
		f = fopen(path, "rb");
		ck_assert(f && fseek(f, (long)t->offset, SEEK_SET) == 0);
		ck_assert(fread(data, 1, t->nbytes, f) == t->nbytes);
		fclose(f);
		for (k = 0; k < t->nbytes / 4; k++) {
			uint32_t bits;

			memcpy(&bits, &data[k], 4);
			ck_assert_msg(data[k] != 0 && data[k] > -1 && data[k] < 1, "%s[%zu] = %g",
				      t->name, k, (double)data[k]);
			low_bits_set += (bits & 0xffff) != 0;
			values++;
		}
		free(data);
		free(path);
	}
	ck_assert_uint_gt(low_bits_set, values * 9 / 10);
	ckpt_free(c);
	free(dir);
}
END_TEST

START_TEST(bf16_router_stays_f32)
{
	struct fixture_options o = tiny_options();
	char *dir = make_fixture("bf16", &o);
	struct ckpt *c = open_ckpt(dir);
	size_t i, f32 = 0;

	ck_assert_str_eq(ckpt_config_string(c, "torch_dtype"), "bfloat16");
	for (i = 0; i < c->ntensors; i++) {
		int router = strstr(c->tensors[i].name, ".mlp.gate.") != NULL;

		ck_assert_msg(c->tensors[i].dtype == (router ? DTYPE_F32 : DTYPE_BF16), "%s",
			      c->tensors[i].name);
		f32 += router;
	}
	ck_assert_uint_eq(f32, 2);
	ckpt_free(c);
	free(dir);
}
END_TEST

static const struct ckpt_tensor *tensor(const struct ckpt *c, const char *name)
{
	long i = ckpt_find(c, name);

	ck_assert_msg(i >= 0, "missing %s", name);
	return &c->tensors[i];
}

static void assert_shape2(const struct ckpt *c, const char *name, uint64_t d0, uint64_t d1)
{
	const struct ckpt_tensor *t = tensor(c, name);

	ck_assert_msg(t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1, "%s", name);
}

/* Ling-mini-2.0's dimensions, generated for real once (about 1.7 GB). */
START_TEST(mini_shapes_and_shards)
{
	struct fixture_options o = {.preset = FIXTURE_MINI, .dtype = DTYPE_BF16, .seed = 3};
	char *dir = make_fixture("mini", &o);
	struct ckpt *c = open_ckpt(dir);
	int64_t v;
	size_t i, experts = 0;
	char name[128];

	ck_assert_uint_eq(c->ntensors, 3 + 9 + 6 + 2 + 3 * 256 + 3);
	assert_shape2(c, "model.word_embeddings.weight", 8192, 2048);
	assert_shape2(c, "lm_head.weight", 8192, 2048);
	assert_shape2(c, "model.layers.0.attention.query_key_value.weight", (16 + 2 * 4) * 128,
		      2048);
	assert_shape2(c, "model.layers.1.attention.dense.weight", 2048, 2048);
	assert_shape2(c, "model.layers.0.mlp.gate_proj.weight", 5120, 2048);
	assert_shape2(c, "model.layers.0.mlp.down_proj.weight", 2048, 5120);
	assert_shape2(c, "model.layers.1.mlp.gate.weight", 256, 2048);
	assert_shape2(c, "model.layers.1.mlp.shared_experts.up_proj.weight", 512, 2048);
	assert_shape2(c, "model.layers.1.mlp.shared_experts.down_proj.weight", 2048, 512);
	ck_assert_uint_eq(tensor(c, "model.layers.1.attention.key_layernorm.weight")->shape[0],
			  128);
	ck_assert(tensor(c, "model.layers.1.mlp.gate.expert_bias")->dtype == DTYPE_F32);
	for (i = 0; i < 256; i++) {
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%zu.gate_proj.weight", i);
		assert_shape2(c, name, 512, 2048);
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%zu.up_proj.weight", i);
		assert_shape2(c, name, 512, 2048);
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%zu.down_proj.weight", i);
		assert_shape2(c, name, 2048, 512);
		experts++;
	}
	ck_assert_uint_eq(experts, 256);
	ck_assert(ckpt_find(c, "model.layers.0.mlp.experts.0.gate_proj.weight") < 0);
	ck_assert(ckpt_find(c, "model.layers.2.input_layernorm.weight") < 0);
	ck_assert_int_eq(ckpt_config_int(c, "num_experts", &v, NULL), 0);
	ck_assert_int_eq(v, 256);
	ck_assert_int_eq(ckpt_config_int(c, "num_hidden_layers", &v, NULL), 0);
	ck_assert_int_eq(v, 2);
	ck_assert_int_eq(ckpt_config_int(c, "num_shared_experts", &v, NULL), 0);
	ck_assert_int_eq(v, 1);
	/* about 1.78 GB in shards of at most 1 GB of data */
	ck_assert(c->total_bytes > 1700000000ULL && c->total_bytes < 1800000000ULL);
	ck_assert(c->has_index);
	ck_assert_uint_eq(c->nfiles, 2);
	for (i = 0; i < c->nfiles; i++)
		ck_assert_uint_le(c->files[i].size - c->files[i].header.data_start, 1000000000ULL);
	ckpt_free(c);
	test_rmtree(dir);
	free(dir);
}
END_TEST

START_TEST(layers_and_single_shard)
{
	struct fixture_options o = tiny_options();
	char *dir, *index;
	struct ckpt *c;
	struct stat st;

	o.layers = 3;
	o.max_shard_size = 1000000000ULL;
	dir = make_fixture("three", &o);
	c = open_ckpt(dir);
	ck_assert(!c->has_index);
	ck_assert_uint_eq(c->nfiles, 1);
	ck_assert_str_eq(c->files[0].name, "model.safetensors");
	index = test_path(dir, "model.safetensors.index.json");
	ck_assert_int_ne(stat(index, &st), 0);
	ck_assert(ckpt_find(c, "model.layers.2.mlp.experts.3.down_proj.weight") >= 0);
	ck_assert(ckpt_find(c, "model.layers.3.input_layernorm.weight") < 0);
	ck_assert_uint_eq(c->ntensors, 35 + 23);
	ckpt_free(c);
	free(index);
	free(dir);
}
END_TEST

START_TEST(refuses_existing_checkpoint)
{
	struct fixture_options o = tiny_options();
	char *dir = make_fixture("x", &o), *before = list_dir(dir), *after, *other;
	struct err e = {0};

	o.seed = 9;
	ck_assert_int_eq(fixture_write(dir, &o, &e), -1);
	ck_assert_str_eq(e.code, "destination_not_empty");
	after = list_dir(dir);
	ck_assert_str_eq(before, after);
	/* unrelated files are fine */
	other = test_path(tmp, "other");
	mkdir(other, 0755);
	free(after);
	after = test_path(other, "README.md");
	test_write_file(after, "hi\n", 3);
	err_clear(&e);
	ck_assert_msg(fixture_write(other, &o, &e) == 0, "%s", e.msg);
	free(before);
	free(after);
	free(other);
	free(dir);
}
END_TEST

START_TEST(bad_destination_and_options)
{
	struct fixture_options o = tiny_options();
	char *file = test_path(tmp, "plain"), *below = test_path(file, "dir");
	struct err e = {0};

	test_write_file(file, "x", 1);
	ck_assert_int_eq(fixture_write(below, &o, &e), -1);
	ck_assert_str_eq(e.code, "destination_not_writable");
	err_clear(&e);
	o.dtype = DTYPE_F16;
	ck_assert_int_eq(fixture_write(tmp, &o, &e), -1);
	ck_assert_str_eq(e.code, "invalid_option");
	err_clear(&e);
	o.dtype = DTYPE_BF16;
	o.preset = (enum fixture_preset)7;
	ck_assert_int_eq(fixture_write(tmp, &o, &e), -1);
	ck_assert_str_eq(e.code, "invalid_option");
	free(file);
	free(below);
}
END_TEST

static int little_free_space(const char *dir, uint64_t *free_bytes)
{
	(void)dir;
	*free_bytes = 100000;
	return 0;
}

/* Not enough room: a clean error before anything is written. */
START_TEST(insufficient_space_writes_nothing)
{
	struct fixture_options o = tiny_options();
	char *dir = test_path(tmp, "small"), *listing;
	struct err e = {0};
	int rc;

	store_local_free_bytes_hook = little_free_space;
	rc = fixture_write(dir, &o, &e);
	store_local_free_bytes_hook = NULL;
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(e.code, "insufficient_space");
	ck_assert_ptr_nonnull(strstr(e.msg, "needs"));
	listing = list_dir(dir);
	ck_assert_str_eq(listing, "");
	free(listing);
	free(dir);
}
END_TEST

/* A write that fails part way (here: a file size limit) leaves nothing
 * that looks like a checkpoint, nor temporary files. */
START_TEST(failed_write_leaves_nothing)
{
	struct fixture_options o = tiny_options();
	char *dir = test_path(tmp, "partial"), *listing;
	struct rlimit old, small;
	struct err e = {0};
	int rc;

	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	small = old;
	small.rlim_cur = 30000; /* config.json fits, the first shard does not */
	setrlimit(RLIMIT_FSIZE, &small);
	rc = fixture_write(dir, &o, &e);
	setrlimit(RLIMIT_FSIZE, &old);
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(e.code, "io_error");
	listing = list_dir(dir);
	ck_assert_str_eq(listing, "");
	free(listing);
	free(dir);
}
END_TEST

static Suite *fixture_suite(void)
{
	Suite *s = suite_create("fixture");
	TCase *tc = tcase_create("fixture");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, tiny_has_golden_layout);
	tcase_add_test(tc, same_options_same_bytes);
	tcase_add_test(tc, seed_changes_every_tensor);
	tcase_add_test(tc, f32_variant);
	tcase_add_test(tc, bf16_router_stays_f32);
	tcase_add_test(tc, mini_shapes_and_shards);
	tcase_add_test(tc, layers_and_single_shard);
	tcase_add_test(tc, refuses_existing_checkpoint);
	tcase_add_test(tc, bad_destination_and_options);
	tcase_add_test(tc, insufficient_space_writes_nothing);
	tcase_add_test(tc, failed_write_leaves_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(fixture_suite());
}
