/* SPDX-License-Identifier: MIT */
/*
 * check_fixture: the synthetic checkpoints.  The tiny preset has exactly the
 * golden HF checkpoint's tensor names, dtypes, shapes and config; output is
 * byte-identical for the same options and differs with the seed; the f32
 * variant, the mini preset's Ling-mini-2.0 shapes and shard split, the
 * destination checks, and a failed write leaving nothing behind; the
 * published presets (Ling-mini-2.0, Ling-flash-2.0, Ling-1T, with and
 * without the MTP layer) written sparse: their tensor counts, shapes and
 * sizes, with the data as holes that read as zeros and take no disk.
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

#include "ckptconv/adapter.h"
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

	ck_assert_msg(fixture_write(dir, o, &e) == 0, "fixture_write: %s: %s", err_name(e.code), e.msg);
	return dir;
}

static struct ckpt *open_ckpt(const char *dir)
{
	struct ckpt *c = NULL;
	struct err e = {0};

	ck_assert_msg(ckpt_open(dir, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s: %s: %s", dir, err_name(e.code),
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
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
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
	ck_assert_str_eq(err_name(e.code), "destination_not_writable");
	err_clear(&e);
	o.dtype = DTYPE_F16;
	ck_assert_int_eq(fixture_write(tmp, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_option");
	err_clear(&e);
	o.dtype = DTYPE_BF16;
	o.preset = (enum fixture_preset)7;
	ck_assert_int_eq(fixture_write(tmp, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_option");
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
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	ck_assert_ptr_nonnull(strstr(e.msg, "needs"));
	listing = list_dir(dir);
	ck_assert_str_eq(listing, "");
	free(listing);
	free(dir);
}
END_TEST

/* Disk blocks (bytes) and apparent size of the regular files in dir. */
static void dir_usage(const char *dir, uint64_t *disk, uint64_t *apparent)
{
	struct dirent *de;
	struct stat st;
	DIR *d = opendir(dir);
	char *path;

	ck_assert_ptr_nonnull(d);
	*disk = *apparent = 0;
	while ((de = readdir(d)) != NULL) {
		path = test_path(dir, de->d_name);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			*disk += (uint64_t)st.st_blocks * 512;
			*apparent += (uint64_t)st.st_size;
		}
		free(path);
	}
	closedir(d);
}

static int64_t config_int(const struct ckpt *c, const char *key)
{
	struct err e = {0};
	int64_t v = -1;

	ck_assert_msg(ckpt_config_int(c, key, &v, &e) == 0, "%s: %s", key, e.msg);
	return v;
}

