/* SPDX-License-Identifier: MIT */
/*
 * check_adapter: the BailingMoeV2 adapter against the reference's golden
 * outputs and SPEC.md's rules.  Plans are run by a naive interpreter here
 * (element by element, no blocking) so that every op's offsets, strides
 * and transposes are checked against the golden bytes or against SPEC.md's
 * formulas, independently of the executor.  Each malformed model has a
 * test asserting its exact error code.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/kernels.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "testckpt.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static char *golden(const char *sub)
{
	char *tiny = test_path(test_golden_dir(), "tiny"), *path = test_path(tiny, sub);

	free(tiny);
	return path;
}

static struct ckpt *open_ckpt(const char *location)
{
	struct ckpt *c = NULL;
	struct err e = {0};

	ck_assert_msg(ckpt_open(location, CKPT_REQUIRE_CONFIG, &c, &e) == 0, "%s: %s: %s", location,
		      err_name(e.code), e.msg);
	return c;
}

struct conv {
	enum layout to;
	enum dtype_choice dtype;
	uint32_t ep_size, ep_rank;
};

/* Adapter, layout and plan for c, as conversion_prepare does it (with
 * the round-trip check unless `unchecked`, and the exclude pattern when
 * given); NULL with e set on failure. */
static struct plan *plan_with(const struct ckpt *c, const struct conv *cv, const char *exclude,
			      bool unchecked, struct err *e)
{
	struct adapter_options o = {
		.to = cv->to, .dtype = cv->dtype, .ep_size = cv->ep_size, .ep_rank = cv->ep_rank};
	struct plan_options po = {.exclude = exclude};
	const struct adapter *a = adapter_for(c, e);
	enum layout from;
	struct plan *p;

	if (!a || a->detect(c, &from, e) < 0)
		return NULL;
	p = plan_new(c, from, cv->to);
	if (a->build_plan(c, &o, p, e) < 0 || plan_finish(p, &po, e) < 0 ||
	    (!unchecked && a->check_round_trip(c, &o, p, e) < 0)) {
		plan_free(p);
		return NULL;
	}
	return p;
}

static struct plan *plan_for(const struct ckpt *c, const struct conv *cv, struct err *e)
{
	return plan_with(c, cv, NULL, false, e);
}

static struct plan *must_plan(const struct ckpt *c, const struct conv *cv)
{
	struct err e = {0};
	struct plan *p = plan_for(c, cv, &e);

	ck_assert_msg(p != NULL, "%s: %s", err_name(e.code), e.msg);
	return p;
}

static unsigned char *read_tensor(const struct ckpt *c, uint32_t i)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	unsigned char *buf = xmalloc(t->nbytes);
	struct err e = {0};

	ck_assert_msg(store_read(c->store, c->files[t->file].name, t->offset, buf, t->nbytes, &e) ==
			      0,
		      "%s: %s", t->name, e.msg);
	return buf;
}

static float load_float(const unsigned char *s, enum dtype from)
{
	uint16_t h = (uint16_t)(s[0] | s[1] << 8);
	float f;

	if (from == DTYPE_F32) {
		memcpy(&f, s, 4);
		return f;
	}
	return from == DTYPE_BF16 ? kern_bf16_to_f32(h) : kern_f16_to_f32(h);
}

/* One element from `from` to `to`, through F32 (exact for F16 and BF16). */
static void convert_element(const unsigned char *s, enum dtype from, unsigned char *d,
			    enum dtype to)
{
	float f;
	uint16_t h;

	if (from == to) {
		memcpy(d, s, dtype_size(from));
		return;
	}
	f = load_float(s, from);
	if (to == DTYPE_F32) {
		memcpy(d, &f, 4);
		return;
	}
	h = to == DTYPE_BF16 ? kern_f32_to_bf16(f) : kern_f32_to_f16(f);
	d[0] = (unsigned char)h;
	d[1] = (unsigned char)(h >> 8);
}

/* The output tensor's bytes, by running its ops one element at a time. */
static unsigned char *run_tensor(const struct plan *p, const struct plan_tensor *t)
{
	unsigned char *out = xcalloc(1, t->nbytes), *src;
	uint64_t r, col;
	uint32_t i, j;

	for (i = 0; i < t->npieces; i++) {
		const struct plan_piece *piece = &t->pieces[i];

		for (j = 0; j < piece->nops; j++) {
			const struct plan_op *op = &t->ops[piece->first_op + j];
			uint64_t ss = dtype_size(op->src_dtype), ds = dtype_size(op->dst_dtype);

			src = read_tensor(p->src, op->src);
			for (r = 0; r < op->rows; r++)
				for (col = 0; col < op->cols; col++) {
					uint64_t so =
						op->src_offset + r * op->src_stride + col * ss;
					uint64_t dof = piece->offset + op->dst_offset +
						       (op->transpose ?
								col * op->dst_stride + r * ds :
								r * op->dst_stride + col * ds);

					convert_element(src + so, op->src_dtype, out + dof,
							op->dst_dtype);
				}
			free(src);
		}
	}
	return out;
}

/* The plan's tensors are exactly the expected checkpoint's (names,
 * dtypes, shapes) and running the plan gives its bytes. */
static void expect_plan_equals(const struct plan *p, const char *expected_dir)
{
	struct ckpt *x = open_ckpt(expected_dir);
	size_t i;
	int d;

	ck_assert_uint_eq(p->ntensors, x->ntensors);
	for (i = 0; i < x->ntensors; i++) {
		const struct ckpt_tensor *want = &x->tensors[i];
		long k = plan_find(p, want->name);
		const struct plan_tensor *got;
		unsigned char *a, *b;

		ck_assert_msg(k >= 0, "plan lacks %s", want->name);
		got = &p->tensors[k];
		ck_assert_msg(got->dtype == want->dtype, "%s: %s, expected %s", want->name,
			      dtype_name(got->dtype), dtype_name(want->dtype));
		ck_assert_int_eq(got->ndim, want->ndim);
		for (d = 0; d < want->ndim; d++)
			ck_assert_uint_eq(got->shape[d], want->shape[d]);
		a = run_tensor(p, got);
		b = read_tensor(x, (uint32_t)i);
		ck_assert_msg(memcmp(a, b, want->nbytes) == 0, "%s: bytes differ from %s",
			      want->name, expected_dir);
		free(a);
		free(b);
	}
	ckpt_free(x);
}

/* ---- golden ------------------------------------------------------------- */

START_TEST(test_golden_detect)
{
	static const char *const dirs[] = {"hf", "native", "native-ep2-rank0", "hf-from-native"};
	static const enum layout layouts[] = {LAYOUT_HF, LAYOUT_NATIVE, LAYOUT_NATIVE, LAYOUT_HF};
	struct model_info info;
	struct err e = {0};
	size_t i;

	for (i = 0; i < 4; i++) {
		char *dir = golden(dirs[i]);
		struct ckpt *c = open_ckpt(dir);
		const struct adapter *a = adapter_for(c, &e);
		enum layout l;

		ck_assert_ptr_eq(a, &bailing_moe_v2_adapter);
		ck_assert_str_eq(a->name, "bailing_moe_v2");
		ck_assert_int_eq(a->detect(c, &l, &e), 0);
		ck_assert_int_eq(l, layouts[i]);
		ck_assert_int_eq(a->describe(c, &info, &e), 0);
		ck_assert_str_eq(info.model_type, "bailing_moe");
		ck_assert_str_eq(info.architecture, "BailingMoeV2ForCausalLM");
		ck_assert_int_eq(info.layout, layouts[i]);
		ck_assert_uint_eq(info.layers, 2);
		ck_assert_uint_eq(info.experts, 4);
		ck_assert_int_eq(info.dtype, DTYPE_BF16);
		ck_assert_str_eq(info.dtype_key, "torch_dtype");
		ckpt_free(c);
		free(dir);
	}
}
END_TEST

static void golden_case(const char *from, const char *expected, const struct conv *cv)
{
	char *src = golden(from), *want = golden(expected);
	struct ckpt *c = open_ckpt(src);
	struct plan *p = must_plan(c, cv);

	expect_plan_equals(p, want);
	plan_free(p);
	ckpt_free(c);
	free(src);
	free(want);
}

START_TEST(test_golden_hf_to_native)
{
	struct conv cv = {.to = LAYOUT_NATIVE};

	golden_case("hf", "native", &cv);
	cv.dtype = DTYPE_CHOICE_KEEP;
	golden_case("hf", "native", &cv);
	cv.dtype = DTYPE_CHOICE_BF16;
	golden_case("hf", "native", &cv);
}
END_TEST

START_TEST(test_golden_ep)
{
	struct conv cv = {.to = LAYOUT_NATIVE, .ep_size = 2, .ep_rank = 0};

	golden_case("hf", "native-ep2-rank0", &cv);
	cv.ep_rank = 1;
	golden_case("hf", "native-ep2-rank1", &cv);
}
END_TEST

START_TEST(test_golden_native_to_hf)
{
	struct conv cv = {.to = LAYOUT_HF};

	golden_case("native", "hf-from-native", &cv);
	golden_case("native", "hf", &cv);
}
END_TEST

