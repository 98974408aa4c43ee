/* SPDX-License-Identifier: MIT */
/*
 * fixture: writes deterministic synthetic Ling 2.0 checkpoints in HF
 * layout: the tensor names, dtypes and shapes of a real BailingMoeV2
 * checkpoint (tiny = the golden checkpoint's dimensions, mini =
 * Ling-mini-2.0's with fewer layers and a small vocabulary), filled with
 * small finite random values from a seeded generator, plus config.json and
 * the index.  Data is generated a buffer at a time and streamed out, so a
 * multi-gigabyte fixture takes seconds and little memory.  Files appear
 * under temporary names and are renamed into place; the index comes last,
 * and a failure removes whatever was written.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/fixture.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define INDEX_NAME "model.safetensors.index.json"
#define CONFIG_NAME "config.json"
#define SINGLE_NAME "model.safetensors"
#define CHUNK_BYTES (4u << 20)
#define DEFAULT_LAYERS 2

struct dims {
	uint64_t hidden, heads, kv_heads, head_dim;
	uint64_t experts, moe_intermediate, intermediate, vocab;
	uint64_t shared_experts, first_dense, experts_per_tok, n_group, topk_group;
	uint64_t max_shard_size;
};

static const struct dims presets[] = {
	[FIXTURE_TINY] = {64, 4, 2, 16, 4, 32, 128, 128, 1, 1, 2, 2, 1, 50ULL * 1024},
	[FIXTURE_MINI] = {2048, 16, 4, 128, 256, 512, 5120, 8192, 1, 1, 8, 8, 4, 1000000000ULL},
};

struct tensor_list {
	struct st_tensor *items;
	size_t n, cap;
};

/* ---- the tensor list ---- */

static void add_tensor(struct tensor_list *l, enum dtype dtype, uint64_t d0, uint64_t d1,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A tensor of shape [d0] (d1 == 0) or [d0, d1]. */
static void add_tensor(struct tensor_list *l, enum dtype dtype, uint64_t d0, uint64_t d1,
		       const char *fmt, ...)
{
	struct st_tensor *t;
	va_list ap;

	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->items = xrealloc(l->items, l->cap * sizeof(*l->items));
	}
	t = &l->items[l->n++];
	memset(t, 0, sizeof(*t));
	va_start(ap, fmt);
	if (vasprintf(&t->name, fmt, ap) < 0)
		abort();
	va_end(ap);
	t->dtype = dtype;
	t->ndim = d1 ? 2 : 1;
	t->shape[0] = d0;
	t->shape[1] = d1;
}

/* Bytes of a listed tensor (its begin/end are not set until the header is
 * built). */
