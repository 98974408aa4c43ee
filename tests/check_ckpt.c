/* SPDX-License-Identifier: MIT */
/*
 * check_ckpt: opening checkpoints: the golden directories (sharded with an
 * index, and single files), tensors in natural order with their absolute
 * offsets, config.json, which other files are copied or skipped, and each
 * way a checkpoint can be malformed, refused with its exact error.
 * Unfinished output (temporary names) is never taken for weights, and in a
 * process confined to allowed roots a weight file, the index or config.json
 * leading outside is refused, another file skipped with a warning.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/store.h"
#include "testutil.h"

static char *tmpdir;

static void setup(void)
{
	tmpdir = test_mkdtemp();
}

static void teardown(void)
{
	test_rmtree(tmpdir);
	free(tmpdir);
}

static char *golden(const char *name)
{
	char *p;

	if (asprintf(&p, "%s/tiny/%s", test_golden_dir(), name) < 0)
		abort();
	return p;
}

static void write_text(const char *name, const char *text)
{
	char *p = test_path(tmpdir, name);

	test_write_file(p, text, strlen(text));
	free(p);
}

/* A valid safetensors file in tmpdir holding U8 tensors of the given
 * lengths, named by `names` (NULL-terminated). */
static void write_st(const char *file, const char *const *names, const uint64_t *lens)
{
	struct st_tensor t[16];
	struct err e = {0};
	size_t n = 0, hlen, data = 0;
	char *hdr, *buf, *p;

	for (n = 0; names[n]; n++) {
		memset(&t[n], 0, sizeof(t[n]));
		t[n].name = (char *)names[n];
		t[n].dtype = DTYPE_U8;
		t[n].ndim = 1;
		t[n].shape[0] = lens[n];
		data += lens[n];
	}
	ck_assert_int_eq(st_header_build(t, n, &hdr, &hlen, &e), 0);
	buf = calloc(1, hlen + data + 1);
	memcpy(buf, hdr, hlen);
	p = test_path(tmpdir, file);
	test_write_file(p, buf, hlen + data);
	free(p);
	free(buf);
	free(hdr);
}

static const char *const config_text = "{\"hidden_size\": 64, \"model_type\": \"bailing_moe\", "
				       "\"rope_theta\": 1.5}";

/* Two shards and an index mapping a, b -> shard 1 and c -> shard 2. */
static void write_sharded(const char *index)
{
	static const char *const s1[] = {"a", "b", NULL}, *const s2[] = {"c", NULL};
	static const uint64_t l1[] = {4, 6}, l2[] = {3};

	write_st("model-00001-of-00002.safetensors", s1, l1);
	write_st("model-00002-of-00002.safetensors", s2, l2);
	write_text("config.json", config_text);
	write_text("model.safetensors.index.json", index);
}

#define GOOD_INDEX                                                                                 \
	"{\"metadata\": {\"total_size\": 13}, \"weight_map\": {"                                     \
	"\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\", " \
	"\"c\": \"model-00002-of-00002.safetensors\"}}"

static void expect_open_fails(const char *location, unsigned flags, const char *code,
			      const char *part1, const char *part2)
{
	struct ckpt *c = (struct ckpt *)1;
	struct err e = {0};

	ck_assert_int_eq(ckpt_open(location, flags, &c, &e), -1);
	ck_assert_ptr_null(c);
	ck_assert_str_eq(e.code ? err_name(e.code) : "(none)", code);
	if (part1)
		ck_assert_msg(strstr(e.msg, part1), "message lacks '%s': %s", part1, e.msg);
	if (part2)
		ck_assert_msg(strstr(e.msg, part2), "message lacks '%s': %s", part2, e.msg);
}

static int64_t index_total_size(const char *dir)
{
	char *p = test_path(dir, "model.safetensors.index.json");
	json_t *root = json_load_file(p, 0, NULL);
	int64_t total;

	ck_assert_ptr_nonnull(root);
	total = json_integer_value(json_object_get(json_object_get(root, "metadata"), "total_size"));
	json_decref(root);
	free(p);
	return total;
}

static uint64_t elements(const struct ckpt_tensor *t)
{
	uint64_t n = 1;
	int d;

	for (d = 0; d < t->ndim; d++)
		n *= t->shape[d];
	return n;
}

