/* SPDX-License-Identifier: MIT */
/*
 * testckpt: writes small synthetic safetensors checkpoints (config.json,
 * shards, index) for the test suites, independently of the code under test.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testckpt.h"

static const char tiny_config[] =
	"{\"architectures\": [\"BailingMoeV2ForCausalLM\"], \"model_type\": \"bailing_moe\","
	" \"torch_dtype\": \"bfloat16\", \"vocab_size\": 128, \"hidden_size\": 64,"
	" \"intermediate_size\": 128, \"moe_intermediate_size\": 32, \"num_hidden_layers\": 2,"
	" \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16,"
	" \"num_experts\": 4, \"num_shared_experts\": 1, \"num_experts_per_tok\": 2,"
	" \"first_k_dense_replace\": 1}";

static void *must(void *p)
{
	if (!p) {
		fprintf(stderr, "testckpt: out of memory\n");
		abort();
	}
	return p;
}

json_t *testckpt_tiny_config(void)
{
	return must(json_loads(tiny_config, 0, NULL));
}

struct testckpt *testckpt_new(void)
{
	struct testckpt *tc = must(calloc(1, sizeof(*tc)));

	tc->config = testckpt_tiny_config();
	tc->nfiles = 1;
	return tc;
}

void testckpt_free(struct testckpt *tc)
{
	size_t i;

	if (!tc)
		return;
	for (i = 0; i < tc->ntensors; i++)
		free(tc->tensors[i].name);
	free(tc->tensors);
	json_decref(tc->config);
	free(tc);
}

void testckpt_add(struct testckpt *tc, const char *name, enum dtype dtype, int ndim,
		  const uint64_t *shape)
{
	struct testckpt_tensor *t;

	tc->tensors = must(realloc(tc->tensors, (tc->ntensors + 1) * sizeof(*tc->tensors)));
	t = &tc->tensors[tc->ntensors++];
	memset(t, 0, sizeof(*t));
	t->name = must(strdup(name));
	t->dtype = dtype;
	t->ndim = ndim;
	memcpy(t->shape, shape, (size_t)ndim * sizeof(*shape));
}

struct testckpt_tensor *testckpt_find(struct testckpt *tc, const char *name)
{
	size_t i;

	for (i = 0; i < tc->ntensors; i++)
		if (strcmp(tc->tensors[i].name, name) == 0)
			return &tc->tensors[i];
	return NULL;
}

bool testckpt_remove(struct testckpt *tc, const char *name)
{
	struct testckpt_tensor *t = testckpt_find(tc, name);
	size_t i;

	if (!t)
		return false;
	i = (size_t)(t - tc->tensors);
	free(t->name);
	memmove(t, t + 1, (tc->ntensors - i - 1) * sizeof(*t));
	tc->ntensors--;
	return true;
}

uint64_t testckpt_nbytes(const struct testckpt_tensor *t)
{
	uint64_t n = 1, bytes = 0;
	int d;

	for (d = 0; d < t->ndim; d++)
		n *= t->shape[d];
	/* bits x elements / 8: whole bytes for the dtypes narrower than one */
	(void)dtype_bytes(t->dtype, n, &bytes);
	return bytes;
}