START_TEST(test_golden_sources)
{
	char *src = golden("hf");
	struct ckpt *c = open_ckpt(src);
	struct conv cv = {.to = LAYOUT_NATIVE};
	struct plan *p = must_plan(c, &cv);
	const struct plan_tensor *t =
		&p->tensors[plan_find(p, "model.layers.1.mlp.experts.gate_and_up_projs")];
	const struct plan_tensor *q =
		&p->tensors[plan_find(p, "model.layers.0.self_attn.k_proj.weight")];

	ck_assert_uint_eq(t->nsources, 8);
	ck_assert_str_eq(c->tensors[t->sources[0]].name,
			 "model.layers.1.mlp.experts.0.gate_proj.weight");
	ck_assert_str_eq(c->tensors[t->sources[1]].name,
			 "model.layers.1.mlp.experts.0.up_proj.weight");
	ck_assert_uint_eq(q->nsources, 1);
	ck_assert_str_eq(c->tensors[q->sources[0]].name,
			 "model.layers.0.attention.query_key_value.weight");
	ck_assert_uint_eq(p->copy_files.len, 1);
	ck_assert_str_eq(p->copy_files.items[0], "config.json");
	plan_free(p);
	ckpt_free(c);
	free(src);
}
END_TEST

/* ---- synthetic checkpoints ----------------------------------------------- */

/* One directory per test case, made and removed by the parent process so
 * that a failing test leaves nothing behind. */
static char *tmpdir;

static void setup(void)
{
	tmpdir = test_mkdtemp();
}

static void teardown(void)
{
	test_rmtree(tmpdir);
	free(tmpdir);
	tmpdir = NULL;
}

static struct testckpt *tiny(enum layout l)
{
	struct testckpt *tc = testckpt_new();

	if (l == LAYOUT_HF)
		testckpt_add_ling_hf(tc);
	else if (l == LAYOUT_NATIVE)
		testckpt_add_ling_native(tc);
	return tc;
}

/* Writes tc into a fresh directory under tmpdir and opens it.  Tests run
 * in forked processes sharing tmpdir, hence the process id in the name. */
static struct ckpt *materialise(struct testckpt *tc)
{
	static int serial;
	char name[48], *dir;
	struct ckpt *c;

	snprintf(name, sizeof(name), "ckpt-%ld-%d", (long)getpid(), serial++);
	dir = test_path(tmpdir, name);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	testckpt_write(tc, dir);
	c = open_ckpt(dir);
	free(dir);
	return c;
}

/* Planning tc fails with `code`, naming `tensor` (when given) in e.tensor
 * and the message, and the message contains `part` (when given). */
static void expect_error(struct testckpt *tc, const struct conv *cv, const char *code,
			 const char *tensor, const char *part)
{
	struct ckpt *c = materialise(tc);
	struct err e = {0};
	struct plan *p = plan_for(c, cv, &e);

	ck_assert_msg(p == NULL, "planning succeeded, expected %s", code);
	ck_assert_msg(e.code == err_code_parse(code), "got %s (%s), expected %s", err_name(e.code),
		      e.msg, code);
	if (tensor) {
		ck_assert_str_eq(e.tensor, tensor);
		ck_assert_msg(strstr(e.msg, tensor), "message does not name %s: %s", tensor, e.msg);
	}
	if (part)
		ck_assert_msg(strstr(e.msg, part), "message lacks '%s': %s", part, e.msg);
	ckpt_free(c);
	testckpt_free(tc);
}

static const struct conv to_native = {.to = LAYOUT_NATIVE};
static const struct conv to_hf = {.to = LAYOUT_HF};

START_TEST(test_qkv_rows)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	const char *name = "model.layers.1.attention.query_key_value.weight";

	testckpt_find(tc, name)->shape[0] = 127;
	expect_error(tc, &to_native, "qkv_shape_mismatch", name, "[127, 64]");
	tc = tiny(LAYOUT_HF);
	testckpt_find(tc, name)->shape[0] = 127;
	expect_error(tc, &to_native, "qkv_shape_mismatch", NULL, "expected 128 rows");
}
END_TEST

START_TEST(test_missing_experts)
{
	struct testckpt *tc = tiny(LAYOUT_HF);

	ck_assert(testckpt_remove(tc, "model.layers.1.mlp.experts.3.down_proj.weight"));
	ck_assert(testckpt_remove(tc, "model.layers.1.mlp.experts.2.up_proj.weight"));
	expect_error(
		tc, &to_native, "missing_experts", "model.layers.1.mlp.experts.2.up_proj.weight",
		"2 of 12 expert weights are missing: model.layers.1.mlp.experts.2.up_proj.weight, "
		"model.layers.1.mlp.experts.3.down_proj.weight");
}
END_TEST

START_TEST(test_missing_experts_many)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	char name[128];
	int x;

	for (x = 0; x < 3; x++) {
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%d.gate_proj.weight", x);
		ck_assert(testckpt_remove(tc, name));
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%d.up_proj.weight", x);
		ck_assert(testckpt_remove(tc, name));
	}
	expect_error(
		tc, &to_native, "missing_experts", "model.layers.1.mlp.experts.0.gate_proj.weight",
		"6 of 12 expert weights are missing: model.layers.1.mlp.experts.0.gate_proj.weight, "
		"model.layers.1.mlp.experts.0.up_proj.weight, model.layers.1.mlp.experts.1.gate_proj.weight, "
		"model.layers.1.mlp.experts.1.up_proj.weight and 2 more");
}
END_TEST

/* A num_experts no checkpoint of this size can hold is refused before
 * anything is sized by it, with or without expert parallelism: as
 * missing_experts when the grouped tensors could exist, as config_invalid
 * when no safetensors tensor could hold them. */
START_TEST(test_num_experts_beyond_checkpoint)
{
	static const char first[] = "model.layers.1.mlp.experts.0.down_proj.weight";
	struct testckpt *tc = tiny(LAYOUT_HF);

	json_object_set_new(tc->config, "num_experts", json_integer(4000000000));
	expect_error(tc, &to_native, "missing_experts", first,
		     "1 MoE layers x 4000000000 experts x 3 projections (num_experts 4000000000)");
	/* 3 x num_experts wraps around to 2 in 64 bits: the grouped tensors'
	 * size is refused before any count of expert weights is made. */
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "num_experts", json_integer(6148914691236517206));
	expect_error(tc, &to_native, "config_invalid", NULL, "num_experts 6148914691236517206");
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "num_experts", json_integer(INT64_MAX));
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 65536, .ep_rank = 65535},
		     "config_invalid", NULL, "num_experts 9223372036854775807");
}
END_TEST

START_TEST(test_expert_shapes)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	const char *name = "model.layers.1.mlp.experts.2.gate_proj.weight";

	testckpt_find(tc, name)->shape[0] = 16;
	expect_error(tc, &to_native, "expert_shape_mismatch", name, "[16, 64]");

	tc = tiny(LAYOUT_HF);
	name = "model.layers.1.mlp.experts.1.down_proj.weight";
	testckpt_find(tc, name)->shape[0] = 32;
	testckpt_find(tc, name)->shape[1] = 64;
	expect_error(tc, &to_native, "expert_shape_mismatch", name, NULL);

	/* Keeping the dtype needs one dtype across the layer's experts. */
	tc = tiny(LAYOUT_HF);
	name = "model.layers.1.mlp.experts.3.up_proj.weight";
	testckpt_find(tc, name)->dtype = DTYPE_F16;
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_KEEP},
		     "expert_shape_mismatch", name, "F16");
}
END_TEST

START_TEST(test_expert_out_of_range)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	const char *name = "model.layers.1.mlp.experts.4.gate_proj.weight";

	testckpt_add(tc, name, DTYPE_BF16, 2, TC_SHAPE(32, 64));
	expect_error(tc, &to_native, "expert_out_of_range", name,
		     "expert 4 is not below num_experts 4");

	/* Also when the rank would not stack it. */
	tc = tiny(LAYOUT_HF);
	testckpt_add(tc, "model.layers.1.mlp.experts.9.down_proj.weight", DTYPE_BF16, 2,
		     TC_SHAPE(64, 32));
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 2}, "expert_out_of_range",
		     "model.layers.1.mlp.experts.9.down_proj.weight", NULL);
}
END_TEST

START_TEST(test_native_grouped_shapes)
{
	struct testckpt *tc = tiny(LAYOUT_NATIVE);
	const char *gu = "model.layers.1.mlp.experts.gate_and_up_projs";
	const char *down = "model.layers.1.mlp.experts.down_projs";

	testckpt_find(tc, gu)->shape[0] = 3;
	expect_error(tc, &to_hf, "grouped_shape_mismatch", gu, "[3, 64, 64]");

	tc = tiny(LAYOUT_NATIVE);
	testckpt_find(tc, down)->shape[1] = 64;
	testckpt_find(tc, down)->shape[2] = 32;
	expect_error(tc, &to_hf, "grouped_shape_mismatch", down, "expected [4, 32, 64]");

	tc = tiny(LAYOUT_NATIVE);
	testckpt_find(tc, gu)->shape[2] = 32;
	expect_error(tc, &to_hf, "grouped_shape_mismatch", gu, NULL);
}
END_TEST

START_TEST(test_quantized)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	const char *fp8 = "model.layers.0.mlp.down_proj.weight";
	const char *scale = "model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv";

	testckpt_find(tc, fp8)->dtype = DTYPE_F8_E4M3;
	expect_error(tc, &to_native, "quantized_input", fp8, "F8_E4M3");

	tc = tiny(LAYOUT_NATIVE);
	testckpt_find(tc, fp8)->dtype = DTYPE_F8_E5M2;
	expect_error(tc, &to_hf, "quantized_input", fp8, NULL);

	tc = tiny(LAYOUT_HF);
	testckpt_add(tc, scale, DTYPE_F32, 2, TC_SHAPE(1, 1));
	expect_error(tc, &to_native, "quantized_input", scale, "_scale_inv");

	tc = tiny(LAYOUT_NATIVE);
	testckpt_add(tc, "model.layers.1.self_attn.q_proj.weight_scale_inv", DTYPE_F32, 1,
		     TC_SHAPE(1));
	expect_error(tc, &to_hf, "quantized_input",
		     "model.layers.1.self_attn.q_proj.weight_scale_inv", NULL);
}
END_TEST

