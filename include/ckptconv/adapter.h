/* SPDX-License-Identifier: MIT */
/*
 * adapter: the table of model families ckptconv converts.  Each adapter
 * recognises its checkpoints from config.json, tells their layout from the
 * tensor names, and builds the conversion plan.  Adding a family means one
 * new file in src/adapters/ and one line in the table in adapter.c.
 */
#ifndef CKPTCONV_ADAPTER_H
#define CKPTCONV_ADAPTER_H

#include <stdbool.h>
#include <stdint.h>

#include "ckptconv/dtype.h"
#include "ckptconv/plan.h"

struct err;
struct ckpt;

enum dtype_choice { DTYPE_CHOICE_AUTO = 0, DTYPE_CHOICE_KEEP, DTYPE_CHOICE_BF16,
		    DTYPE_CHOICE_F16, DTYPE_CHOICE_F32 };
/* "auto" | "keep" | "bf16" | "f16" | "f32"; -1 if unknown. */
int dtype_choice_parse(const char *text);
const char *dtype_choice_name(enum dtype_choice c);

struct adapter_options {
	enum layout to;
	enum dtype_choice dtype;    /* HF -> native only */
	uint32_t ep_size, ep_rank;  /* ep_size 0 = no expert parallelism */
};

/* What `inspect` reports about a checkpoint. */
struct model_info {
	char model_type[64];
	char architecture[96];
	enum layout layout;
	uint64_t layers;            /* num_hidden_layers */
	uint64_t experts;           /* num_experts */
	enum dtype torch_dtype;
};

struct adapter {
	const char *name;           /* "bailing_moe_v2" */
	/* Whether config.json names this family. */
	bool (*matches)(const struct ckpt *c);
	/* Layout by tensor names; codes ambiguous_layout, unknown_layout. */
	int (*detect)(const struct ckpt *c, enum layout *out, struct err *e);
	/* Model facts from config.json (missing keys are errors). */
	int (*describe)(const struct ckpt *c, struct model_info *out, struct err *e);
	/* Adds the output tensors, pieces and ops to p (plan_finish is the
	 * caller's). */
	int (*build_plan)(const struct ckpt *c, const struct adapter_options *o,
			  struct plan *p, struct err *e);
};

/* The adapter for this checkpoint.  Codes: unsupported_model (naming the
 * architecture found), missing_config. */
const struct adapter *adapter_for(const struct ckpt *c, struct err *e);

extern const struct adapter bailing_moe_v2_adapter;

#endif