static uint64_t dim(const struct testckpt *tc, const char *key)
{
	json_t *v = json_object_get(tc->config, key);

	return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static void addf(struct testckpt *tc, enum dtype dtype, int ndim, const uint64_t *shape,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void addf(struct testckpt *tc, enum dtype dtype, int ndim, const uint64_t *shape,
		 const char *fmt, ...)
{
	char name[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	testckpt_add(tc, name, dtype, ndim, shape);
}

struct ling_dims {
	uint64_t H, q, kv, D, inter, I, E, shared, layers, dense, vocab;
};

static void ling_dims(const struct testckpt *tc, struct ling_dims *d)
{
	d->H = dim(tc, "hidden_size");
	d->D = dim(tc, "head_dim");
	d->q = dim(tc, "num_attention_heads") * d->D;
	d->kv = dim(tc, "num_key_value_heads") * d->D;
	d->inter = dim(tc, "intermediate_size");
	d->I = dim(tc, "moe_intermediate_size");
	d->E = dim(tc, "num_experts");
	d->shared = dim(tc, "num_shared_experts") * d->I;
	d->layers = dim(tc, "num_hidden_layers");
	d->dense = dim(tc, "first_k_dense_replace");
	d->vocab = dim(tc, "vocab_size");
}

/* What both layouts share: norms, dense MLPs, router, shared experts. */
static void add_common(struct testckpt *tc, const struct ling_dims *d, bool native)
{
	const char *P = "model.layers.";
	uint64_t l;

	addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->vocab, d->H), "lm_head.weight");
	addf(tc, DTYPE_BF16, 1, TC_SHAPE(d->H), "model.norm.weight");
	for (l = 0; l < d->layers; l++) {
		addf(tc, DTYPE_BF16, 1, TC_SHAPE(d->H), "%s%llu.input_layernorm.weight", P,
		     (unsigned long long)l);
		addf(tc, DTYPE_BF16, 1, TC_SHAPE(d->H), "%s%llu.post_attention_layernorm.weight", P,
		     (unsigned long long)l);
		if (l < d->dense) {
			addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->inter, d->H),
			     "%s%llu.mlp.gate_proj.weight", P, (unsigned long long)l);
			addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->inter, d->H),
			     "%s%llu.mlp.up_proj.weight", P, (unsigned long long)l);
			addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->H, d->inter),
			     "%s%llu.mlp.down_proj.weight", P, (unsigned long long)l);
			continue;
		}
		addf(tc, DTYPE_F32, 2, TC_SHAPE(d->E, d->H), "%s%llu.mlp.gate.weight", P,
		     (unsigned long long)l);
		addf(tc, DTYPE_F32, 1, TC_SHAPE(d->E), "%s%llu.mlp.gate.%s", P,
		     (unsigned long long)l, native ? "e_score_correction_bias" : "expert_bias");
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->shared, d->H),
		     "%s%llu.mlp.shared_experts.gate_proj.weight", P, (unsigned long long)l);
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->shared, d->H),
		     "%s%llu.mlp.shared_experts.up_proj.weight", P, (unsigned long long)l);
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d->H, d->shared),
		     "%s%llu.mlp.shared_experts.down_proj.weight", P, (unsigned long long)l);
	}
}

void testckpt_add_ling_hf(struct testckpt *tc)
{
	struct ling_dims d;
	uint64_t l, x;

	ling_dims(tc, &d);
	add_common(tc, &d, false);
	addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.vocab, d.H), "model.word_embeddings.weight");
	for (l = 0; l < d.layers; l++) {
		unsigned long long L = l;

		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.q + 2 * d.kv, d.H),
		     "model.layers.%llu.attention.query_key_value.weight", L);
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.H, d.q),
		     "model.layers.%llu.attention.dense.weight", L);
		addf(tc, DTYPE_BF16, 1, TC_SHAPE(d.D),
		     "model.layers.%llu.attention.query_layernorm.weight", L);
		addf(tc, DTYPE_BF16, 1, TC_SHAPE(d.D),
		     "model.layers.%llu.attention.key_layernorm.weight", L);
		for (x = 0; l >= d.dense && x < d.E; x++) {
			unsigned long long X = x;

			addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.I, d.H),
			     "model.layers.%llu.mlp.experts.%llu.gate_proj.weight", L, X);
			addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.I, d.H),
			     "model.layers.%llu.mlp.experts.%llu.up_proj.weight", L, X);
			addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.H, d.I),
			     "model.layers.%llu.mlp.experts.%llu.down_proj.weight", L, X);
		}
	}
}

void testckpt_add_ling_native(struct testckpt *tc)
{
	struct ling_dims d;
	uint64_t l;

	ling_dims(tc, &d);
	add_common(tc, &d, true);
	addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.vocab, d.H), "model.embed_tokens.weight");
	for (l = 0; l < d.layers; l++) {
		unsigned long long L = l;

		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.q, d.H),
		     "model.layers.%llu.self_attn.q_proj.weight", L);
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.kv, d.H),
		     "model.layers.%llu.self_attn.k_proj.weight", L);
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.kv, d.H),
		     "model.layers.%llu.self_attn.v_proj.weight", L);
		addf(tc, DTYPE_BF16, 2, TC_SHAPE(d.H, d.q),
		     "model.layers.%llu.self_attn.o_proj.weight", L);
		addf(tc, DTYPE_BF16, 1, TC_SHAPE(d.D), "model.layers.%llu.self_attn.q_norm.weight",
		     L);
		addf(tc, DTYPE_BF16, 1, TC_SHAPE(d.D), "model.layers.%llu.self_attn.k_norm.weight",
		     L);
		if (l < d.dense)
			continue;
		addf(tc, DTYPE_BF16, 3, TC_SHAPE(d.E, d.H, 2 * d.I),
		     "model.layers.%llu.mlp.experts.gate_and_up_projs", L);
		addf(tc, DTYPE_BF16, 3, TC_SHAPE(d.E, d.I, d.H),
		     "model.layers.%llu.mlp.experts.down_projs", L);
	}
}

static uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static float small_float(uint64_t r)
{
	return (float)((int)(r % 2001) - 1000) / 128.0f;
}