/* F4, F6_* and C64: non-expert tensors pass through (sub-byte ones as U8
 * byte copies of their whole bytes); routed experts, grouped experts and
 * --dtype casts of them are refused with quantized_input. */
START_TEST(test_copy_only_dtypes)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	const char *norm = "model.norm.weight", *emb = "model.word_embeddings.weight";
	const char *expert = "model.layers.1.mlp.experts.2.down_proj.weight";
	const char *grouped = "model.layers.1.mlp.experts.down_projs";
	struct ckpt *c;
	struct plan *p;
	const struct plan_tensor *t;

	testckpt_find(tc, norm)->dtype = DTYPE_F4;
	testckpt_find(tc, emb)->dtype = DTYPE_C64;
	c = materialise(tc);
	p = must_plan(c, &to_native);
	ck_assert_int_ge(plan_find(p, norm), 0);
	t = &p->tensors[plan_find(p, norm)];
	ck_assert_int_eq(t->dtype, DTYPE_F4);
	ck_assert_uint_eq(t->nbytes, t->shape[0] / 2);
	ck_assert_int_eq(t->ops[0].src_dtype, DTYPE_U8);
	ck_assert(!t->ops[0].transpose);
	ck_assert_int_ge(plan_find(p, "model.embed_tokens.weight"), 0);
	t = &p->tensors[plan_find(p, "model.embed_tokens.weight")];
	ck_assert_int_eq(t->dtype, DTYPE_C64);
	ck_assert_int_eq(t->ops[0].src_dtype, DTYPE_C64);
	ck_assert_int_eq(t->ops[0].dst_dtype, DTYPE_C64);
	plan_free(p);
	ckpt_free(c);
	testckpt_free(tc);

	tc = tiny(LAYOUT_HF);
	testckpt_find(tc, expert)->dtype = DTYPE_F6_E3M2;
	expect_error(tc, &to_native, "quantized_input", expert, "dtype F6_E3M2");
	tc = tiny(LAYOUT_HF);
	testckpt_find(tc, expert)->dtype = DTYPE_C64;
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_BF16},
		     "quantized_input", expert, "dtype C64");
	tc = tiny(LAYOUT_NATIVE);
	testckpt_find(tc, grouped)->dtype = DTYPE_F4;
	expect_error(tc, &to_hf, "quantized_input", grouped, "dtype F4");
}
END_TEST

START_TEST(test_qkv_mismatch)
{
	struct testckpt *tc = tiny(LAYOUT_NATIVE);
	const char *k = "model.layers.1.self_attn.k_proj.weight";

	testckpt_find(tc, k)->dtype = DTYPE_F32;
	expect_error(tc, &to_hf, "qkv_mismatch", k, "F32");

	tc = tiny(LAYOUT_NATIVE);
	testckpt_find(tc, "model.layers.0.self_attn.v_proj.weight")->shape[1] = 48;
	expect_error(tc, &to_hf, "qkv_mismatch", "model.layers.0.self_attn.v_proj.weight",
		     "[32, 48]");
}
END_TEST

static void expect_unsupported(json_t *architectures, const char *message)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct ckpt *c;
	struct err e = {0};

	json_object_set_new(tc->config, "architectures", architectures);
	c = materialise(tc);
	ck_assert_ptr_null(adapter_for(c, &e));
	ck_assert_str_eq(err_name(e.code), "unsupported_model");
	ck_assert_str_eq(e.msg, message);
	ckpt_free(c);
	testckpt_free(tc);
}

START_TEST(test_unsupported_models)
{
	expect_unsupported(json_pack("[s]", "BailingMoeForCausalLM"),
			   "config.json architectures [\"BailingMoeForCausalLM\"]: Ling 1.x uses a "
			   "different layout and is not supported");
	expect_unsupported(
		json_pack("[s]", "LlamaForCausalLM"),
		"config.json architectures [\"LlamaForCausalLM\"]: not a model family ckptconv "
		"converts (Ling 2.0, BailingMoeV2ForCausalLM)");
	expect_unsupported(json_null(),
			   "config.json names no architectures; ckptconv converts Ling 2.0 "
			   "(BailingMoeV2ForCausalLM)");
}
END_TEST

START_TEST(test_missing_config_key)
{
	static const char *const keys[] = {"hidden_size",	    "num_attention_heads",
					   "num_key_value_heads",   "intermediate_size",
					   "moe_intermediate_size", "num_experts",
					   "num_hidden_layers",	    "first_k_dense_replace"};
	struct model_info info;
	struct testckpt *tc;
	struct ckpt *c;
	struct err e;
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		tc = tiny(LAYOUT_HF);
		json_object_del(tc->config, keys[i]);
		c = materialise(tc);
		memset(&e, 0, sizeof(e));
		ck_assert_int_eq(bailing_moe_v2_adapter.describe(c, &info, &e), -1);
		ck_assert_str_eq(err_name(e.code), "missing_config_key");
		ck_assert_msg(strstr(e.msg, keys[i]), "message does not name %s: %s", keys[i],
			      e.msg);
		ckpt_free(c);
		expect_error(tc, &to_native, "missing_config_key", NULL, keys[i]);
	}
}
END_TEST

START_TEST(test_layout_detection)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct ckpt *c;
	struct err e = {0};
	enum layout l;

	testckpt_add(tc, "model.layers.0.self_attn.q_proj.weight", DTYPE_BF16, 2, TC_SHAPE(64, 64));
	c = materialise(tc);
	ck_assert_int_eq(bailing_moe_v2_adapter.detect(c, &l, &e), -1);
	ck_assert_str_eq(err_name(e.code), "ambiguous_layout");
	ck_assert_ptr_nonnull(strstr(e.msg, "model.layers.0.self_attn.q_proj.weight"));
	ckpt_free(c);
	testckpt_free(tc);

	tc = tiny(LAYOUT_UNKNOWN);
	testckpt_add(tc, "model.norm.weight", DTYPE_BF16, 1, TC_SHAPE(64));
	testckpt_add(tc, "model.layers.0.mlp.gate_proj.weight", DTYPE_BF16, 2, TC_SHAPE(128, 64));
	c = materialise(tc);
	memset(&e, 0, sizeof(e));
	ck_assert_int_eq(bailing_moe_v2_adapter.detect(c, &l, &e), -1);
	ck_assert_str_eq(err_name(e.code), "unknown_layout");
	ckpt_free(c);
	testckpt_free(tc);

	/* One numbered expert is enough to say HF; a router bias, native. */
	tc = tiny(LAYOUT_UNKNOWN);
	testckpt_add(tc, "model.layers.1.mlp.experts.0.up_proj.weight", DTYPE_BF16, 2,
		     TC_SHAPE(32, 64));
	c = materialise(tc);
	ck_assert_int_eq(bailing_moe_v2_adapter.detect(c, &l, &e), 0);
	ck_assert_int_eq(l, LAYOUT_HF);
	ckpt_free(c);
	testckpt_free(tc);
	tc = tiny(LAYOUT_UNKNOWN);
	testckpt_add(tc, "model.layers.1.mlp.gate.e_score_correction_bias", DTYPE_F32, 1,
		     TC_SHAPE(4));
	c = materialise(tc);
	ck_assert_int_eq(bailing_moe_v2_adapter.detect(c, &l, &e), 0);
	ck_assert_int_eq(l, LAYOUT_NATIVE);
	ckpt_free(c);
	testckpt_free(tc);
}
END_TEST

START_TEST(test_head_dim)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct ckpt *c;
	struct plan *p;

	/* Absent: 128, so 4 + 2 x 2 heads need 1024 rows. */
	json_object_del(tc->config, "head_dim");
	expect_error(tc, &to_native, "qkv_shape_mismatch", NULL, "expected 1024 rows");

	/* null or 0: hidden_size / heads = 16. */
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "head_dim", json_null());
	c = materialise(tc);
	p = must_plan(c, &to_native);
	ck_assert_uint_eq(
		p->tensors[plan_find(p, "model.layers.0.self_attn.q_proj.weight")].shape[0], 64);
	plan_free(p);
	ckpt_free(c);
	json_object_set_new(tc->config, "head_dim", json_integer(0));
	c = materialise(tc);
	p = must_plan(c, &to_native);
	ck_assert_uint_eq(
		p->tensors[plan_find(p, "model.layers.0.self_attn.v_proj.weight")].shape[0], 32);
	plan_free(p);
	ckpt_free(c);
	testckpt_free(tc);
}
END_TEST

/* Source tensor `name`'s bytes. */
static unsigned char *source_bytes(const struct ckpt *c, const char *name, enum dtype *dtype)
{
	long i = ckpt_find(c, name);

	ck_assert_msg(i >= 0, "no source %s", name);
	*dtype = c->tensors[i].dtype;
	return read_tensor(c, (uint32_t)i);
}

/* Element `index` of a source tensor cast to `to` equals the output's
 * element at `out`. */
static void expect_element(const unsigned char *src, enum dtype from, uint64_t index,
			   const unsigned char *out, enum dtype to)
{
	unsigned char f32[4], want[4];
	float f = load_float(src + index * dtype_size(from), from);

	memcpy(f32, &f, 4);
	convert_element(f32, DTYPE_F32, want, to);
	/* Not ck_assert: Check records every assertion it passes, and this
	 * runs for every element. */
	if (memcmp(out, want, dtype_size(to)) != 0)
		ck_abort_msg("element %llu of the source differs in the output",
			     (unsigned long long)index);
}