/* What inspect reports of c's MTP layers (the adapter's description). */
static void assert_mtp_layers(const struct ckpt *c, uint64_t want)
{
	const struct adapter *a;
	struct model_info info;
	struct err e = {0};

	a = adapter_for(c, &e);
	ck_assert_msg(a != NULL, "%s", e.msg);
	ck_assert_msg(a->describe(c, &info, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(info.mtp_layers, want);
}

/* Writes the published preset sparse into tmp/name, checks it opens as a
 * checkpoint of `tensors` tensors whose data takes no disk, and returns it
 * open (caller frees both). */
static struct ckpt *sparse_published(const char *name, enum fixture_preset preset, bool mtp,
				     size_t tensors, char **dir)
{
	struct fixture_options o = {.preset = preset, .dtype = DTYPE_BF16, .mtp = mtp,
				    .sparse = true};
	uint64_t disk, apparent, headers = 0;
	struct ckpt *c;
	size_t i;

	*dir = make_fixture(name, &o);
	c = open_ckpt(*dir);
	ck_assert_uint_eq(c->ntensors, tensors);
	for (i = 0; i < c->nfiles; i++) {
		headers += c->files[i].header.data_start;
		/* every shard holds at most 5 GB of data (save_pretrained's split) */
		ck_assert_uint_le(c->files[i].size - c->files[i].header.data_start,
				  5000000000ULL);
	}
	dir_usage(*dir, &disk, &apparent);
	/* the files are as long as the data they describe ... */
	ck_assert_uint_ge(apparent, c->total_bytes + headers);
	ck_assert_uint_lt(apparent, c->total_bytes + headers + (32u << 20));
	/* ... and the data takes no disk: only headers, index and config do */
	ck_assert_msg(disk < headers + (64u << 20), "%s: %llu bytes on disk", name,
		      (unsigned long long)disk);
	ck_assert_int_eq(config_int(c, "num_nextn_predict_layers"), mtp ? 1 : 0);
	assert_mtp_layers(c, mtp ? 1 : 0);
	ck_assert_int_eq(config_int(c, "vocab_size"), 157184);
	ck_assert_int_eq(config_int(c, "num_experts"), 256);
	return c;
}

/* Reads a tensor's last 4 KiB (or all of it): holes read as zeros. */
static void assert_zeros(const char *dir, const struct ckpt *c, const char *name)
{
	const struct ckpt_tensor *t = tensor(c, name);
	uint64_t len = t->nbytes < 4096 ? t->nbytes : 4096, i;
	char *path = test_path(dir, c->files[t->file].name);
	unsigned char buf[4096];
	FILE *f = fopen(path, "rb");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseeko(f, (off_t)(t->offset + t->nbytes - len), SEEK_SET), 0);
	ck_assert_uint_eq(fread(buf, 1, len, f), len);
	for (i = 0; i < len; i++)
		ck_assert_uint_eq(buf[i], 0);
	fclose(f);
	free(path);
}

/* Ling-mini-2.0 as published: 20 layers (layer 0 dense), vocabulary
 * 157,184, 14,813 tensors, 15,596 with the MTP layer at layers.20; about
 * 34 GB of data that takes no disk. */
START_TEST(ling_mini_published)
{
	struct ckpt *c;
	char *dir;

	c = sparse_published("mini-mtp", FIXTURE_LING_MINI_2, true, 15596, &dir);
	ck_assert_int_eq(config_int(c, "num_hidden_layers"), 20);
	ck_assert_int_eq(config_int(c, "first_k_dense_replace"), 1);
	ck_assert(c->total_bytes > 34000000000ULL && c->total_bytes < 34400000000ULL);
	ck_assert_uint_eq(c->nfiles, 7);
	assert_shape2(c, "model.word_embeddings.weight", 157184, 2048);
	assert_shape2(c, "lm_head.weight", 157184, 2048);
	assert_shape2(c, "model.layers.0.mlp.gate_proj.weight", 5120, 2048);
	assert_shape2(c, "model.layers.19.mlp.experts.255.down_proj.weight", 2048, 512);
	/* the MTP layer: a MoE layer plus enorm, hnorm, eh_proj, final_layernorm */
	assert_shape2(c, "model.layers.20.eh_proj.weight", 2048, 4096);
	assert_shape2(c, "model.layers.20.mlp.experts.255.gate_proj.weight", 512, 2048);
	assert_shape2(c, "model.layers.20.attention.query_key_value.weight", 3072, 2048);
	ck_assert_uint_eq(tensor(c, "model.layers.20.enorm.weight")->shape[0], 2048);
	ck_assert_uint_eq(tensor(c, "model.layers.20.hnorm.weight")->shape[0], 2048);
	ck_assert_uint_eq(tensor(c, "model.layers.20.final_layernorm.weight")->shape[0], 2048);
	ck_assert(tensor(c, "model.layers.20.mlp.gate.weight")->dtype == DTYPE_F32);
	assert_zeros(dir, c, "lm_head.weight");
	assert_zeros(dir, c, "model.layers.20.eh_proj.weight");
	ckpt_free(c);
	test_rmtree(dir);
	free(dir);

	c = sparse_published("mini", FIXTURE_LING_MINI_2, false, 14813, &dir);
	ck_assert(ckpt_find(c, "model.layers.20.eh_proj.weight") < 0);
	ck_assert(ckpt_find(c, "model.layers.20.input_layernorm.weight") < 0);
	ckpt_free(c);
	test_rmtree(dir);
	free(dir);
}
END_TEST

/* Ling-flash-2.0: 32 layers, H 4096, experts of 1024; 24,161 tensors. */
START_TEST(ling_flash_published)
{
	char *dir;
	struct ckpt *c = sparse_published("flash", FIXTURE_LING_FLASH_2, false, 24161, &dir);

	ck_assert_int_eq(config_int(c, "num_hidden_layers"), 32);
	assert_shape2(c, "model.layers.0.mlp.down_proj.weight", 4096, 9216);
	assert_shape2(c, "model.layers.31.mlp.experts.0.up_proj.weight", 1024, 4096);
	assert_shape2(c, "model.layers.31.attention.query_key_value.weight", (32 + 8) * 128, 4096);
	ck_assert(c->total_bytes > 200000000000ULL && c->total_bytes < 210000000000ULL);
	ckpt_free(c);
	test_rmtree(dir);
	free(dir);
}
END_TEST

static int one_gib_free(const char *dir, uint64_t *free_bytes)
{
	(void)dir;
	*free_bytes = 1ULL << 30;
	return 0;
}

/* Ling-1T with the MTP layer: 80 layers (4 dense), 60,026 tensors, about
 * 2 TB described and nothing of it on disk; free space is checked for
 * the headers only. */
START_TEST(ling_1t_published)
{
	struct fixture_options o = {.preset = FIXTURE_LING_1T, .dtype = DTYPE_BF16, .mtp = true,
				    .sparse = true};
	struct err e = {0};
	struct ckpt *c;
	char *dir, *other = test_path(tmp, "1t-dense");
	int rc;

	store_local_free_bytes_hook = one_gib_free;
	c = sparse_published("1t", FIXTURE_LING_1T, true, 60026, &dir);
	store_local_free_bytes_hook = NULL;
	ck_assert_int_eq(config_int(c, "num_hidden_layers"), 80);
	ck_assert_int_eq(config_int(c, "first_k_dense_replace"), 4);
	assert_shape2(c, "model.layers.3.mlp.up_proj.weight", 18432, 8192);
	ck_assert(ckpt_find(c, "model.layers.3.mlp.gate.weight") < 0);
	assert_shape2(c, "model.layers.4.mlp.gate.weight", 256, 8192);
	assert_shape2(c, "model.layers.80.eh_proj.weight", 8192, 16384);
	assert_shape2(c, "model.layers.80.mlp.experts.7.down_proj.weight", 8192, 2048);
	ck_assert(c->total_bytes > 1990000000000ULL && c->total_bytes < 2060000000000ULL);
	assert_zeros(dir, c, "model.layers.80.mlp.experts.7.down_proj.weight");
	ckpt_free(c);
	test_rmtree(dir);
	free(dir);

	/* without --sparse the 2 TB must fit: refused, nothing written */
	o.sparse = false;
	store_local_free_bytes_hook = little_free_space;
	rc = fixture_write(other, &o, &e);
	store_local_free_bytes_hook = NULL;
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	free(other);
}
END_TEST

/* ---- the Automodel sharded layout ---- */

struct seen_chunk {
	uint64_t off[2], size[2];
	size_t next; /* the tensor's next chunk, SIZE_MAX at the end */
};

/* Reads len bytes at offset of path. */
static unsigned char *read_at(const char *path, uint64_t offset, size_t len)
{
	unsigned char *buf = malloc(len + 1);
	FILE *f = fopen(path, "rb");

	ck_assert_msg(f != NULL, "%s", path);
	ck_assert_int_eq(fseeko(f, (off_t)offset, SEEK_SET), 0);
	ck_assert_uint_eq(fread(buf, 1, len, f), len);
	fclose(f);
	return buf;
}

static uint64_t json_u64(json_t *array, size_t i)
{
	json_t *v = json_array_get(array, i);

	ck_assert(json_is_integer(v) && json_integer_value(v) >= 0);
	return (uint64_t)json_integer_value(v);
}

/* Checks the sharded checkpoint in sh against the HF fixture in hf (same
 * preset and seed): R shard files whose headers are well formed (length a
 * multiple of 8, compact members, offsets contiguous from 0 to the end of
 * the file, __metadata__ last with DCP_SHARDING_INFO naming every chunk);
 * the chunks of every tensor tile it exactly (inside its shape, no two
 * overlapping, volumes adding up to it), with the HF tensor's bytes when
 * compare_data; and .hf_metadata's mappings name every tensor with its HF
 * file index and dtype, in sorted order, without a trailing newline. */
static void check_sharded(const char *hf, const char *sh, uint32_t ranks, bool compare_data)
{
	struct ckpt *c = open_ckpt(hf);
	uint64_t *covered = calloc(c->ntensors, sizeof(*covered));
	struct seen_chunk *chunks = calloc(c->ntensors * ranks + 16, sizeof(*chunks));
	size_t *first = calloc(c->ntensors, sizeof(*first)), nchunks = 0, i, j, len;
	char name[96], *path, *text, *prev = NULL, *line;
	json_t *map, *dtypes;
	uint32_t r;

	for (i = 0; i < c->ntensors; i++)
		first[i] = SIZE_MAX;
	for (r = 0; r < ranks; r++) {
		unsigned char *file;
		uint64_t n = 0, expect = 0, b, e;
		json_t *header, *meta, *info, *v;
		const char *key, *end;
		struct stat st;
		json_error_t jerr;
		int k;

		snprintf(name, sizeof(name), "shard-%05u-model-00001-of-00001.safetensors",
			 (unsigned)r + 1);
		path = test_path(sh, name);
		ck_assert_int_eq(stat(path, &st), 0);
		len = (size_t)st.st_size;
		file = read_at(path, 0, 8);
		for (k = 7; k >= 0; k--)
			n = (n << 8) | file[k];
		ck_assert_uint_eq(n % 8, 0);
		ck_assert_uint_le(8 + n, len);
		free(file);
		file = read_at(path, 0, 8 + n); /* prefix and header only */
		/* members end with __metadata__, then only padding */
		text = strndup((char *)file + 8, (size_t)n);
		end = strstr(text, ",\"DCP_VERSION\":\"1.0\",\"format\":\"pt\"}}");
		ck_assert_ptr_nonnull(end);
		end += strlen(",\"DCP_VERSION\":\"1.0\",\"format\":\"pt\"}}");
		ck_assert_uint_eq(strspn(end, " "), strlen(end));
		header = json_loadb((char *)file + 8, (size_t)n, 0, &jerr);
		ck_assert_msg(header != NULL, "%s: %s", name, jerr.text);
		meta = json_object_get(header, "__metadata__");
		ck_assert_uint_eq(json_object_size(meta), 3);
		ck_assert_str_eq(json_string_value(json_object_get(meta, "DCP_VERSION")), "1.0");
		ck_assert_str_eq(json_string_value(json_object_get(meta, "format")), "pt");
		info = json_loads(json_string_value(json_object_get(meta, "DCP_SHARDING_INFO")), 0,
				  &jerr);
		ck_assert_msg(info != NULL, "%s: DCP_SHARDING_INFO: %s", name, jerr.text);
		ck_assert_uint_eq(json_object_size(info), json_object_size(header) - 1);
		/* offsets contiguous: visit the chunks by begin */
		while (expect < len - 8 - n || json_object_size(header) > 1) {
			bool found = false;

			json_object_foreach(header, key, v) {
				const struct ckpt_tensor *t;
				json_t *shape, *saved, *offs;
				long idx;
				struct seen_chunk *ch;

				if (strcmp(key, "__metadata__") == 0)
					continue;
				offs = json_object_get(v, "data_offsets");
				b = json_u64(offs, 0);
				e = json_u64(offs, 1);
				if (b != expect || found)
					continue;
				found = true;
				idx = ckpt_find(c, key);
				ck_assert_msg(idx >= 0, "%s: %s is not in the HF checkpoint", name, key);
				t = &c->tensors[idx];
				ck_assert_str_eq(json_string_value(json_object_get(v, "dtype")),
						 dtype_name(t->dtype));
				shape = json_object_get(v, "shape");
				saved = json_object_get(json_object_get(info, key), "saved_offsets");
				ck_assert_int_eq((int)json_array_size(shape), t->ndim);
				ck_assert_int_eq((int)json_array_size(saved), t->ndim);
				ch = &chunks[nchunks];
				ch->off[1] = 0, ch->size[1] = 1;
				for (k = 0; k < t->ndim; k++) {
					ch->off[k] = json_u64(saved, (size_t)k);
					ch->size[k] = json_u64(shape, (size_t)k);
					ck_assert_uint_le(ch->off[k] + ch->size[k], t->shape[k]);
				}
				ck_assert_uint_eq(e - b, ch->size[0] * (t->ndim == 2 ? ch->size[1] : 1) *
								 dtype_size(t->dtype));
				/* an empty chunk is recorded at the global size */
				if (ch->size[0] == 0)
					ck_assert_uint_eq(ch->off[0], t->shape[0]);
				/* no two chunks of a tensor overlap */
				for (j = first[idx]; j != SIZE_MAX; j = chunks[j].next) {
					struct seen_chunk *o = &chunks[j];
					bool apart = ch->size[0] == 0 || o->size[0] == 0;

					for (k = 0; k < 2; k++)
						if (o->off[k] + o->size[k] <= ch->off[k] ||
						    ch->off[k] + ch->size[k] <= o->off[k])
							apart = true;
					ck_assert_msg(apart, "%s: two chunks overlap", key);
				}
				ch->next = first[idx];
				first[idx] = nchunks;
				covered[idx] += ch->size[0] * ch->size[1];
				if (compare_data && ch->size[0]) {
					char *hf_path = test_path(hf, c->files[t->file].name);
					uint64_t es = dtype_size(t->dtype),
						 cols = t->ndim == 2 ? t->shape[1] : 1;
					size_t row = (size_t)(ch->size[1] * es);
					unsigned char *want, *got;

					for (j = 0; j < ch->size[0]; j++) {
						want = read_at(hf_path,
							       t->offset + ((ch->off[0] + j) * cols +
									    ch->off[1]) * es,
							       row);
						got = read_at(path, 8 + n + b + j * row, row);
						ck_assert_msg(memcmp(want, got, row) == 0,
							      "%s: %s row %zu differs", name, key, j);
						free(want);
						free(got);
					}
					free(hf_path);
				}
				nchunks++;
				expect = e;
				json_object_del(header, key);
				break;
			}
			if (!found)
				break;
		}
		ck_assert_uint_eq(json_object_size(header), 1); /* all visited */
		ck_assert_uint_eq(8 + n + expect, len);          /* up to the end */
		json_decref(info);
		json_decref(header);
		free(text);
		free(file);
		free(path);
	}
	for (i = 0; i < c->ntensors; i++)
		ck_assert_msg(covered[i] * dtype_size(c->tensors[i].dtype) == c->tensors[i].nbytes,
			      "%s: chunks cover %llu of its elements", c->tensors[i].name,
			      (unsigned long long)covered[i]);

	/* .hf_metadata */
	path = test_path(sh, ".hf_metadata/fqn_to_file_index_mapping.json");
	text = read_whole(path, &len);
	ck_assert(len > 4 && strncmp(text, "{\n  \"", 5) == 0 && text[len - 1] == '}' &&
		  text[len - 2] == '\n');
	text[len] = '\0';
	for (line = strtok(text + 2, "\n"); line; line = strtok(NULL, "\n")) {
		if (prev)
			ck_assert_msg(strcmp(prev, line) < 0, "not sorted: %s, %s", prev, line);
		prev = line;
	}
	free(text);
	map = json_load_file(path, 0, NULL);
	free(path);
	path = test_path(sh, ".hf_metadata/fqn_to_dtype_mapping.json");
	dtypes = json_load_file(path, 0, NULL);
	free(path);
	ck_assert_uint_eq(json_object_size(map), c->ntensors);
	ck_assert_uint_eq(json_object_size(dtypes), c->ntensors);
	for (i = 0; i < c->ntensors; i++) {
		const struct ckpt_tensor *t = &c->tensors[i];
		const char *file = c->files[t->file].name;
		json_int_t want = 1;

		if (strncmp(file, "model-", 6) == 0)
			want = strtol(file + 6, NULL, 10);
		ck_assert_int_eq(json_integer_value(json_object_get(map, t->name)), want);
		ck_assert_str_eq(json_string_value(json_object_get(dtypes, t->name)),
				 dtype_name(t->dtype));
	}
	path = test_path(sh, ".hf_metadata/config.json");
	ck_assert_int_eq(access(path, R_OK), 0);
	free(path);
	json_decref(map);
	json_decref(dtypes);
	free(first);
	free(chunks);
	free(covered);
	ckpt_free(c);
}

/* The tiny preset over 3 ranks, against the HF fixture of the same seed:
 * the golden consolidation input's split (rows 2/2/0 of a 4-row tensor,
 * the empty chunk at offset 4; the router bias whole in shard-00002). */
START_TEST(sharded_chunks_tile)
{
	struct fixture_options o = tiny_options();
	char *hf = make_fixture("hf", &o), *sh, *listing, *path, *text;
	size_t len;

	o.sharded = 3;
	sh = make_fixture("sharded", &o);
	listing = list_dir(sh);
	ck_assert_str_eq(listing, ".hf_metadata\n"
				  "shard-00001-model-00001-of-00001.safetensors\n"
				  "shard-00002-model-00001-of-00001.safetensors\n"
				  "shard-00003-model-00001-of-00001.safetensors\n");
	check_sharded(hf, sh, 3, true);
	path = test_path(sh, "shard-00003-model-00001-of-00001.safetensors");
	text = read_whole(path, &len);
	text[len] = '\0';
	ck_assert_ptr_nonnull(strstr(text + 8, "\"model.layers.1.mlp.gate.weight\":{\"dtype\":\"F32\","
					       "\"shape\":[0,64],\"data_offsets\":["));
	ck_assert_ptr_nonnull(strstr(text + 8, "\\\"model.layers.1.mlp.gate.weight\\\": "
					       "{\\\"saved_offsets\\\": [4, 0]}"));
	ck_assert_ptr_null(strstr(text + 8, "expert_bias"));
	free(text);
	free(path);
	path = test_path(sh, "shard-00002-model-00001-of-00001.safetensors");
	text = read_whole(path, &len);
	text[len] = '\0';
	ck_assert_ptr_nonnull(strstr(text + 8, "\"model.layers.1.mlp.gate.expert_bias\":{\"dtype\":"
					       "\"F32\",\"shape\":[4],\"data_offsets\":["));
	free(text);
	free(path);
	free(listing);
	free(sh);
	free(hf);
}
END_TEST

/* The shard headers of the tiny preset over 2 and 3 ranks are, byte for
 * byte, those of the golden consolidation inputs (Automodel's own saves of
 * the golden checkpoint): same chunks, offsets, write order, sharding info
 * and padding; the dtype mapping is the same file. */
START_TEST(sharded_headers_match_golden)
{
	static const unsigned ranks[] = {2, 3};
	struct fixture_options o = tiny_options();
	char name[96], sub[64], *dir, *golden, *mine, *theirs, *inputs;
	unsigned char *a, *b;
	uint64_t na, nb;
	size_t i, la, lb;
	unsigned r;
	int k;

	inputs = test_path(test_golden_dir(), "consolidate/inputs");
	for (i = 0; i < 2; i++) {
		o.sharded = ranks[i];
		snprintf(sub, sizeof(sub), "r%u", ranks[i]);
		dir = make_fixture(sub, &o);
		snprintf(sub, sizeof(sub), "tiny-r%u/model", ranks[i]);
		golden = test_path(inputs, sub);
		for (r = 1; r <= ranks[i]; r++) {
			snprintf(name, sizeof(name), "shard-%05u-model-00001-of-00001.safetensors", r);
			mine = test_path(dir, name);
			theirs = test_path(golden, name);
			a = (unsigned char *)read_whole(mine, &la);
			b = (unsigned char *)read_whole(theirs, &lb);
			ck_assert_uint_eq(la, lb);
			for (na = nb = 0, k = 7; k >= 0; k--) {
				na = (na << 8) | a[k];
				nb = (nb << 8) | b[k];
			}
			ck_assert_uint_eq(na, nb);
			ck_assert_msg(memcmp(a, b, 8 + na) == 0, "%s: header differs from %s", mine,
				      theirs);
			free(a);
			free(b);
			free(mine);
			free(theirs);
		}
		mine = test_path(dir, ".hf_metadata/fqn_to_dtype_mapping.json");
		theirs = test_path(golden, ".hf_metadata/fqn_to_dtype_mapping.json");
		a = (unsigned char *)read_whole(mine, &la);
		b = (unsigned char *)read_whole(theirs, &lb);
		ck_assert(la == lb && memcmp(a, b, la) == 0);
		free(a);
		free(b);
		free(mine);
		free(theirs);
		free(golden);
		free(dir);
	}
	free(inputs);
}
END_TEST

/* Ling-mini-2.0 as published over 4 ranks, sparse: every one of the
 * 14,813 tensors tiled by its 4 chunks, 32.5 GB described, no disk taken. */
START_TEST(sharded_published_sparse)
{
	struct fixture_options o = {.preset = FIXTURE_LING_MINI_2, .dtype = DTYPE_BF16,
				    .sparse = true};
	char *hf = make_fixture("hf", &o), *sh;
	uint64_t disk, apparent;

	o.sharded = 4;
	sh = make_fixture("sharded", &o);
	check_sharded(hf, sh, 4, false);
	dir_usage(sh, &disk, &apparent);
	ck_assert_uint_gt(apparent, 32000000000ULL); /* 32.5 GB without the MTP layer */
	ck_assert_uint_lt(disk, 64u << 20);
	free(sh);
	free(hf);
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
	ck_assert_str_eq(err_name(e.code), "io_error");
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
	tcase_add_test(tc, ling_mini_published);
	tcase_add_test(tc, ling_flash_published);
	tcase_add_test(tc, ling_1t_published);
	tcase_add_test(tc, sharded_chunks_tile);
	tcase_add_test(tc, sharded_headers_match_golden);
	tcase_add_test(tc, sharded_published_sparse);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(fixture_suite());
}
