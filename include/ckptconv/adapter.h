/* SPDX-License-Identifier: MIT */
/*
 * adapter: the table of model families ckptconv converts.  Each adapter
 * recognises its checkpoints from config.json, tells their layout from the
 * tensor names, and builds the conversion plan.  Adding a family means one
 * new file in src/adapters/ and one line in the table in adapter.c.  Every
 * function is pure over its arguments (no I/O, no shared state): any thread
 * may call them.
 */
#ifndef CKPTCONV_ADAPTER_H
#define CKPTCONV_ADAPTER_H

#include <stdbool.h>
#include <stdint.h>

#include "ckptconv/dtype.h"
#include "ckptconv/plan.h"

struct err;
struct ckpt;

/* F64 only for consolidating a sharded checkpoint to hf (automodel.h),
 * Automodel's CAST_DTYPE fp64; the adapters refuse it. */
enum dtype_choice { DTYPE_CHOICE_AUTO = 0, DTYPE_CHOICE_KEEP, DTYPE_CHOICE_BF16,
		    DTYPE_CHOICE_F16, DTYPE_CHOICE_F32, DTYPE_CHOICE_F64 };
/* "auto" | "keep" | "bf16" | "f16" | "f32" | "f64"; -1 if unknown. */
int dtype_choice_parse(const char *text);
const char *dtype_choice_name(enum dtype_choice c);

struct adapter_options {
	enum layout to;
	enum dtype_choice dtype;    /* HF -> native only */
	uint32_t ep_size, ep_rank;  /* ep_size 0 = no expert parallelism */
};

/* Largest expert-parallel size accepted (ranks beyond it hold no expert of
 * any released model). */
#define ADAPTER_EP_SIZE_MAX 65536

/* The rules between the target layout, the dtype and expert parallelism,
 * for every caller (convert_options_check, the CLI, the API, the adapters):
 * the target is native or hf; a dtype other than auto and expert
 * parallelism apply only to native (SPEC.md: to hf keeps the dtypes and
 * needs every expert); an expert-parallel rank needs a size from 1 to
 * ADAPTER_EP_SIZE_MAX and is below it.  Code invalid_option; *field (may
 * be NULL) is set to the option at fault, named as in the JSON form
 * (convert_options.h): "to", "dtype", "expert_parallel",
 * "expert_parallel.size" or "expert_parallel.rank". */
int adapter_options_check(const struct adapter_options *o, const char **field, struct err *e);

/* What `inspect` reports about a checkpoint. */
struct model_info {
	char model_type[64];
	char architecture[96];
	enum layout layout;
	uint64_t layers;            /* num_hidden_layers */
	uint64_t mtp_layers;        /* layers past num_hidden_layers that the
				     * tensors hold: the MTP layer
				     * layers.{num_hidden_layers} (SPEC.md,
				     * tensor names), 0 or 1 for Ling 2.0 */
	uint64_t experts;           /* num_experts */
	enum dtype dtype;           /* the model's dtype; DTYPE_INVALID when
				     * config.json names one ckptconv cannot
				     * cast to */
	const char *dtype_key;      /* config.json key it comes from ("dtype",
				     * "torch_dtype"); NULL: neither is set
				     * and the dtype is the default */
	const char *experts_layout; /* how the routed experts are stored, a
				     * static string: "per_expert" (HF, one
				     * tensor per expert and projection),
				     * "packed" (HF, transformers'
				     * gate_up_proj and down_proj), "grouped"
				     * (native gate_and_up_projs and
				     * down_projs), "per_expert+packed"
				     * (layers differ), "none" */
};

struct adapter {
	const char *name;           /* "bailing_moe_v2" */
	/* Whether config.json names this family. */
	bool (*matches)(const struct ckpt *c);
	/* Layout by tensor names; codes ambiguous_layout, unknown_layout. */
	int (*detect)(const struct ckpt *c, enum layout *out, struct err *e);
	/* Model facts from config.json, and the layout as detect tells it:
	 * what a conversion and `inspect` derive once and hand down.  Codes:
	 * missing_config, missing_config_key, config_invalid (a wrong type,
	 * or a dimension no safetensors tensor could hold), then detect's; a
	 * dtype it cannot cast to is out->dtype DTYPE_INVALID, not an
	 * error. */
	int (*describe)(const struct ckpt *c, struct model_info *out, struct err *e);
	/* Adds the output tensors, pieces and ops to p (plan_finish is the
	 * caller's).  Codes: config_invalid and missing_config_key (the
	 * dimensions), the model rules of docs/errors.md. */
	int (*build_plan)(const struct ckpt *c, const struct adapter_options *o,
			  struct plan *p, struct err *e);
	/* Checks, before anything is written, that the output of p (built by
	 * build_plan from c with o, then finished) can be converted back: it
	 * reads as layout o->to, converting it back (--dtype keep) plans
	 * without error, and, from HF to native with nothing excluded, it
	 * gives back every source tensor under its own name and shape (the
	 * round trip SPEC.md calls lossless).  An expert-parallel rank's
	 * output is checked as the whole of which it is one share.  Names the
	 * first offending source tensors.  Codes: unsupported_tensor, or the
	 * code converting back would fail with.  Reads no tensor data. */
	int (*check_round_trip)(const struct ckpt *c, const struct adapter_options *o,
				const struct plan *p, struct err *e);
};

/* The adapter for this checkpoint.  Codes: unsupported_model (naming the
 * architecture found), missing_config. */
const struct adapter *adapter_for(const struct ckpt *c, struct err *e);

/* Whether config.json's architectures (transformers' list of model class
 * names) holds `architecture`; false without a config.json. */
bool adapter_declares(const struct ckpt *c, const char *architecture);

extern const struct adapter bailing_moe_v2_adapter;

#endif