/* The grouped tensors of layer 1 hold SPEC.md's values for experts
 * [start, start + n), cast to `dtype`. */
static void expect_grouped(const struct ckpt *c, const struct plan *p, enum dtype dtype,
			   uint64_t start, uint64_t n)
{
	const uint64_t H = 64, I = 32;
	long gi = plan_find(p, "model.layers.1.mlp.experts.gate_and_up_projs");
	long di = plan_find(p, "model.layers.1.mlp.experts.down_projs");
	unsigned char *gu, *down, *gate_x, *up_x, *down_x;
	enum dtype gate_t, up_t, down_t;
	char name[128];
	uint64_t x, h, i, es = dtype_size(dtype);

	ck_assert(gi >= 0 && di >= 0);
	ck_assert_int_eq(p->tensors[gi].dtype, dtype);
	ck_assert_int_eq(p->tensors[di].dtype, dtype);
	ck_assert_uint_eq(p->tensors[gi].shape[0], n);
	ck_assert_uint_eq(p->tensors[di].shape[0], n);
	gu = run_tensor(p, &p->tensors[gi]);
	down = run_tensor(p, &p->tensors[di]);
	for (x = 0; x < n; x++) {
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%llu.gate_proj.weight",
			 (unsigned long long)(start + x));
		gate_x = source_bytes(c, name, &gate_t);
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%llu.up_proj.weight",
			 (unsigned long long)(start + x));
		up_x = source_bytes(c, name, &up_t);
		snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%llu.down_proj.weight",
			 (unsigned long long)(start + x));
		down_x = source_bytes(c, name, &down_t);
		for (h = 0; h < H; h++)
			for (i = 0; i < I; i++) {
				expect_element(gate_x, gate_t, i * H + h,
					       gu + ((x * H + h) * 2 * I + i) * es, dtype);
				expect_element(up_x, up_t, i * H + h,
					       gu + ((x * H + h) * 2 * I + I + i) * es, dtype);
				expect_element(down_x, down_t, h * I + i,
					       down + ((x * I + i) * H + h) * es, dtype);
			}
		free(gate_x);
		free(up_x);
		free(down_x);
	}
	free(gu);
	free(down);
}

START_TEST(test_target_dtypes)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct ckpt *c;
	struct plan *p;
	int64_t idx;

	/* Experts in F32; torch_dtype float32 keeps them, bf16 and f16
	 * round them; the router stays F32 whatever the choice. */
	for (idx = 0; idx < (int64_t)tc->ntensors; idx++)
		if (strstr(tc->tensors[idx].name, ".mlp.experts."))
			tc->tensors[idx].dtype = DTYPE_F32;
	json_object_set_new(tc->config, "torch_dtype", json_string("float32"));
	c = materialise(tc);
	p = must_plan(c, &to_native);
	expect_grouped(c, p, DTYPE_F32, 0, 4);
	ck_assert_int_eq(p->tensors[plan_find(p, "model.layers.1.mlp.gate.weight")].dtype,
			 DTYPE_F32);
	ck_assert_int_eq(p->tensors[plan_find(p, "model.layers.1.self_attn.q_proj.weight")].dtype,
			 DTYPE_BF16);
	plan_free(p);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_BF16});
	expect_grouped(c, p, DTYPE_BF16, 0, 4);
	plan_free(p);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_F16});
	expect_grouped(c, p, DTYPE_F16, 0, 4);
	ck_assert_int_eq(p->tensors[plan_find(p, "model.layers.1.mlp.gate.weight")].dtype,
			 DTYPE_F32);
	plan_free(p);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_KEEP});
	expect_grouped(c, p, DTYPE_F32, 0, 4);
	plan_free(p);
	ckpt_free(c);

	/* No torch_dtype: bfloat16. */
	json_object_del(tc->config, "torch_dtype");
	c = materialise(tc);
	p = must_plan(c, &to_native);
	expect_grouped(c, p, DTYPE_BF16, 0, 4);
	plan_free(p);
	ckpt_free(c);

	json_object_set_new(tc->config, "torch_dtype", json_string("float64"));
	expect_error(tc, &to_native, "config_invalid", NULL, "float64");
}
END_TEST

START_TEST(test_expert_parallel)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct ckpt *c = materialise(tc);
	struct plan *p;
	struct err e = {0};
	uint32_t r;

	/* 4 experts over 3 ranks: 2, 1, 1. */
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 3, .ep_rank = 0});
	expect_grouped(c, p, DTYPE_BF16, 0, 2);
	plan_free(p);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 3, .ep_rank = 2});
	expect_grouped(c, p, DTYPE_BF16, 3, 1);
	plan_free(p);

	/* More ranks than experts: ranks 4..7 have none and no grouped tensors. */
	for (r = 0; r < 8; r++) {
		p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 8, .ep_rank = r});
		if (r < 4) {
			expect_grouped(c, p, DTYPE_BF16, r, 1);
		} else {
			ck_assert_int_eq(
				plan_find(p, "model.layers.1.mlp.experts.gate_and_up_projs"), -1);
			ck_assert_int_eq(plan_find(p, "model.layers.1.mlp.experts.down_projs"), -1);
			ck_assert_int_ge(plan_find(p, "model.layers.1.mlp.gate.weight"), 0);
		}
		plan_free(p);
	}
	ck_assert_ptr_null(
		plan_for(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 2, .ep_rank = 2}, &e));
	ck_assert_str_eq(err_name(e.code), "invalid_option");
	ckpt_free(c);

	/* Only the rank's experts need to be present. */
	ck_assert(testckpt_remove(tc, "model.layers.1.mlp.experts.3.gate_proj.weight"));
	c = materialise(tc);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 2, .ep_rank = 0});
	expect_grouped(c, p, DTYPE_BF16, 0, 2);
	plan_free(p);
	ckpt_free(c);
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 2, .ep_rank = 1},
		     "missing_experts", "model.layers.1.mlp.experts.3.gate_proj.weight", "1 of 6");
}
END_TEST

START_TEST(test_prefixes_kept)
{
	struct testckpt *tc = testckpt_new();
	struct ckpt *c;
	struct plan *p;

	testckpt_add(tc, "model.language_model.layers.1.mlp.experts.gate_and_up_projs", DTYPE_BF16,
		     3, TC_SHAPE(4, 64, 64));
	testckpt_add(tc, "model.language_model.layers.1.mlp.experts.down_projs", DTYPE_BF16, 3,
		     TC_SHAPE(4, 32, 64));
	testckpt_add(tc, "model.language_model.layers.1.self_attn.q_proj.weight", DTYPE_BF16, 2,
		     TC_SHAPE(64, 64));
	testckpt_add(tc, "model.language_model.layers.1.self_attn.k_proj.weight", DTYPE_BF16, 2,
		     TC_SHAPE(32, 64));
	testckpt_add(tc, "model.language_model.layers.1.self_attn.v_proj.weight", DTYPE_BF16, 2,
		     TC_SHAPE(32, 64));
	c = materialise(tc);
	p = must_plan(c, &to_hf);
	ck_assert_uint_eq(p->ntensors, 13);
	ck_assert_int_ge(plan_find(p, "model.language_model.layers.1.mlp.experts.3.up_proj.weight"),
			 0);
	ck_assert_int_ge(
		plan_find(p, "model.language_model.layers.1.mlp.experts.0.down_proj.weight"), 0);
	ck_assert_int_ge(
		plan_find(p, "model.language_model.layers.1.attention.query_key_value.weight"), 0);
	plan_free(p);
	ckpt_free(c);
	testckpt_free(tc);

	/* And back: the HF expert prefixes the reference knows. */
	tc = tiny(LAYOUT_HF);
	for (size_t i = 0; i < tc->ntensors; i++)
		if (strncmp(tc->tensors[i].name, "model.layers.", 13) == 0) {
			char *renamed;

			ck_assert_int_ge(asprintf(&renamed, "language_model.%s",
						  tc->tensors[i].name + 6),
					 0);
			free(tc->tensors[i].name);
			tc->tensors[i].name = renamed;
		}
	c = materialise(tc);
	p = must_plan(c, &to_native);
	ck_assert_int_ge(plan_find(p, "language_model.layers.1.mlp.experts.gate_and_up_projs"), 0);
	ck_assert_int_ge(plan_find(p, "language_model.layers.1.self_attn.k_proj.weight"), 0);
	ck_assert_int_ge(plan_find(p, "language_model.layers.0.self_attn.o_proj.weight"), 0);
	ck_assert_int_ge(plan_find(p, "language_model.layers.1.mlp.gate.e_score_correction_bias"),
			 0);
	plan_free(p);
	ckpt_free(c);
	testckpt_free(tc);
}
END_TEST

START_TEST(test_partial_qkv)
{
	struct testckpt *tc = tiny(LAYOUT_NATIVE);
	struct ckpt *c;
	struct plan *p;

	ck_assert(testckpt_remove(tc, "model.layers.1.self_attn.v_proj.weight"));
	c = materialise(tc);
	p = must_plan(c, &to_hf);
	ck_assert_int_ge(plan_find(p, "model.layers.0.attention.query_key_value.weight"), 0);
	ck_assert_int_eq(plan_find(p, "model.layers.1.attention.query_key_value.weight"), -1);
	ck_assert_int_ge(plan_find(p, "model.layers.1.attention.q_proj.weight"), 0);
	ck_assert_int_ge(plan_find(p, "model.layers.1.attention.k_proj.weight"), 0);
	ck_assert_int_eq(plan_find(p, "model.layers.1.attention.v_proj.weight"), -1);
	plan_free(p);
	ckpt_free(c);
	testckpt_free(tc);
}
END_TEST