static uint64_t tensor_nbytes(const struct st_tensor *t)
{
	uint64_t n = dtype_size(t->dtype);
	int i;

	for (i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

static void tensor_list_fini(struct tensor_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->items[i].name);
	free(l->items);
}

static int compare_tensors(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;

	return natural_compare(x->name, y->name);
}

static void add_layer(struct tensor_list *l, const struct dims *d, uint64_t n, enum dtype w)
{
	uint64_t qkv_rows = (d->heads + 2 * d->kv_heads) * d->head_dim;
	uint64_t shared = d->moe_intermediate * d->shared_experts;
	uint64_t H = d->hidden, I = d->moe_intermediate, e;
	char p[64];

	snprintf(p, sizeof(p), "model.layers.%" PRIu64, n);
	add_tensor(l, w, qkv_rows, H, "%s.attention.query_key_value.weight", p);
	add_tensor(l, w, H, d->heads * d->head_dim, "%s.attention.dense.weight", p);
	add_tensor(l, w, d->head_dim, 0, "%s.attention.query_layernorm.weight", p);
	add_tensor(l, w, d->head_dim, 0, "%s.attention.key_layernorm.weight", p);
	add_tensor(l, w, H, 0, "%s.input_layernorm.weight", p);
	add_tensor(l, w, H, 0, "%s.post_attention_layernorm.weight", p);
	if (n < d->first_dense) {
		add_tensor(l, w, d->intermediate, H, "%s.mlp.gate_proj.weight", p);
		add_tensor(l, w, d->intermediate, H, "%s.mlp.up_proj.weight", p);
		add_tensor(l, w, H, d->intermediate, "%s.mlp.down_proj.weight", p);
		return;
	}
	/* The router stays F32 whatever the weights' dtype, as in Ling 2.0. */
	add_tensor(l, DTYPE_F32, d->experts, H, "%s.mlp.gate.weight", p);
	add_tensor(l, DTYPE_F32, d->experts, 0, "%s.mlp.gate.expert_bias", p);
	for (e = 0; e < d->experts; e++) {
		add_tensor(l, w, I, H, "%s.mlp.experts.%" PRIu64 ".gate_proj.weight", p, e);
		add_tensor(l, w, I, H, "%s.mlp.experts.%" PRIu64 ".up_proj.weight", p, e);
		add_tensor(l, w, H, I, "%s.mlp.experts.%" PRIu64 ".down_proj.weight", p, e);
	}
	add_tensor(l, w, shared, H, "%s.mlp.shared_experts.gate_proj.weight", p);
	add_tensor(l, w, shared, H, "%s.mlp.shared_experts.up_proj.weight", p);
	add_tensor(l, w, H, shared, "%s.mlp.shared_experts.down_proj.weight", p);
}

static void build_tensors(struct tensor_list *l, const struct dims *d, uint32_t layers,
			  enum dtype w)
{
	uint32_t n;

	add_tensor(l, w, d->vocab, d->hidden, "model.word_embeddings.weight");
	for (n = 0; n < layers; n++)
		add_layer(l, d, n, w);
	add_tensor(l, w, d->hidden, 0, "model.norm.weight");
	add_tensor(l, w, d->vocab, d->hidden, "lm_head.weight");
	qsort(l->items, l->n, sizeof(*l->items), compare_tensors);
}

/* ---- values ---- */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Each tensor has its own stream, so its values depend only on the seed
 * and its name, not on the shard it lands in. */
static uint64_t tensor_stream(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	return mix64(seed ^ mix64(h));
}

/* Fills len bytes (a multiple of 8) with values of magnitude in
 * [2^-7, 2^-3), random sign and random mantissa bits: BF16 words have
 * their exponent fixed but for two random bits, F32 words the same exponent
 * range with all 23 mantissa bits random, so casts to BF16 must round. */
static void fill_values(unsigned char *buf, size_t len, enum dtype dtype, uint64_t *state)
{
	uint64_t keep, set, z;
	size_t i;

	switch (dtype) {
	case DTYPE_F32:
		keep = 0x81ffffff81ffffffULL, set = 0x3c0000003c000000ULL;
		break;
	default:
		keep = 0x81ff81ff81ff81ffULL, set = 0x3c003c003c003c00ULL;
		break;
	}
	for (i = 0; i + 8 <= len; i += 8) {
		z = mix64(*state += 0x9e3779b97f4a7c15ULL);
		z = (z & keep) | set;
		memcpy(buf + i, &z, 8); /* little-endian hosts only, like safetensors */
	}
}

/* ---- files ---- */

static int write_all(int fd, const void *buf, size_t len, const char *path, struct err *e)
{
	const unsigned char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_set_errno(e, "io_error", errno, "%s: cannot write", path);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

struct writer {
	const char *dir;
	struct strvec published; /* names renamed into place, for cleanup */
	char *tmp_path;		 /* the file being written, if any */
};

/* Opens the temporary file of dir/name (the store's naming) for writing. */
static int open_tmp(struct writer *w, const char *name, int *fd, struct err *e)
{
	char *tmp = store_temporary_name(name, NULL);

	if (asprintf(&w->tmp_path, "%s/%s", w->dir, tmp) < 0)
		abort();
	free(tmp);
	*fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (*fd < 0) {
		err_set_errno(e, "destination_not_writable", errno, "%s: cannot create",
			      w->tmp_path);
		free(w->tmp_path);
		w->tmp_path = NULL;
		return -1;
	}
	return 0;
}

/* Closes the temporary file and renames it to dir/name. */
static int publish_tmp(struct writer *w, int fd, const char *name, struct err *e)
{
	char *path;
	int rc = 0;

	if (close(fd) != 0)
		return err_set_errno(e, "io_error", errno, "%s: cannot write", w->tmp_path);
	if (asprintf(&path, "%s/%s", w->dir, name) < 0)
		abort();
	if (rename(w->tmp_path, path) != 0)
		rc = err_set_errno(e, "io_error", errno, "%s: cannot rename to %s", w->tmp_path,
				   path);
	else {
		strvec_push(&w->published, name);
		free(w->tmp_path);
		w->tmp_path = NULL;
	}
	free(path);
	return rc;
}

static int put_file(struct writer *w, const char *name, const char *text, struct err *e)
{
	int fd;

	if (open_tmp(w, name, &fd, e))
		return -1;
	if (write_all(fd, text, strlen(text), w->tmp_path, e)) {
		close(fd);
		return -1;
	}
	return publish_tmp(w, fd, name, e);
}

/* Removes everything written so far: the checkpoint must appear whole or
 * not at all. */
static void writer_cleanup(struct writer *w)
{
	char *path;
	size_t i;

	if (w->tmp_path)
		unlink(w->tmp_path);
	for (i = w->published.len; i-- > 0;) {
		if (asprintf(&path, "%s/%s", w->dir, w->published.items[i]) < 0)
			abort();
		unlink(path);
		free(path);
	}
}

static int write_shard(struct writer *w, const char *name, const struct st_tensor *tensors,
		       size_t n, uint64_t seed, unsigned char *buf, struct err *e)
{
	char *header = NULL;
	size_t header_len, i, chunk;
	uint64_t left, state;
	int fd, rc = -1;

	if (st_header_build(tensors, n, &header, &header_len, e))
		return -1;
	if (open_tmp(w, name, &fd, e))
		goto out_header;
	if (write_all(fd, header, header_len, w->tmp_path, e))
		goto out_close;
	for (i = 0; i < n; i++) {
		state = tensor_stream(seed, tensors[i].name);
		for (left = tensor_nbytes(&tensors[i]); left > 0; left -= chunk) {
			chunk = left < CHUNK_BYTES ? (size_t)left : CHUNK_BYTES;
			/* whole 8-byte words; a tensor's last one may be cut short */
			fill_values(buf, (chunk + 7) & ~(size_t)7, tensors[i].dtype, &state);
			if (write_all(fd, buf, chunk, w->tmp_path, e))
				goto out_close;
		}
	}
	rc = publish_tmp(w, fd, name, e);
	goto out_header;
out_close:
	close(fd);
out_header:
	free(header);
	return rc;
}

/* ---- config and index ---- */

static char *config_text(const struct dims *d, uint32_t layers, enum dtype w)
{
	json_t *c = json_pack(
		"{s:[s], s:s, s:s, s:f, s:f, s:f, s:b, s:b, s:b, s:b, s:s, s:b, s:f, s:b, s:I, s:I}",
		"architectures", "BailingMoeV2ForCausalLM", "model_type", "bailing_moe",
		"torch_dtype", w == DTYPE_F32 ? "float32" : "bfloat16", "partial_rotary_factor",
		0.5, "rope_theta", 600000.0, "rms_norm_eps", 1e-6, "tie_word_embeddings", 0,
		"use_qk_norm", 1, "use_qkv_bias", 0, "use_bias", 0, "score_function", "sigmoid",
		"moe_router_enable_expert_bias", 1, "routed_scaling_factor", 2.5, "norm_topk_prob",
		1, "num_nextn_predict_layers", (json_int_t)0, "max_position_embeddings",
		(json_int_t)32768);
	char *text;

	json_object_set_new(c, "vocab_size", json_integer((json_int_t)d->vocab));
	json_object_set_new(c, "hidden_size", json_integer((json_int_t)d->hidden));
	json_object_set_new(c, "intermediate_size", json_integer((json_int_t)d->intermediate));
	json_object_set_new(c, "moe_intermediate_size",
			    json_integer((json_int_t)d->moe_intermediate));
	json_object_set_new(c, "num_hidden_layers", json_integer(layers));
	json_object_set_new(c, "num_attention_heads", json_integer((json_int_t)d->heads));
	json_object_set_new(c, "num_key_value_heads", json_integer((json_int_t)d->kv_heads));
	json_object_set_new(c, "head_dim", json_integer((json_int_t)d->head_dim));
	json_object_set_new(c, "num_experts", json_integer((json_int_t)d->experts));
	json_object_set_new(c, "num_shared_experts", json_integer((json_int_t)d->shared_experts));
	json_object_set_new(c, "num_experts_per_tok", json_integer((json_int_t)d->experts_per_tok));
	json_object_set_new(c, "n_group", json_integer((json_int_t)d->n_group));
	json_object_set_new(c, "topk_group", json_integer((json_int_t)d->topk_group));
	json_object_set_new(c, "first_k_dense_replace", json_integer((json_int_t)d->first_dense));
	text = json_dumps(c, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	json_decref(c);
	return text;
}

static char *index_text(const struct tensor_list *l, const uint32_t *file_of,
			char *const *file_names, uint64_t total)
{
	json_t *map = json_object(), *root;
	char *text;
	size_t i;

	for (i = 0; i < l->n; i++)
		json_object_set_new(map, l->items[i].name, json_string(file_names[file_of[i]]));
	root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total,
			 "weight_map", map);
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return text;
}

/* ---- the destination ---- */

/* mkdir -p */
static int make_dirs(const char *dir, struct err *e)
{
	char *path = xstrdup(dir), *p = path;
	int rc = 0, last = 0;

	while (rc == 0 && !last) {
		p = strchr(p + 1, '/');
		last = p == NULL;
		if (p)
			*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			rc = err_set_errno(e, "destination_not_writable", errno,
					   "%s: cannot create", path);
		if (p)
			*p = '/';
	}
	free(path);
	return rc;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* The directory must not already hold a checkpoint or a config.json we
 * would replace. */
static int check_destination(const char *dir, struct err *e)
{
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if (make_dirs(dir, e))
		return -1;
	d = opendir(dir);
	if (!d)
		return err_set_errno(e, "destination_not_writable", errno, "%s: cannot open", dir);
	while (rc == 0 && (de = readdir(d)) != NULL)
		if (ends_with(de->d_name, ".safetensors") || strcmp(de->d_name, INDEX_NAME) == 0 ||
		    strcmp(de->d_name, CONFIG_NAME) == 0)
			rc = err_set(e, "destination_not_empty", "%s: already holds %s", dir,
				     de->d_name);
	closedir(d);
	if (rc == 0 && access(dir, W_OK) != 0)
		rc = err_set_errno(e, "destination_not_writable", errno, "%s: cannot write", dir);
	return rc;
}

/* ---- the whole ---- */

static int check_options(const struct fixture_options *o, struct err *e)
{
	if (o->preset != FIXTURE_TINY && o->preset != FIXTURE_MINI)
		return err_set(e, "invalid_option", "unknown fixture preset %d", (int)o->preset);
	if (o->dtype != DTYPE_BF16 && o->dtype != DTYPE_F32 && o->dtype != DTYPE_INVALID)
		return err_set(e, "invalid_option", "fixture dtype %s is not bf16 or f32",
			       dtype_name(o->dtype));
	if (o->layers > 10000)
		return err_set(e, "invalid_option", "%" PRIu32 " layers is too many for a fixture",
			       o->layers);
	return 0;
}

/* Shards in output order: a new shard starts when the next tensor would
 * take the current one past max_shard_size. */
static size_t assign_shards(const struct tensor_list *l, uint64_t max_shard, uint32_t *file_of)
{
	uint64_t size = 0, nbytes;
	size_t i, nfiles = 0;

	for (i = 0; i < l->n; i++) {
		nbytes = tensor_nbytes(&l->items[i]);
		if (i == 0 || (size > 0 && size + nbytes > max_shard)) {
			nfiles++;
			size = 0;
		}
		file_of[i] = (uint32_t)(nfiles - 1);
		size += nbytes;
	}
	return nfiles;
}

static char **shard_names(size_t nfiles)
{
	char **names = xcalloc(nfiles, sizeof(*names));
	size_t i;

	for (i = 0; i < nfiles; i++) {
		if (nfiles == 1)
			names[i] = xstrdup(SINGLE_NAME);
		else if (asprintf(&names[i], "model-%05zu-of-%05zu.safetensors", i + 1, nfiles) < 0)
			abort();
	}
	return names;
}

/* Room for the data plus headers, config and index (a generous 1 MiB per
 * file is far more than they take), checked before anything is written;
 * free space is read through the local store's test seam when set. */
static int check_space(const char *dir, uint64_t data_bytes, size_t nfiles, struct err *e)
{
	uint64_t needed = data_bytes + (uint64_t)(nfiles + 2) * (1u << 20), free_bytes;
	char need_text[32], free_text[32];
	struct statvfs vfs;

	if (store_local_free_bytes_hook) {
		if (store_local_free_bytes_hook(dir, &free_bytes) != 0)
			return err_set(e, "io_error", "%s: cannot read the free space", dir);
	} else if (statvfs(dir, &vfs) != 0) {
		return err_set_errno(e, "io_error", errno, "%s: cannot read the free space", dir);
	} else if (!u64_mul(vfs.f_bavail, vfs.f_frsize, &free_bytes)) {
		free_bytes = UINT64_MAX;
	}
	if (free_bytes >= needed)
		return 0;
	size_format(needed, need_text, sizeof(need_text));
	size_format(free_bytes, free_text, sizeof(free_text));
	return err_set(e, "insufficient_space", "%s: the fixture needs %s and only %s is free", dir,
		       need_text, free_text);
}

static int write_checkpoint(struct writer *w, const struct fixture_options *o, const struct dims *d,
			    uint32_t layers, enum dtype dtype, struct err *e)
{
	struct tensor_list l = {0};
	uint64_t max_shard = o->max_shard_size ? o->max_shard_size : d->max_shard_size, total = 0;
	unsigned char *buf = xmalloc(CHUNK_BYTES);
	char **names, *text;
	uint32_t *file_of;
	size_t nfiles, i, first;
	int rc;

	build_tensors(&l, d, layers, dtype);
	file_of = xcalloc(l.n, sizeof(*file_of));
	nfiles = assign_shards(&l, max_shard, file_of);
	names = shard_names(nfiles);
	for (i = 0; i < l.n; i++)
		total += tensor_nbytes(&l.items[i]);
	rc = check_space(w->dir, total, nfiles, e);
	if (rc == 0) {
		text = config_text(d, layers, dtype);
		rc = put_file(w, CONFIG_NAME, text, e);
		free(text);
	}
	for (i = 0, first = 0; rc == 0 && i < l.n; i++) {
		if (i + 1 < l.n && file_of[i + 1] == file_of[i])
			continue;
		rc = write_shard(w, names[file_of[i]], &l.items[first], i + 1 - first, o->seed, buf,
				 e);
		first = i + 1;
	}
	if (rc == 0 && nfiles > 1) {
		text = index_text(&l, file_of, names, total);
		rc = put_file(w, INDEX_NAME, text, e);
		free(text);
	}
	for (i = 0; i < nfiles; i++)
		free(names[i]);
	free(names);
	free(file_of);
	free(buf);
	tensor_list_fini(&l);
	return rc;
}

int fixture_write(const char *dir, const struct fixture_options *o, struct err *e)
{
	struct writer w = {.dir = dir};
	enum dtype dtype;
	int rc;

	if (check_options(o, e) || check_destination(dir, e))
		return -1;
	dtype = o->dtype == DTYPE_F32 ? DTYPE_F32 : DTYPE_BF16;
	rc = write_checkpoint(&w, o, &presets[o->preset], o->layers ? o->layers : DEFAULT_LAYERS,
			      dtype, e);
	if (rc)
		writer_cleanup(&w);
	free(w.tmp_path);
	strvec_fini(&w.published);
	return rc;
}