void testckpt_fill(const char *name, enum dtype dtype, void *buf, size_t len)
{
	uint64_t state = 0xcbf29ce484222325ULL, r;
	unsigned char *out = buf;
	size_t i;

	for (; *name; name++)
		state = (state ^ (unsigned char)*name) * 0x100000001b3ULL;
	for (i = 0; i < len;) {
		r = splitmix(&state);
		if (dtype == DTYPE_F32 && len - i >= 4) {
			float f = small_float(r);

			memcpy(out + i, &f, 4);
			i += 4;
		} else if (dtype == DTYPE_BF16 && len - i >= 2) {
			float f = small_float(r) + 1.0f;
			uint32_t bits;

			memcpy(&bits, &f, 4);
			out[i] = (unsigned char)(bits >> 16);
			out[i + 1] = (unsigned char)(bits >> 24);
			i += 2;
		} else if (dtype == DTYPE_F16 && len - i >= 2) {
			uint16_t h = (uint16_t)(((r >> 20) & 1) << 15 | (10 + (r >> 8) % 10) << 10 |
						(r & 0x3ff));

			out[i] = (unsigned char)h;
			out[i + 1] = (unsigned char)(h >> 8);
			i += 2;
		} else {
			out[i++] = (unsigned char)r;
		}
	}
}

static void write_all(FILE *f, const void *data, size_t len, const char *path)
{
	if (len && fwrite(data, 1, len, f) != len) {
		perror(path);
		abort();
	}
}

static char *join_path(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		abort();
	return p;
}

/* One shard holding tensors [first, last). */
static void write_shard(const struct testckpt *tc, const char *path, size_t first, size_t last)
{
	json_t *header = json_object(), *meta = json_object();
	uint64_t offset = 0, n;
	unsigned char prefix[8];
	char *text, *data;
	size_t i, len, padded;
	FILE *f;
	int d;

	json_object_set_new(meta, "format", json_string("pt"));
	json_object_set_new(header, "__metadata__", meta);
	for (i = first; i < last; i++) {
		const struct testckpt_tensor *t = &tc->tensors[i];
		json_t *entry = json_object(), *shape = json_array();

		for (d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
		n = testckpt_nbytes(t);
		json_object_set_new(entry, "dtype", json_string(dtype_name(t->dtype)));
		json_object_set_new(entry, "shape", shape);
		json_object_set_new(entry, "data_offsets",
				    json_pack("[II]", (json_int_t)offset,
					      (json_int_t)(offset + n)));
		json_object_set_new(header, t->name, entry);
		offset += n;
	}
	text = must(json_dumps(header, JSON_COMPACT));
	json_decref(header);
	len = strlen(text);
	padded = (len + 7) / 8 * 8;
	for (d = 0; d < 8; d++)
		prefix[d] = (unsigned char)((uint64_t)padded >> (8 * d));
	f = fopen(path, "wb");
	if (!f) {
		perror(path);
		abort();
	}
	write_all(f, prefix, 8, path);
	write_all(f, text, len, path);
	write_all(f, "        ", padded - len, path);
	free(text);
	for (i = first; i < last; i++) {
		n = testckpt_nbytes(&tc->tensors[i]);
		data = must(malloc(n ? n : 1));
		testckpt_fill(tc->tensors[i].name, tc->tensors[i].dtype, data, n);
		write_all(f, data, n, path);
		free(data);
	}
	if (fclose(f) != 0) {
		perror(path);
		abort();
	}
}

void testckpt_write(const struct testckpt *tc, const char *dir)
{
	unsigned nfiles = tc->nfiles ? tc->nfiles : 1, k;
	json_t *index = json_object(), *map = json_object();
	uint64_t total = 0;
	char name[64], *path;
	size_t i;

	if (tc->config) {
		path = join_path(dir, "config.json");
		if (json_dump_file(tc->config, path, JSON_INDENT(2)) != 0)
			abort();
		free(path);
	}
	for (k = 0; k < nfiles; k++) {
		size_t first = tc->ntensors * k / nfiles, last = tc->ntensors * (k + 1) / nfiles;

		if (nfiles == 1)
			snprintf(name, sizeof(name), "model.safetensors");
		else
			snprintf(name, sizeof(name), "model-%05u-of-%05u.safetensors", k + 1,
				 nfiles);
		path = join_path(dir, name);
		write_shard(tc, path, first, last);
		free(path);
		for (i = first; i < last; i++) {
			json_object_set_new(map, tc->tensors[i].name, json_string(name));
			total += testckpt_nbytes(&tc->tensors[i]);
		}
	}
	json_object_set_new(index, "metadata", json_pack("{sI}", "total_size", (json_int_t)total));
	json_object_set_new(index, "weight_map", map);
	if (nfiles > 1 || tc->index) {
		path = join_path(dir, "model.safetensors.index.json");
		if (json_dump_file(index, path, JSON_INDENT(2)) != 0)
			abort();
		free(path);
	}
	json_decref(index);
}