START_TEST(test_renames)
{
	struct testckpt *tc = tiny(LAYOUT_NATIVE);
	struct err e = {0};
	struct ckpt *c;
	struct plan *p;

	/* Every occurrence of the first matching rule's substring; later
	 * rules are not applied. */
	testckpt_add(tc, "x.self_attn.o_proj.y.self_attn.o_proj.weight", DTYPE_BF16, 1,
		     TC_SHAPE(2));
	testckpt_add(tc, "model.embed_tokens.self_attn.q_norm.bias", DTYPE_BF16, 1, TC_SHAPE(2));
	testckpt_add(tc, "model.layers.1.mlp.experts.empty", DTYPE_BF16, 2, TC_SHAPE(0, 3));
	c = materialise(tc);
	p = plan_with(c, &to_hf, NULL, true, &e);
	ck_assert_msg(p != NULL, "%s", e.msg);
	ck_assert_int_ge(plan_find(p, "x.attention.dense.y.attention.dense.weight"), 0);
	ck_assert_int_ge(plan_find(p, "model.word_embeddings.self_attn.q_norm.bias"), 0);
	ck_assert_int_ge(plan_find(p, "model.layers.1.mlp.gate.expert_bias"), 0);
	ck_assert_int_ge(plan_find(p, "model.layers.1.attention.key_layernorm.weight"), 0);
	ck_assert_uint_eq(p->tensors[plan_find(p, "model.layers.1.mlp.experts.empty")].nbytes, 0);
	plan_free(p);
	ckpt_free(c);
	/* The second rule is not applied, so ".self_attn." stays in an HF
	 * name: that output would read as both layouts, and is refused. */
	expect_error(tc, &to_hf, "unsupported_tensor", "model.embed_tokens.self_attn.q_norm.bias",
		     "(as model.word_embeddings.self_attn.q_norm.bias)");
}
END_TEST

START_TEST(test_options_to_hf)
{
	struct testckpt *tc = tiny(LAYOUT_NATIVE);

	expect_error(tc, &(struct conv){.to = LAYOUT_HF, .dtype = DTYPE_CHOICE_F32},
		     "invalid_option", NULL, "f32");
	tc = tiny(LAYOUT_NATIVE);
	expect_error(tc, &(struct conv){.to = LAYOUT_HF, .ep_size = 2}, "invalid_option", NULL,
		     NULL);
}
END_TEST

START_TEST(test_dtype_choice_names)
{
	static const char *const names[] = {"auto", "keep", "bf16", "f16", "f32"};
	int i;

	for (i = 0; i < 5; i++) {
		ck_assert_int_eq(dtype_choice_parse(names[i]), i);
		ck_assert_str_eq(dtype_choice_name((enum dtype_choice)i), names[i]);
	}
	ck_assert_int_eq(dtype_choice_parse("fp16"), -1);
	ck_assert_int_eq(dtype_choice_parse(NULL), -1);
	ck_assert_str_eq(layout_name(LAYOUT_HF), "hf");
	ck_assert_str_eq(layout_name(LAYOUT_NATIVE), "native");
}
END_TEST

/* ---- config.json as transformers writes it -------------------------------- */

static void retype(struct testckpt *tc, enum dtype from, enum dtype to)
{
	size_t i;

	for (i = 0; i < tc->ntensors; i++)
		if (tc->tensors[i].dtype == from)
			tc->tensors[i].dtype = to;
}

/* describe() and the plan for auto agree on the model's dtype and key. */
static void expect_model_dtype(struct testckpt *tc, enum dtype dtype, const char *key)
{
	struct ckpt *c = materialise(tc);
	struct model_info info;
	struct err e = {0};
	struct plan *p;

	ck_assert_int_eq(bailing_moe_v2_adapter.describe(c, &info, &e), 0);
	ck_assert_int_eq(info.dtype, dtype);
	if (key)
		ck_assert_str_eq(info.dtype_key, key);
	else
		ck_assert_ptr_null(info.dtype_key);
	p = must_plan(c, &to_native);
	expect_grouped(c, p, dtype, 0, 4);
	plan_free(p);
	ckpt_free(c);
}

START_TEST(test_model_dtype)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct model_info info;
	struct err e = {0};
	struct ckpt *c;
	struct plan *p;

	/* A float16 model saved by transformers >= 4.56: only "dtype".  The
	 * experts stay F16, so the round trip is lossless. */
	retype(tc, DTYPE_BF16, DTYPE_F16);
	json_object_del(tc->config, "torch_dtype");
	json_object_set_new(tc->config, "dtype", json_string("float16"));
	expect_model_dtype(tc, DTYPE_F16, "dtype");
	/* Both keys: transformers uses dtype. */
	json_object_set_new(tc->config, "torch_dtype", json_string("bfloat16"));
	expect_model_dtype(tc, DTYPE_F16, "dtype");
	/* dtype null counts as absent. */
	json_object_set_new(tc->config, "dtype", json_null());
	json_object_set_new(tc->config, "torch_dtype", json_string("float32"));
	expect_model_dtype(tc, DTYPE_F32, "torch_dtype");
	/* Neither: bfloat16, as NeMo builds the adapter. */
	json_object_del(tc->config, "dtype");
	json_object_del(tc->config, "torch_dtype");
	expect_model_dtype(tc, DTYPE_BF16, NULL);

	/* A dtype that is not one of the three: auto is refused naming the
	 * key; describe reports it without failing; a named dtype works. */
	json_object_set_new(tc->config, "torch_dtype", json_string("bfloat16"));
	json_object_set_new(tc->config, "dtype", json_string("int8"));
	c = materialise(tc);
	ck_assert_int_eq(bailing_moe_v2_adapter.describe(c, &info, &e), 0);
	ck_assert_int_eq(info.dtype, DTYPE_INVALID);
	ck_assert_str_eq(info.dtype_key, "dtype");
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_F16});
	plan_free(p);
	ckpt_free(c);
	expect_error(tc, &to_native, "config_invalid", NULL, "config.json: dtype \"int8\" is not");
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "dtype", json_integer(16));
	expect_error(tc, &to_native, "config_invalid", NULL, "dtype (not a string)");
}
END_TEST

/* A config.json value that makes some tensor larger than a file can hold
 * is config_invalid naming the key, from describe (inspect) and from
 * planning either way, never a wrapped size or an internal error. */
static void expect_config_invalid(enum layout from, const char *key, json_t *value,
				  const char *part)
{
	struct testckpt *tc = tiny(from);
	struct model_info info;
	struct err e = {0};
	struct ckpt *c;

	json_object_set_new(tc->config, key, value);
	c = materialise(tc);
	ck_assert_int_eq(bailing_moe_v2_adapter.describe(c, &info, &e), -1);
	ck_assert_str_eq(err_name(e.code), "config_invalid");
	ck_assert_msg(strstr(e.msg, part), "message lacks '%s': %s", part, e.msg);
	ckpt_free(c);
	expect_error(tc, from == LAYOUT_HF ? &to_native : &to_hf, "config_invalid", NULL, part);
}

START_TEST(test_config_overflow)
{
	/* (4 + 2 x 2) x 2^62 wraps to 0 in 64 bits; x 2^55 x 64 columns to 2^64. */
	expect_config_invalid(LAYOUT_HF, "head_dim", json_integer(1LL << 62),
			      "head_dim 4611686018427387904, hidden_size 64] would have more");
	expect_config_invalid(LAYOUT_NATIVE, "head_dim", json_integer(1LL << 55),
			      "head_dim 36028797018963968");
	expect_config_invalid(LAYOUT_HF, "num_key_value_heads", json_integer(INT64_MAX),
			      "num_key_value_heads 9223372036854775807");
	expect_config_invalid(LAYOUT_HF, "num_attention_heads", json_integer(1LL << 62),
			      "num_attention_heads 4611686018427387904");
	expect_config_invalid(LAYOUT_NATIVE, "hidden_size", json_integer(1LL << 58),
			      "hidden_size 288230376151711744");
	expect_config_invalid(LAYOUT_HF, "intermediate_size", json_integer(1LL << 60),
			      "[intermediate_size 1152921504606846976, hidden_size 64]");
	expect_config_invalid(LAYOUT_HF, "moe_intermediate_size", json_integer(INT64_MAX),
			      "2 x moe_intermediate_size 9223372036854775807");
	/* The bound: E x H x 2I = 2^48 x 64 x 64 = 2^60 elements is one too many. */
	expect_config_invalid(LAYOUT_HF, "num_experts", json_integer(1LL << 48),
			      "[num_experts 281474976710656, hidden_size 64, 2 x "
			      "moe_intermediate_size 32] would have more than the "
			      "1152921504606846975 elements");
}
END_TEST

START_TEST(test_config_many_experts)
{
	struct testckpt *tc;

	/* A null head_dim means hidden_size / heads, which must not be 0. */
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "head_dim", json_null());
	json_object_set_new(tc->config, "num_attention_heads", json_integer(65));
	expect_error(tc, &to_native, "config_invalid", NULL,
		     "head_dim is null, which means hidden_size 64 / num_attention_heads 65 = 0");

	/* One under the bound is a valid config.json, and the checkpoint
	 * cannot hold that many experts: said, without reserving room for
	 * 2^48 of them. */
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "num_experts", json_integer((1LL << 48) - 1));
	expect_error(tc, &to_native, "missing_experts",
		     "model.layers.1.mlp.experts.0.down_proj.weight",
		     "x 281474976710655 experts x 3 projections (num_experts 281474976710655) "
		     "are more expert weights than the checkpoint's 35 tensors");
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "num_experts", json_integer(1LL << 40));
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 4, .ep_rank = 3},
		     "missing_experts", "model.layers.1.mlp.experts.0.down_proj.weight",
		     "x 274877906944 experts x 3 projections (num_experts 1099511627776)");
	tc = tiny(LAYOUT_NATIVE);
	json_object_set_new(tc->config, "num_experts", json_integer(1LL << 40));
	expect_error(tc, &to_hf, "grouped_shape_mismatch", "model.layers.1.mlp.experts.down_projs",
		     "expected [1099511627776, 32, 64]");
}
END_TEST

