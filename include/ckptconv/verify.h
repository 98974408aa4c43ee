/* SPDX-License-Identifier: MIT */
/*
 * verify: tensor-by-tensor comparison of two checkpoints: the same names,
 * and for each the same dtype, shape and bytes.  File names, shard split and
 * header order do not matter.
 */
#ifndef CKPTCONV_VERIFY_H
#define CKPTCONV_VERIFY_H

#include <stdbool.h>
#include <stdio.h>

struct err;
struct store_config;

struct verify_report {
	size_t tensors_compared;
	size_t differences;          /* names missing either side + mismatches */
	size_t only_expected, only_actual, dtype_mismatch, shape_mismatch, bytes_mismatch;
	bool layouts_differ; /* one side HF, the other native (a note line says so) */
};

/* Compares, printing one line per difference to `out` (may be NULL; at most
 * `max_lines` lines, after a `note:` line when an adapter finds the two
 * sides in different layouts), both checkpoints opened with `cfg` (store.h; NULL:
 * the environment's settings).  Returns 0 when both sides opened (check
 * report->differences), -1 with e set when a side cannot be read. */
int verify_checkpoints(const char *expected, const char *actual, const struct store_config *cfg,
		       FILE *out, size_t max_lines, struct verify_report *report, struct err *e);

#endif