static void check_consistent(const struct ckpt *c)
{
	uint64_t sum = 0;
	size_t i;

	for (i = 0; i < c->ntensors; i++) {
		const struct ckpt_tensor *t = &c->tensors[i];
		const struct ckpt_file *f = &c->files[t->file];

		if (i > 0)
			ck_assert_msg(natural_compare(c->tensors[i - 1].name, t->name) < 0,
				      "%s before %s", c->tensors[i - 1].name, t->name);
		ck_assert_int_eq(ckpt_find(c, t->name), (long)i);
		ck_assert_uint_ge(t->offset, f->header.data_start);
		ck_assert_uint_le(t->offset + t->nbytes, f->size);
		ck_assert_uint_eq(t->nbytes, elements(t) * dtype_size(t->dtype));
		sum += t->nbytes;
	}
	ck_assert_uint_eq(sum, c->total_bytes);
}

START_TEST(test_golden_sharded)
{
	char *dir = golden("hf");
	struct ckpt *c;
	struct err e = {0};
	int64_t hidden;
	long i;

	ck_assert_msg(ckpt_open(dir, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s", e.msg);
	ck_assert(c->has_index);
	ck_assert_uint_eq(c->nfiles, 5);
	ck_assert_uint_eq(c->ntensors, 35);
	ck_assert_uint_eq(c->total_bytes, (uint64_t)index_total_size(dir));
	check_consistent(c);
	ck_assert_int_eq(ckpt_config_int(c, "hidden_size", &hidden, &e), 0);
	ck_assert_int_eq(hidden, 64);
	ck_assert_str_eq(ckpt_config_string(c, "model_type"), "bailing_moe");
	i = ckpt_find(c, "model.layers.1.mlp.gate.weight");
	ck_assert_int_ge(i, 0);
	ck_assert_int_eq(c->tensors[i].dtype, DTYPE_F32);
	ck_assert_int_eq(ckpt_find(c, "model.layers.1.mlp.gate.nothing"), -1);
	ck_assert_uint_eq(c->copy_files.len, 1);
	ck_assert_str_eq(c->copy_files.items[0], "config.json");
	ck_assert_uint_eq(c->warnings.len, 0);
	ckpt_free(c);
	free(dir);
}
END_TEST

START_TEST(test_golden_single_files)
{
	static const struct {
		const char *dir;
		size_t ntensors;
	} cases[] = {
		{"native", 29}, {"native-ep2-rank0", 29}, {"native-ep2-rank1", 29}, {"hf-from-native", 35},
	};
	size_t k;

	for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		char *dir = golden(cases[k].dir);
		struct ckpt *c;
		struct err e = {0};

		ck_assert_msg(ckpt_open(dir, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s", e.msg);
		ck_assert(!c->has_index);
		ck_assert_uint_eq(c->nfiles, 1);
		ck_assert_str_eq(c->files[0].name, "model.safetensors");
		ck_assert_uint_eq(c->ntensors, cases[k].ntensors);
		ck_assert_ptr_nonnull(c->config);
		check_consistent(c);
		ckpt_free(c);
		free(dir);
	}
}
END_TEST

START_TEST(test_offsets_are_absolute)
{
	static const char *const names[] = {"x", "y", NULL};
	static const uint64_t lens[] = {5, 9};
	char *path = test_path(tmpdir, "model.safetensors");
	struct ckpt *c;
	struct err e = {0};
	long y;

	write_st("model.safetensors", names, lens);
	ck_assert_int_eq(ckpt_open(tmpdir, 0, &c, &e), 0);
	y = ckpt_find(c, "y");
	ck_assert_int_ge(y, 0);
	ck_assert_uint_eq(c->tensors[y].offset, c->files[0].header.data_start + 5);
	ck_assert_uint_eq(c->tensors[y].nbytes, 9);
	ck_assert_uint_eq(c->files[0].size, c->files[0].header.data_start + 14);
	ckpt_free(c);
	free(path);
}
END_TEST

START_TEST(test_natural_order)
{
	static const char *const names[] = {"layers.10.w", "layers.2.w", "layers.1.w", "layers.1.v",
					    "embed", NULL};
	static const uint64_t lens[] = {1, 1, 1, 1, 1};
	static const char *const expect[] = {"embed", "layers.1.v", "layers.1.w", "layers.2.w",
					     "layers.10.w"};
	struct ckpt *c;
	struct err e = {0};
	size_t i;

	write_st("weights.safetensors", names, lens);
	ck_assert_int_eq(ckpt_open(tmpdir, 0, &c, &e), 0);
	ck_assert_uint_eq(c->ntensors, 5);
	for (i = 0; i < 5; i++) {
		ck_assert_str_eq(c->tensors[i].name, expect[i]);
		ck_assert_int_eq(ckpt_find(c, expect[i]), (long)i);
	}
	ckpt_free(c);
}
END_TEST

START_TEST(test_sharded_ok)
{
	struct ckpt *c;
	struct err e = {0};

	write_sharded(GOOD_INDEX);
	ck_assert_msg(ckpt_open(tmpdir, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(c->ntensors, 3);
	ck_assert_uint_eq(c->total_bytes, 13);
	ck_assert_str_eq(c->files[c->tensors[2].file].name, "model-00002-of-00002.safetensors");
	ckpt_free(c);
}
END_TEST

START_TEST(test_index_missing_file)
{
	write_sharded("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
		      "\"b\": \"model-00001-of-00002.safetensors\", "
		      "\"c\": \"model-00002-of-00002.safetensors\", "
		      "\"d\": \"model-00003-of-00003.safetensors\"}}");
	expect_open_fails(tmpdir, 0, "index_missing_file", "model-00003-of-00003.safetensors", NULL);
}
END_TEST

START_TEST(test_index_invalid)
{
	write_sharded("[\"not an index\"]");
	expect_open_fails(tmpdir, 0, "index_invalid", "model.safetensors.index.json", NULL);
}
END_TEST

START_TEST(test_index_weight_map_not_object)
{
	write_sharded("{\"weight_map\": 3}");
	expect_open_fails(tmpdir, 0, "index_invalid", "weight_map", NULL);
}
END_TEST

/* An index naming no tensor is refused, not opened as a checkpoint
 * without tensors whose shards are all skipped. */
START_TEST(test_index_weight_map_empty)
{
	struct ckpt *c = NULL;
	struct err e = {0};

	write_sharded("{\"metadata\": {\"total_size\": 0}, \"weight_map\": {}}");
	expect_open_fails(tmpdir, 0, "index_invalid", "model.safetensors.index.json",
			  "the weight_map lists no tensor");
	/* The same files open with a proper index. */
	write_text("model.safetensors.index.json", GOOD_INDEX);
	ck_assert_msg(ckpt_open(tmpdir, 0, &c, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(c->ntensors, 3);
	ckpt_free(c);
}
END_TEST

START_TEST(test_weight_map_wrong_file)
{
	write_sharded("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
		      "\"b\": \"model-00002-of-00002.safetensors\", "
		      "\"c\": \"model-00002-of-00002.safetensors\"}}");
	expect_open_fails(tmpdir, 0, "weight_map_mismatch", "'b' in model-00002-of-00002.safetensors",
			  "it is in model-00001-of-00002.safetensors");
}
END_TEST

START_TEST(test_weight_map_lacks_tensor)
{
	write_sharded("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
		      "\"c\": \"model-00002-of-00002.safetensors\"}}");
	expect_open_fails(tmpdir, 0, "weight_map_mismatch", "'b'", "does not list it");
}
END_TEST

START_TEST(test_weight_map_extra_tensor)
{
	write_sharded("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
		      "\"b\": \"model-00001-of-00002.safetensors\", "
		      "\"zz\": \"model-00002-of-00002.safetensors\", "
		      "\"c\": \"model-00002-of-00002.safetensors\"}}");
	expect_open_fails(tmpdir, 0, "weight_map_mismatch", "'zz'", "no file holds it");
}
END_TEST

START_TEST(test_duplicate_across_files)
{
	static const char *const s1[] = {"a", "b", NULL}, *const s2[] = {"b", "c", NULL};
	static const uint64_t l[] = {1, 1};
	struct err e = {0};
	struct ckpt *c;

	write_st("model-00001-of-00002.safetensors", s1, l);
	write_st("model-00002-of-00002.safetensors", s2, l);
	write_text("model.safetensors.index.json",
		   "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
		   "\"b\": \"model-00001-of-00002.safetensors\", "
		   "\"c\": \"model-00002-of-00002.safetensors\"}}");
	ck_assert_int_eq(ckpt_open(tmpdir, 0, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "duplicate_tensor");
	ck_assert_str_eq(e.tensor, "b");
	ck_assert_ptr_nonnull(strstr(e.msg, "model-00001-of-00002.safetensors"));
	ck_assert_ptr_nonnull(strstr(e.msg, "model-00002-of-00002.safetensors"));
}
END_TEST

START_TEST(test_bad_shard_header)
{
	char *p;
	FILE *f;

	write_sharded(GOOD_INDEX);
	p = test_path(tmpdir, "model-00002-of-00002.safetensors");
	f = fopen(p, "ab");
	fputs("xx", f);
	fclose(f);
	expect_open_fails(tmpdir, 0, "trailing_bytes", p, NULL);
	free(p);
}
END_TEST

START_TEST(test_missing_config)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};
	struct ckpt *c;
	struct err e = {0};
	int64_t v;

	write_st("model.safetensors", names, lens);
	expect_open_fails(tmpdir, CKPT_REQUIRE_CONFIG, "missing_config", "config.json", tmpdir);
	/* without the flag it opens, and asking for a key names the problem */
	ck_assert_int_eq(ckpt_open(tmpdir, 0, &c, &e), 0);
	ck_assert_ptr_null(c->config);
	ck_assert_ptr_null(ckpt_config_string(c, "model_type"));
	ck_assert_int_eq(ckpt_config_int(c, "hidden_size", &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "missing_config");
	ckpt_free(c);
}
END_TEST

START_TEST(test_config_invalid)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};

	write_st("model.safetensors", names, lens);
	write_text("config.json", "{\"hidden_size\": ");
	expect_open_fails(tmpdir, 0, "config_invalid", "config.json", NULL);
}
END_TEST

START_TEST(test_config_keys)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};
	struct ckpt *c;
	struct err e = {0};
	int64_t v = 0;

	write_st("model.safetensors", names, lens);
	write_text("config.json", config_text);
	ck_assert_int_eq(ckpt_open(tmpdir, CKPT_REQUIRE_CONFIG, &c, &e), 0);
	ck_assert_int_eq(ckpt_config_int(c, "hidden_size", &v, &e), 0);
	ck_assert_int_eq(v, 64);
	ck_assert_int_eq(ckpt_config_int(c, "num_experts", &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "missing_config_key");
	ck_assert_str_eq(e.msg, "config.json lacks required key 'num_experts'");
	err_clear(&e);
	ck_assert_int_eq(ckpt_config_int(c, "rope_theta", &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "config_invalid");
	ck_assert_ptr_nonnull(strstr(e.msg, "rope_theta"));
	err_clear(&e);
	ck_assert_int_eq(ckpt_config_int(c, "model_type", &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "config_invalid");
	ckpt_free(c);
}
END_TEST

START_TEST(test_config_dtype_key)
{
	static const char *const names[] = {"w", NULL};
	static const struct {
		const char *config, *key;
	} cases[] = {
		/* transformers >= 4.56 writes "dtype"; it wins over "torch_dtype" */
		{"{\"dtype\": \"float16\"}", "dtype"},
		{"{\"torch_dtype\": \"float32\"}", "torch_dtype"},
		{"{\"torch_dtype\": \"float32\", \"dtype\": \"float16\"}", "dtype"},
		{"{\"dtype\": null, \"torch_dtype\": \"float16\"}", "torch_dtype"},
		{"{\"dtype\": 3}", "dtype"},
		{"{\"dtype\": null, \"torch_dtype\": null}", NULL},
		{"{\"hidden_size\": 64}", NULL},
	};
	static const uint64_t lens[] = {2};
	struct ckpt *c;
	struct err e = {0};
	size_t i;

	write_st("model.safetensors", names, lens);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_text("config.json", cases[i].config);
		ck_assert_int_eq(ckpt_open(tmpdir, CKPT_REQUIRE_CONFIG, &c, &e), 0);
		if (cases[i].key)
			ck_assert_str_eq(ckpt_config_dtype_key(c), cases[i].key);
		else
			ck_assert_ptr_null(ckpt_config_dtype_key(c));
		ckpt_free(c);
	}
}
END_TEST

/* A git-lfs pointer file, as a clone without `git lfs pull` leaves it. */
static const char lfs_pointer[] =
	"version https://git-lfs.github.com/spec/v1\n"
	"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
	"size 4000000000\n";

START_TEST(test_lfs_pointer)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};
	char *shard2 = test_path(tmpdir, "model-00002-of-00002.safetensors");

	/* a shard */
	write_sharded(GOOD_INDEX);
	write_text("model-00002-of-00002.safetensors", lfs_pointer);
	expect_open_fails(tmpdir, 0, "lfs_pointer", shard2, "git-lfs pointer to 4000000000 bytes");
	/* the index, and config.json */
	write_sharded(GOOD_INDEX);
	write_text("model.safetensors.index.json", lfs_pointer);
	expect_open_fails(tmpdir, 0, "lfs_pointer", "model.safetensors.index.json", "git lfs pull");
	write_sharded(GOOD_INDEX);
	write_text("config.json", lfs_pointer);
	expect_open_fails(tmpdir, 0, "lfs_pointer", "config.json", "git-lfs pointer");
	free(shard2);

	/* a single file, opened by its path; without the size line */
	test_rmtree(tmpdir);
	ck_assert_int_eq(mkdir(tmpdir, 0700), 0);
	write_st("model.safetensors", names, lens);
	write_text("model.safetensors",
		   "version https://git-lfs.github.com/spec/v1\noid sha256:00\n");
	shard2 = test_path(tmpdir, "model.safetensors");
	expect_open_fails(shard2, 0, "lfs_pointer", "model.safetensors: a git-lfs pointer,", NULL);
	free(shard2);

	/* A file that only starts like one is judged as safetensors. */
	write_text("model.safetensors", "version 2 of something else, not a pointer\n");
	expect_open_fails(tmpdir, 0, "header_too_large", "model.safetensors", NULL);
}
END_TEST

START_TEST(test_single_file_path)
{
	static const char *const names[] = {"w", NULL}, *const other[] = {"q", NULL};
	static const uint64_t lens[] = {2};
	char *path = test_path(tmpdir, "weights.safetensors");
	struct ckpt *c;
	struct err e = {0};

	write_st("weights.safetensors", names, lens);
	write_st("other.safetensors", other, lens);
	write_text("config.json", config_text);
	ck_assert_msg(ckpt_open(path, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(c->nfiles, 1);
	ck_assert_str_eq(c->files[0].name, "weights.safetensors");
	ck_assert_uint_eq(c->ntensors, 1);
	ck_assert_str_eq(c->tensors[0].name, "w");
	ck_assert_ptr_nonnull(c->config);
	ck_assert_uint_eq(c->copy_files.len, 1);
	ck_assert_str_eq(c->copy_files.items[0], "config.json");
	ckpt_free(c);
	free(path);
}
END_TEST

START_TEST(test_copy_files_and_warnings)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};
	char *sub = test_path(tmpdir, "original");
	struct ckpt *c;
	struct err e = {0};

	write_st("model.safetensors", names, lens);
	write_text("config.json", config_text);
	write_text("tokenizer.json", "{}");
	write_text("modeling_bailing_moe_v2.py", "# code\n");
	write_text("README.md", "hello\n");
	write_text("pytorch_model.bin", "weights");
	write_text("model.gguf", "weights");
	ck_assert_int_eq(mkdir(sub, 0755), 0);
	ck_assert_int_eq(ckpt_open(tmpdir, 0, &c, &e), 0);
	ck_assert_uint_eq(c->copy_files.len, 4);
	ck_assert_str_eq(c->copy_files.items[0], "README.md");
	ck_assert_str_eq(c->copy_files.items[1], "config.json");
	ck_assert_str_eq(c->copy_files.items[2], "modeling_bailing_moe_v2.py");
	ck_assert_str_eq(c->copy_files.items[3], "tokenizer.json");
	ck_assert_uint_eq(c->warnings.len, 3);
	ck_assert_str_eq(c->warnings.items[0], "skipped model.gguf: weights in other formats are not converted");
	ck_assert_str_eq(c->warnings.items[1], "skipped subdirectory 'original'");
	ck_assert_str_eq(c->warnings.items[2],
			 "skipped pytorch_model.bin: weights in other formats are not converted");
	ckpt_free(c);
	free(sub);
}
END_TEST

START_TEST(test_several_files_without_index)
{
	static const char *const a[] = {"a", NULL}, *const b[] = {"b", NULL};
	static const uint64_t lens[] = {2};

	write_st("model-00001-of-00002.safetensors", a, lens);
	write_st("model-00002-of-00002.safetensors", b, lens);
	expect_open_fails(tmpdir, 0, "not_a_checkpoint", "model.safetensors.index.json", tmpdir);
}
END_TEST

START_TEST(test_no_weights)
{
	write_text("config.json", config_text);
	expect_open_fails(tmpdir, 0, "not_a_checkpoint", tmpdir, NULL);
}
END_TEST

START_TEST(test_source_not_found)
{
	char *missing = test_path(tmpdir, "nowhere");
	char *missing_file = test_path(tmpdir, "nowhere.safetensors");

	expect_open_fails(missing, 0, "source_not_found", missing, NULL);
	expect_open_fails(missing_file, 0, "source_not_found", missing_file, NULL);
	free(missing);
	free(missing_file);
}
END_TEST

/* A kill -9 during a single-file conversion leaves a full-size temporary
 * file: alone it is no checkpoint, beside one it is not part of it, and
 * named directly it is refused.  The same for an earlier version's name,
 * which ended in .safetensors. */
START_TEST(test_temporary_files_ignored)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};
	char *current = store_temporary_name("model.safetensors", NULL);
	char *old_path = test_path(tmpdir, ".ckptconv-tmp.model.safetensors");
	struct ckpt *c;
	struct err e = {0};

	write_st(current, names, lens);
	write_st(".ckptconv-tmp.model.safetensors", names, lens);
	write_text("config.json", config_text);
	expect_open_fails(tmpdir, 0, "not_a_checkpoint", "holds no *.safetensors file", NULL);
	expect_open_fails(old_path, 0, "not_a_checkpoint", "unfinished output file", NULL);
	write_st("model.safetensors", names, lens);
	ck_assert_msg(ckpt_open(tmpdir, 0, &c, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(c->nfiles, 1);
	ck_assert_str_eq(c->files[0].name, "model.safetensors");
	ck_assert_uint_eq(c->copy_files.len, 1);
	ck_assert_str_eq(c->copy_files.items[0], "config.json");
	ck_assert_uint_eq(c->warnings.len, 0);
	ckpt_free(c);
	free(current);
	free(old_path);
}
END_TEST

/* ---- confined to allowed roots ---- */

static char *base_dir, *outside_dir;

/* tmpdir becomes root/ckpt inside the allowed root base/root; base/outside
 * lies outside it.  Loop 1 resolves with the O_NOFOLLOW walk. */
static void roots_setup(void)
{
	char *root;

	setup();
	base_dir = tmpdir;
	test_confine_under(base_dir, &root, &outside_dir);
	tmpdir = test_path(root, "ckpt");
	ck_assert_int_eq(mkdir(tmpdir, 0755), 0);
	free(root);
}

static void roots_teardown(void)
{
	test_unconfine();
	free(tmpdir);
	tmpdir = base_dir;
	base_dir = NULL;
	free(outside_dir);
	teardown();
}

/* Moves tmpdir/name to `to` and leaves a symbolic link to it. */
static void move_and_link(const char *name, const char *to_dir, const char *link_target)
{
	char *from = test_path(tmpdir, name), *to = test_path(to_dir, name);

	ck_assert_int_eq(rename(from, to), 0);
	ck_assert_int_eq(symlink(link_target ? link_target : to, from), 0);
	free(from);
	free(to);
}

START_TEST(test_confined_shard_outside)
{
	store_local_force_walk = _i == 1;
	write_sharded(GOOD_INDEX);
	move_and_link("model-00002-of-00002.safetensors", outside_dir, NULL);
	expect_open_fails(tmpdir, 0, "forbidden_path", "model-00002-of-00002.safetensors",
			  "outside the allowed roots");
}
END_TEST

START_TEST(test_confined_single_file_outside)
{
	static const char *const names[] = {"w", NULL};
	static const uint64_t lens[] = {2};
	char *path = test_path(tmpdir, "model.safetensors");

	store_local_force_walk = _i == 1;
	write_st("model.safetensors", names, lens);
	write_text("config.json", config_text);
	move_and_link("model.safetensors", outside_dir, NULL);
	expect_open_fails(tmpdir, 0, "forbidden_path", "model.safetensors", "outside");
	expect_open_fails(path, 0, "forbidden_path", "model.safetensors", "outside");
	free(path);
}
END_TEST

START_TEST(test_confined_index_outside)
{
	store_local_force_walk = _i == 1;
	write_sharded(GOOD_INDEX);
	move_and_link("model.safetensors.index.json", outside_dir, NULL);
	expect_open_fails(tmpdir, 0, "forbidden_path", "model.safetensors.index.json", "outside");
}
END_TEST

START_TEST(test_confined_config_outside)
{
	store_local_force_walk = _i == 1;
	write_sharded(GOOD_INDEX);
	move_and_link("config.json", outside_dir, NULL);
	expect_open_fails(tmpdir, CKPT_REQUIRE_CONFIG, "forbidden_path", "config.json", "outside");
}
END_TEST

/* An extra file leading outside (the daemon's token, say) is skipped with
 * a warning; links that stay inside the root are followed. */
START_TEST(test_confined_extra_outside_skipped)
{
	char *shared = test_path(tmpdir, "../shared"), *target;
	struct ckpt *c;
	struct err e = {0};

	store_local_force_walk = _i == 1;
	write_sharded(GOOD_INDEX);
	write_text("tokenizer_config.json", "token");
	write_text("README.md", "readme");
	move_and_link("tokenizer_config.json", outside_dir, NULL);
	ck_assert_int_eq(mkdir(shared, 0755), 0);
	move_and_link("README.md", shared, "../shared/README.md");
	target = test_path(shared, "model-00001-of-00002.safetensors");
	move_and_link("model-00001-of-00002.safetensors", shared, target);
	ck_assert_msg(ckpt_open(tmpdir, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(c->nfiles, 2);
	ck_assert_uint_eq(c->ntensors, 3);
	ck_assert_uint_eq(c->copy_files.len, 2);
	ck_assert_str_eq(c->copy_files.items[0], "README.md");
	ck_assert_str_eq(c->copy_files.items[1], "config.json");
	ck_assert_uint_eq(c->warnings.len, 1);
	ck_assert_str_eq(c->warnings.items[0],
			 "skipped 'tokenizer_config.json': it resolves outside the allowed roots");
	ckpt_free(c);
	free(target);
	free(shared);
}
END_TEST

/* The parsers over bytes: they read exactly `len` bytes, name `where` in
 * their errors, and hand back nothing on failure. */
START_TEST(test_index_parse)
{
	static const char text[] =
		"{\"metadata\": {\"total_size\": 8}, \"weight_map\": {\"a\": \"x.safetensors\", "
		"\"b\": \"y.safetensors\"}}trailing garbage";
	const size_t len = strlen(text) - strlen("trailing garbage");
	struct err e = {0};
	json_t *map = NULL;
	const char *text2;

	ck_assert_int_eq(ckpt_index_parse("m/model.safetensors.index.json", text, len, &map, &e),
			 0);
	ck_assert_int_eq(e.code, ERR_NONE);
	ck_assert_uint_eq(json_object_size(map), 2);
	ck_assert_str_eq(json_string_value(json_object_get(map, "b")), "y.safetensors");
	json_decref(map);

	map = (json_t *)1;
	ck_assert_int_eq(ckpt_index_parse("m/model.safetensors.index.json", text, strlen(text),
					  &map, &e),
			 -1);
	ck_assert_ptr_null(map);
	ck_assert_str_eq(err_name(e.code), "index_invalid");
	ck_assert_ptr_nonnull(strstr(e.msg, "m/model.safetensors.index.json: not valid JSON"));

	err_clear(&e);
	text2 = "{\"weight_map\": {\"w\": \"../x.safetensors\"}}";
	ck_assert_int_eq(ckpt_index_parse("idx", text2, strlen(text2), &map, &e), -1);
	ck_assert_str_eq(err_name(e.code), "index_invalid");
	ck_assert_str_eq(e.tensor, "w");
	ck_assert_ptr_null(map);

	err_clear(&e);
	text2 = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {}}";
	ck_assert_int_eq(ckpt_index_parse("idx", text2, strlen(text2), &map, &e), -1);
	ck_assert_str_eq(err_name(e.code), "index_invalid");
	ck_assert_str_eq(e.msg, "idx: the weight_map lists no tensor");

	err_clear(&e);
	text2 = "{\"weight_map\": {\"w\": \"a\", \"w\": \"b\"}}";
	ck_assert_int_eq(ckpt_index_parse("idx", text2, strlen(text2), &map, &e), -1);
	ck_assert_str_eq(err_name(e.code), "index_invalid");
}
END_TEST

START_TEST(test_config_parse)
{
	static const char text[] = "{\"num_experts\": 4}[";
	struct err e = {0};
	json_t *config = NULL;

	ck_assert_int_eq(ckpt_config_parse("m/config.json", text, strlen(text) - 1, &config, &e),
			 0);
	ck_assert_int_eq(json_integer_value(json_object_get(config, "num_experts")), 4);
	json_decref(config);

	ck_assert_int_eq(ckpt_config_parse("m/config.json", text, strlen(text), &config, &e), -1);
	ck_assert_ptr_null(config);
	ck_assert_str_eq(err_name(e.code), "config_invalid");
	ck_assert_ptr_nonnull(strstr(e.msg, "m/config.json: not valid JSON"));

	err_clear(&e);
	ck_assert_int_eq(ckpt_config_parse("m/config.json", "[4]", strlen("[4]"), &config, &e), -1);
	ck_assert_ptr_null(config);
	ck_assert_str_eq(err_name(e.code), "config_invalid");
	ck_assert_str_eq(e.msg, "m/config.json: not a JSON object");
}
END_TEST

static Suite *ckpt_suite(void)
{
	Suite *s = suite_create("ckpt");
	TCase *golden_tc = tcase_create("golden");
	TCase *open_tc = tcase_create("open");
	TCase *bad = tcase_create("bad_input");
	TCase *confined = tcase_create("confined");

	tcase_add_checked_fixture(golden_tc, setup, teardown);
	tcase_add_checked_fixture(open_tc, setup, teardown);
	tcase_add_checked_fixture(bad, setup, teardown);
	tcase_add_test(golden_tc, test_golden_sharded);
	tcase_add_test(golden_tc, test_golden_single_files);
	tcase_add_test(open_tc, test_offsets_are_absolute);
	tcase_add_test(open_tc, test_natural_order);
	tcase_add_test(open_tc, test_sharded_ok);
	tcase_add_test(open_tc, test_single_file_path);
	tcase_add_test(open_tc, test_copy_files_and_warnings);
	tcase_add_test(open_tc, test_config_keys);
	tcase_add_test(open_tc, test_config_dtype_key);
	tcase_add_test(open_tc, test_temporary_files_ignored);
	tcase_add_checked_fixture(confined, roots_setup, roots_teardown);
	tcase_add_loop_test(confined, test_confined_shard_outside, 0, 2);
	tcase_add_loop_test(confined, test_confined_single_file_outside, 0, 2);
	tcase_add_loop_test(confined, test_confined_index_outside, 0, 2);
	tcase_add_loop_test(confined, test_confined_config_outside, 0, 2);
	tcase_add_loop_test(confined, test_confined_extra_outside_skipped, 0, 2);
	tcase_add_test(bad, test_index_missing_file);
	tcase_add_test(bad, test_index_invalid);
	tcase_add_test(bad, test_index_weight_map_not_object);
	tcase_add_test(bad, test_index_weight_map_empty);
	tcase_add_test(bad, test_weight_map_wrong_file);
	tcase_add_test(bad, test_weight_map_lacks_tensor);
	tcase_add_test(bad, test_weight_map_extra_tensor);
	tcase_add_test(bad, test_duplicate_across_files);
	tcase_add_test(bad, test_bad_shard_header);
	tcase_add_test(bad, test_missing_config);
	tcase_add_test(bad, test_config_invalid);
	tcase_add_test(bad, test_lfs_pointer);
	tcase_add_test(bad, test_several_files_without_index);
	tcase_add_test(bad, test_no_weights);
	tcase_add_test(bad, test_source_not_found);
	tcase_add_test(bad, test_index_parse);
	tcase_add_test(bad, test_config_parse);
	suite_add_tcase(s, golden_tc);
	suite_add_tcase(s, open_tc);
	suite_add_tcase(s, bad);
	suite_add_tcase(s, confined);
	return s;
}

int main(void)
{
	return test_run_suite(ckpt_suite());
}