/* ---- output that converts back ------------------------------------------- */

static void rename_tensor(struct testckpt *tc, const char *from, const char *to)
{
	struct testckpt_tensor *t = testckpt_find(tc, from);

	ck_assert_msg(t != NULL, "no tensor %s", from);
	free(t->name);
	t->name = xstrdup(to);
}

START_TEST(test_round_trip_refused)
{
	struct testckpt *tc;
	struct ckpt *c;
	struct plan *p;
	struct err e = {0};
	char from[128], to[128];
	int x, k;

	/* Per-expert biases: the native layout groups only the weights. */
	tc = tiny(LAYOUT_HF);
	testckpt_add(tc, "model.layers.1.mlp.experts.2.up_proj.bias", DTYPE_BF16, 1, TC_SHAPE(32));
	expect_error(tc, &to_native, "unsupported_tensor",
		     "model.layers.1.mlp.experts.2.up_proj.bias",
		     "the native layout has no place for 1 tensor: "
		     "model.layers.1.mlp.experts.2.up_proj.bias; with these HF-layout names left "
		     "as they are, the output could not be converted back (routed experts are "
		     "grouped from [model.][language_model.]layers.L.mlp.experts.E."
		     "{gate,up,down}_proj.weight only)");

	/* INT8 experts with their scales, dtype kept: the scales have no
	 * place; without them the experts convert (and come back). */
	tc = tiny(LAYOUT_HF);
	for (x = 0; x < 4; x++)
		for (k = 0; k < 3; k++) {
			snprintf(from, sizeof(from), "model.layers.1.mlp.experts.%d.%s.weight", x,
				 k == 0 ? "gate_proj" :
				 k == 1 ? "up_proj" :
					  "down_proj");
			testckpt_find(tc, from)->dtype = DTYPE_I8;
		}
	c = materialise(tc);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_KEEP});
	ck_assert_int_eq(p->tensors[plan_find(p, "model.layers.1.mlp.experts.down_projs")].dtype,
			 DTYPE_I8);
	plan_free(p);
	ckpt_free(c);
	for (x = 0; x < 4; x++)
		for (k = 0; k < 3; k++) {
			snprintf(from, sizeof(from),
				 "model.layers.1.mlp.experts.%d.%s.weight_scale", x,
				 k == 0 ? "gate_proj" :
				 k == 1 ? "up_proj" :
					  "down_proj");
			testckpt_add(tc, from, DTYPE_F32, 2, TC_SHAPE(k == 2 ? 64 : 32, 1));
		}
	c = materialise(tc);
	ck_assert_ptr_null(
		plan_for(c, &(struct conv){.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_KEEP}, &e));
	ck_assert_str_eq(err_name(e.code), "unsupported_tensor");
	ck_assert_str_eq(e.tensor, "model.layers.1.mlp.experts.0.down_proj.weight_scale");
	ck_assert_msg(strstr(e.msg,
			     "no place for 12 tensors: "
			     "model.layers.1.mlp.experts.0.down_proj.weight_scale, "
			     "model.layers.1.mlp.experts.0.gate_proj.weight_scale, "
			     "model.layers.1.mlp.experts.0.up_proj.weight_scale, "
			     "model.layers.1.mlp.experts.1.down_proj.weight_scale and 8 more"),
		      "%s", e.msg);
	ckpt_free(c);
	/* With the default dtype the INT8 experts cannot be cast at all. */
	expect_error(tc, &to_native, "unsupported_cast", NULL, "I8 cannot be cast to BF16");

	/* Experts under a prefix the HF layout does not know are not the
	 * layer's: the MoE layer has none. */
	tc = tiny(LAYOUT_HF);
	for (x = 0; x < 4; x++)
		for (k = 0; k < 3; k++) {
			const char *proj = k == 0 ? "gate_proj" : k == 1 ? "up_proj" : "down_proj";

			snprintf(from, sizeof(from), "model.layers.1.mlp.experts.%d.%s.weight", x,
				 proj);
			snprintf(to, sizeof(to), "transformer.layers.1.mlp.experts.%d.%s.weight", x,
				 proj);
			rename_tensor(tc, from, to);
		}
	expect_error(tc, &to_native, "missing_experts", "model.layers.1",
		     "model.layers.1: a MoE layer (first_k_dense_replace 1) without routed "
		     "experts, neither model.layers.1.mlp.experts.E.{gate,up,down}_proj.weight nor "
		     "model.layers.1.mlp.experts.{gate_up_proj,down_proj}; its MLP tensors: "
		     "transformer.layers.1.mlp.experts.0.down_proj.weight, "
		     "transformer.layers.1.mlp.experts.0.gate_proj.weight, "
		     "transformer.layers.1.mlp.experts.0.up_proj.weight, "
		     "transformer.layers.1.mlp.experts.1.down_proj.weight and 13 more");

	/* A fused QKV bias, and embeddings without "model.". */
	tc = tiny(LAYOUT_HF);
	testckpt_add(tc, "model.layers.0.attention.query_key_value.bias", DTYPE_BF16, 1,
		     TC_SHAPE(128));
	expect_error(tc, &to_native, "unsupported_tensor",
		     "model.layers.0.attention.query_key_value.bias", "no place for 1 tensor");
	tc = tiny(LAYOUT_HF);
	rename_tensor(tc, "model.word_embeddings.weight", "word_embeddings.weight");
	expect_error(tc, &to_native, "unsupported_tensor", "word_embeddings.weight", NULL);

	/* An expert number with a leading zero comes back without it. */
	tc = tiny(LAYOUT_HF);
	rename_tensor(tc, "model.layers.1.mlp.experts.3.gate_proj.weight",
		      "model.layers.1.mlp.experts.03.gate_proj.weight");
	expect_error(tc, &to_native, "unsupported_tensor",
		     "model.layers.1.mlp.experts.03.gate_proj.weight",
		     "converting the output back would not restore 1 tensor: "
		     "model.layers.1.mlp.experts.03.gate_proj.weight (comes back as "
		     "model.layers.1.mlp.experts.3.gate_proj.weight)");

	/* Native names the HF layout has no rule for. */
	tc = tiny(LAYOUT_NATIVE);
	testckpt_add(tc, "model.layers.0.self_attn.q_proj.bias", DTYPE_BF16, 1, TC_SHAPE(64));
	expect_error(tc, &to_hf, "unsupported_tensor", "model.layers.0.self_attn.q_proj.bias",
		     "the HF layout has no place for 1 tensor");
	tc = tiny(LAYOUT_NATIVE);
	rename_tensor(tc, "model.layers.1.mlp.experts.down_projs", "model.mlp.experts.down_projs");
	expect_error(tc, &to_hf, "unsupported_tensor", "model.mlp.experts.down_projs", NULL);

	/* q/k/v that fuse but whose rows config.json does not explain: the
	 * HF output could not be split again. */
	tc = tiny(LAYOUT_NATIVE);
	testckpt_find(tc, "model.layers.0.self_attn.q_proj.weight")->shape[0] = 48;
	expect_error(tc, &to_hf, "qkv_shape_mismatch", "model.layers.0.self_attn.q_proj.weight",
		     "model.layers.0.self_attn.q_proj.weight: the output could not be converted "
		     "back: model.layers.0.attention.query_key_value.weight: shape [112, 64], "
		     "expected 128 rows");

	/* Nothing in the output would say which layout it is in. */
	tc = testckpt_new();
	testckpt_add(tc, "model.layers.0.self_attn.q_proj.weight", DTYPE_BF16, 2, TC_SHAPE(64, 64));
	testckpt_add(tc, "lm_head.weight", DTYPE_BF16, 2, TC_SHAPE(128, 64));
	expect_error(tc, &to_hf, "unsupported_tensor", NULL,
		     "no output tensor would have a name of the hf layout");
	tc = tiny(LAYOUT_HF);
	c = materialise(tc);
	ck_assert_ptr_null(
		plan_with(c, &to_native, "self_attn|embed_tokens|experts|e_score", false, &e));
	ck_assert_str_eq(err_name(e.code), "unsupported_tensor");
	ckpt_free(c);
	testckpt_free(tc);
}
END_TEST

/* The routed experts of the tiny model (4 experts, I 32, H 64) for `layer`. */
static void add_experts(struct testckpt *tc, int layer)
{
	char name[128];
	int x, k;

	for (x = 0; x < 4; x++)
		for (k = 0; k < 3; k++) {
			snprintf(name, sizeof(name), "model.layers.%d.mlp.experts.%d.%s.weight",
				 layer, x, k == 0 ? "gate_proj" : k == 1 ? "up_proj" : "down_proj");
			testckpt_add(tc, name, DTYPE_BF16, 2,
				     k == 2 ? TC_SHAPE(64, 32) : TC_SHAPE(32, 64));
		}
}

/* Layer 1's routed experts as transformers packs them: gate_up_proj
 * [4, 64, 64] and down_proj [4, 64, 32]. */
static struct testckpt *tiny_packed(void)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	char name[128];
	int x, k;

	for (x = 0; x < 4; x++)
		for (k = 0; k < 3; k++) {
			snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%d.%s.weight", x,
				 k == 0 ? "gate_proj" : k == 1 ? "up_proj" : "down_proj");
			ck_assert(testckpt_remove(tc, name));
		}
	testckpt_add(tc, "model.layers.1.mlp.experts.gate_up_proj", DTYPE_BF16, 3,
		     TC_SHAPE(4, 64, 64));
	testckpt_add(tc, "model.layers.1.mlp.experts.down_proj", DTYPE_BF16, 3,
		     TC_SHAPE(4, 64, 32));
	return tc;
}

START_TEST(test_packed_experts)
{
	struct testckpt *tc = tiny_packed();
	struct ckpt *c = materialise(tc);
	struct plan *p = must_plan(c, &to_native);
	const struct plan_tensor *gu =
		&p->tensors[plan_find(p, "model.layers.1.mlp.experts.gate_and_up_projs")];
	const struct plan_tensor *down =
		&p->tensors[plan_find(p, "model.layers.1.mlp.experts.down_projs")];
	enum layout l;
	struct err e = {0};

	ck_assert_int_eq(bailing_moe_v2_adapter.detect(c, &l, &e), 0);
	ck_assert_int_eq(l, LAYOUT_HF);
	ck_assert_uint_eq(gu->shape[0], 4);
	ck_assert_uint_eq(gu->shape[1], 64);
	ck_assert_uint_eq(gu->shape[2], 64);
	ck_assert_uint_eq(down->shape[1], 32);
	ck_assert_uint_eq(down->shape[2], 64);
	ck_assert_uint_eq(gu->nsources, 1);
	ck_assert_str_eq(c->tensors[gu->sources[0]].name, "model.layers.1.mlp.experts.gate_up_proj");
	ck_assert_int_lt(plan_find(p, "model.layers.1.mlp.experts.gate_up_proj"), 0);
	plan_free(p);
	/* Expert parallel: rank 1 of 3 stacks expert 2 only (offset into the
	 * packed tensors). */
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 3, .ep_rank = 1});
	gu = &p->tensors[plan_find(p, "model.layers.1.mlp.experts.gate_and_up_projs")];
	ck_assert_uint_eq(gu->shape[0], 1);
	ck_assert_uint_eq(gu->ops[0].src_offset, 2 * 64 * 64 * 2);
	plan_free(p);
	ckpt_free(c);
	testckpt_free(tc);

	/* One packed tensor without the other. */
	tc = tiny_packed();
	ck_assert(testckpt_remove(tc, "model.layers.1.mlp.experts.down_proj"));
	expect_error(tc, &to_native, "missing_experts", "model.layers.1.mlp.experts.down_proj",
		     "model.layers.1.mlp.experts.down_proj is missing: the layer's experts are "
		     "packed (model.layers.1.mlp.experts.gate_up_proj) and need both gate_up_proj "
		     "and down_proj");
	/* Packed and per expert in one layer. */
	tc = tiny_packed();
	testckpt_add(tc, "model.layers.1.mlp.experts.0.gate_proj.weight", DTYPE_BF16, 2,
		     TC_SHAPE(32, 64));
	expect_error(tc, &to_native, "duplicate_tensor", NULL,
		     "come either one tensor per expert and projection or packed, not both");
	/* [E, H, 2I] (the native shape) under the packed name. */
	tc = tiny_packed();
	testckpt_find(tc, "model.layers.1.mlp.experts.down_proj")->shape[1] = 32;
	testckpt_find(tc, "model.layers.1.mlp.experts.down_proj")->shape[2] = 64;
	expect_error(tc, &to_native, "expert_shape_mismatch", "model.layers.1.mlp.experts.down_proj",
		     "model.layers.1.mlp.experts.down_proj: shape [4, 32, 64] differs from "
		     "[4, 64, 32], the shape of the layer's experts by config.json (num_experts 4, "
		     "moe_intermediate_size 32, hidden_size 64)");
	/* Sub-byte packed experts cannot be transposed. */
	tc = tiny_packed();
	testckpt_find(tc, "model.layers.1.mlp.experts.gate_up_proj")->dtype = DTYPE_F4;
	expect_error(tc, &to_native, "quantized_input", "model.layers.1.mlp.experts.gate_up_proj",
		     NULL);
}
END_TEST

/* Every MoE layer named by config.json must be there with its experts. */
START_TEST(test_moe_layer_absent)
{
	struct testckpt *tc = tiny(LAYOUT_HF);

	json_object_set_new(tc->config, "num_hidden_layers", json_integer(3));
	expect_error(tc, &to_native, "missing_experts", "model.layers.2",
		     "model.layers.2: a MoE layer (first_k_dense_replace 1, num_hidden_layers 3) "
		     "of which the checkpoint has no tensor");
	/* first_k_dense_replace 0: layer 0, with a dense MLP, is a MoE layer. */
	tc = tiny(LAYOUT_HF);
	json_object_set_new(tc->config, "first_k_dense_replace", json_integer(0));
	expect_error(tc, &to_native, "missing_experts", "model.layers.0",
		     "model.layers.0: a MoE layer (first_k_dense_replace 0) without routed "
		     "experts");
}
END_TEST

START_TEST(test_round_trip_accepted)
{
	struct testckpt *tc = tiny(LAYOUT_HF);
	struct err e = {0};
	struct ckpt *c;
	struct plan *p;

	/* Excluding part of the output is the user's choice. */
	c = materialise(tc);
	p = plan_with(c, &to_native, "layers\\.1\\.self_attn\\.k_proj", false, &e);
	ck_assert_msg(p != NULL, "%s: %s", err_name(e.code), e.msg);
	ck_assert_uint_eq(p->nexcluded, 1);
	plan_free(p);
	ckpt_free(c);

	/* An MTP layer (one past num_hidden_layers) converts like any other,
	 * and is a MoE layer: without routed experts it is refused. */
	testckpt_add(tc, "model.layers.2.attention.query_key_value.weight", DTYPE_BF16, 2,
		     TC_SHAPE(128, 64));
	testckpt_add(tc, "model.layers.2.enorm.weight", DTYPE_BF16, 1, TC_SHAPE(64));
	testckpt_add(tc, "model.layers.2.eh_proj.weight", DTYPE_BF16, 2, TC_SHAPE(64, 128));
	c = materialise(tc);
	ck_assert_ptr_null(plan_for(c, &to_native, &e));
	ck_assert_str_eq(err_name(e.code), "missing_experts");
	ck_assert_str_eq(e.tensor, "model.layers.2");
	ck_assert_str_eq(e.msg, "model.layers.2: a MoE layer (first_k_dense_replace 1) without "
				"routed experts, neither "
				"model.layers.2.mlp.experts.E.{gate,up,down}_proj.weight nor "
				"model.layers.2.mlp.experts.{gate_up_proj,down_proj}; its MLP "
				"tensors: none");
	ckpt_free(c);
	add_experts(tc, 2);
	c = materialise(tc);
	p = must_plan(c, &to_native);
	ck_assert_int_ge(plan_find(p, "model.layers.2.self_attn.v_proj.weight"), 0);
	ck_assert_int_ge(plan_find(p, "model.layers.2.mlp.experts.gate_and_up_projs"), 0);
	ck_assert_int_ge(plan_find(p, "model.layers.2.mlp.experts.down_projs"), 0);
	plan_free(p);
	ckpt_free(c);

	/* Expert parallel: a rank's share is checked as the whole.  Expert
	 * "03" belongs to rank 1 of 2: rank 0 does not read it, rank 1 would
	 * write it back as "3". */
	rename_tensor(tc, "model.layers.1.mlp.experts.3.up_proj.weight",
		      "model.layers.1.mlp.experts.03.up_proj.weight");
	c = materialise(tc);
	p = must_plan(c, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 2, .ep_rank = 0});
	expect_grouped(c, p, DTYPE_BF16, 0, 2);
	plan_free(p);
	ckpt_free(c);
	expect_error(tc, &(struct conv){.to = LAYOUT_NATIVE, .ep_size = 2, .ep_rank = 1},
		     "unsupported_tensor", "model.layers.1.mlp.experts.03.up_proj.weight",
		     "(comes back as model.layers.1.mlp.experts.3.up_proj.weight)");
}
END_TEST

/* ---- large experts: pieces and windows ----------------------------------- */

/* A source checkpoint that exists only as tensor descriptions: the plan
 * never reads data, so experts of real sizes cost nothing. */
struct fake {
	struct ckpt c;
	struct ckpt_tensor t[8];
};

static void fake_add(struct fake *f, const char *name, enum dtype dtype, uint64_t d0, uint64_t d1,
		     uint64_t d2)
{
	struct ckpt_tensor *t = &f->t[f->c.ntensors++];

	t->name = name;
	t->dtype = dtype;
	t->ndim = d2 ? 3 : 2;
	t->shape[0] = d0;
	t->shape[1] = d1;
	t->shape[2] = d2;
	t->nbytes = d0 * d1 * (d2 ? d2 : 1) * dtype_size(dtype);
	f->c.tensors = f->t;
}

static void fake_config(struct fake *f, uint64_t H, uint64_t I, uint64_t E)
{
	f->c.config = testckpt_tiny_config();
	json_object_set_new(f->c.config, "hidden_size", json_integer((json_int_t)H));
	json_object_set_new(f->c.config, "moe_intermediate_size", json_integer((json_int_t)I));
	json_object_set_new(f->c.config, "num_experts", json_integer((json_int_t)E));
}

/* Which source element an output element must come from (SPEC.md). */
typedef void (*source_of_fn)(const struct plan_tensor *t, uint64_t out_elem, uint32_t *src,
			     uint64_t *src_elem);

static uint64_t H_, I_;

static void source_of_grouped(const struct plan_tensor *t, uint64_t o, uint32_t *src, uint64_t *se)
{
	uint64_t x, h, i;

	if (strstr(t->name, "gate_and_up_projs")) {
		x = o / (H_ * 2 * I_);
		h = o / (2 * I_) % H_;
		i = o % (2 * I_);
		*src = (uint32_t)(3 * x + (i < I_ ? 0 : 1));
		*se = (i % I_) * H_ + h;
	} else {
		x = o / (I_ * H_);
		i = o / H_ % I_;
		h = o % H_;
		*src = (uint32_t)(3 * x + 2);
		*se = h * I_ + i;
	}
}

static void source_of_split(const struct plan_tensor *t, uint64_t o, uint32_t *src, uint64_t *se)
{
	uint64_t x = strtoull(strstr(t->name, "experts.") + 8, NULL, 10), h, i;

	if (strstr(t->name, "down_proj")) {
		h = o / I_;
		i = o % I_;
		*src = 1;
		*se = (x * I_ + i) * H_ + h;
	} else {
		i = o / H_;
		h = o % H_;
		*src = 0;
		*se = (x * H_ + h) * 2 * I_ + (strstr(t->name, "up_proj") ? I_ : 0) + i;
	}
}

/* Every op's corners map source elements where SPEC.md says; plan_finish
 * already checked that the ops fill each piece exactly. */
static void check_corners(const struct plan *p, source_of_fn source_of, uint32_t *max_pieces,
			  uint32_t *max_ops)
{
	size_t ti;
	uint32_t i, j;
	int corner;

	*max_pieces = *max_ops = 0;
	for (ti = 0; ti < p->ntensors; ti++) {
		const struct plan_tensor *t = &p->tensors[ti];

		if (t->npieces > *max_pieces)
			*max_pieces = t->npieces;
		if (t->nops > *max_ops)
			*max_ops = t->nops;
		for (i = 0; i < t->npieces; i++)
			for (j = 0; j < t->pieces[i].nops; j++) {
				const struct plan_op *op = &t->ops[t->pieces[i].first_op + j];
				uint64_t ss = dtype_size(op->src_dtype),
					 ds = dtype_size(op->dst_dtype);

				for (corner = 0; corner < 4; corner++) {
					uint64_t r = corner & 1 ? op->rows - 1 : 0,
						 col = corner & 2 ? op->cols - 1 : 0;
					uint64_t so =
						op->src_offset + r * op->src_stride + col * ss;
					uint64_t dof = t->pieces[i].offset + op->dst_offset +
						       (op->transpose ?
								col * op->dst_stride + r * ds :
								r * op->dst_stride + col * ds);
					uint32_t want_src;
					uint64_t want_elem;

					ck_assert_uint_eq(so % ss, 0);
					ck_assert_uint_eq(dof % ds, 0);
					source_of(t, dof / ds, &want_src, &want_elem);
					ck_assert_msg(
						op->src == want_src && so / ss == want_elem,
						"%s piece %u op %u corner %d: reads %u[%llu], expected %u[%llu]",
						t->name, i, j, corner, op->src,
						(unsigned long long)(so / ss), want_src,
						(unsigned long long)want_elem);
				}
			}
	}
}

START_TEST(test_large_experts_to_native)
{
	struct fake f = {0};
	struct plan *p;
	struct err e = {0};
	struct adapter_options o = {.to = LAYOUT_NATIVE, .dtype = DTYPE_CHOICE_F32};
	uint32_t pieces, ops;

	/* Ling-1T experts (H 8192, I 2048) cast to F32: 128 MiB of
	 * gate_and_up per expert, so 8 pieces each. */
	H_ = 8192;
	I_ = 2048;
	fake_config(&f, H_, I_, 2);
	fake_add(&f, "model.layers.1.mlp.experts.0.gate_proj.weight", DTYPE_BF16, I_, H_, 0);
	fake_add(&f, "model.layers.1.mlp.experts.0.up_proj.weight", DTYPE_BF16, I_, H_, 0);
	fake_add(&f, "model.layers.1.mlp.experts.0.down_proj.weight", DTYPE_BF16, H_, I_, 0);
	fake_add(&f, "model.layers.1.mlp.experts.1.gate_proj.weight", DTYPE_BF16, I_, H_, 0);
	fake_add(&f, "model.layers.1.mlp.experts.1.up_proj.weight", DTYPE_BF16, I_, H_, 0);
	fake_add(&f, "model.layers.1.mlp.experts.1.down_proj.weight", DTYPE_BF16, H_, I_, 0);
	p = plan_new(&f.c, LAYOUT_HF, LAYOUT_NATIVE);
	ck_assert_msg(bailing_moe_v2_adapter.build_plan(&f.c, &o, p, &e) == 0, "%s", e.msg);
	ck_assert_msg(plan_finish(p, NULL, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(p->ntensors, 2);
	ck_assert_int_eq(p->tensors[0].dtype, DTYPE_F32);
	check_corners(p, source_of_grouped, &pieces, &ops);
	ck_assert_uint_eq(p->tensors[1].npieces, 2 * 8); /* gate_and_up */
	ck_assert_uint_eq(p->tensors[0].npieces, 2 * 4); /* down */
	ck_assert_uint_eq(p->source_bytes, 6 * I_ * H_ * 2);
	plan_free(p);
	json_decref(f.c.config);
}
END_TEST

START_TEST(test_large_experts_to_hf)
{
	struct fake f = {0};
	struct plan *p;
	struct err e = {0};
	struct adapter_options o = {.to = LAYOUT_HF};
	uint32_t pieces, ops;

	/* F32 grouped tensors of 128 MiB per expert: each output is split
	 * into pieces and each op's rows into windows of at most 64 MiB. */
	H_ = 4096;
	I_ = 4096;
	fake_config(&f, H_, I_, 2);
	fake_add(&f, "model.layers.3.mlp.experts.gate_and_up_projs", DTYPE_F32, 2, H_, 2 * I_);
	fake_add(&f, "model.layers.3.mlp.experts.down_projs", DTYPE_F32, 2, I_, H_);
	p = plan_new(&f.c, LAYOUT_NATIVE, LAYOUT_HF);
	ck_assert_msg(bailing_moe_v2_adapter.build_plan(&f.c, &o, p, &e) == 0, "%s", e.msg);
	ck_assert_msg(plan_finish(p, NULL, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(p->ntensors, 6);
	ck_assert_str_eq(p->tensors[0].name, "model.layers.3.mlp.experts.0.down_proj.weight");
	check_corners(p, source_of_split, &pieces, &ops);
	ck_assert_uint_eq(pieces, 4);
	ck_assert_uint_gt(ops, pieces);
	plan_free(p);
	json_decref(f.c.config);
}
END_TEST

static Suite *adapter_suite(void)
{
	Suite *s = suite_create("adapter");
	TCase *gold = tcase_create("golden");
	TCase *bad = tcase_create("bad_models");
	TCase *rules = tcase_create("rules");
	TCase *large = tcase_create("large");

	tcase_add_test(gold, test_golden_detect);
	tcase_add_test(gold, test_golden_hf_to_native);
	tcase_add_test(gold, test_golden_ep);
	tcase_add_test(gold, test_golden_native_to_hf);
	tcase_add_test(gold, test_golden_sources);
	tcase_add_unchecked_fixture(bad, setup, teardown);
	tcase_add_test(bad, test_qkv_rows);
	tcase_add_test(bad, test_missing_experts);
	tcase_add_test(bad, test_missing_experts_many);
	tcase_add_test(bad, test_num_experts_beyond_checkpoint);
	tcase_add_test(bad, test_expert_shapes);
	tcase_add_test(bad, test_expert_out_of_range);
	tcase_add_test(bad, test_native_grouped_shapes);
	tcase_add_test(bad, test_quantized);
	tcase_add_test(bad, test_copy_only_dtypes);
	tcase_add_test(bad, test_qkv_mismatch);
	tcase_add_test(bad, test_unsupported_models);
	tcase_add_test(bad, test_missing_config_key);
	tcase_add_test(bad, test_layout_detection);
	tcase_add_test(bad, test_options_to_hf);
	tcase_add_test(bad, test_config_overflow);
	tcase_add_test(bad, test_config_many_experts);
	tcase_add_test(bad, test_round_trip_refused);
	tcase_add_unchecked_fixture(rules, setup, teardown);
	tcase_add_test(rules, test_head_dim);
	tcase_add_test(rules, test_target_dtypes);
	tcase_add_test(rules, test_expert_parallel);
	tcase_add_test(rules, test_prefixes_kept);
	tcase_add_test(rules, test_partial_qkv);
	tcase_add_test(rules, test_renames);
	tcase_add_test(rules, test_dtype_choice_names);
	tcase_add_test(rules, test_model_dtype);
	tcase_add_test(rules, test_round_trip_accepted);
	tcase_add_test(rules, test_packed_experts);
	tcase_add_test(rules, test_moe_layer_absent);
	tcase_add_test(large, test_large_experts_to_native);
	tcase_add_test(large, test_large_experts_to_hf);
	suite_add_tcase(s, gold);
	suite_add_tcase(s, bad);
	suite_add_tcase(s, rules);
	suite_add_tcase(s, large);
	return s;
}

int main(void)
{
	return test_run_suite(adapter_suite());
}
