/* SPDX-License-Identifier: MIT */
/*
 * progress: the CLI's view of a running conversion: a one-line bar redrawn
 * on a terminal (tensors, GB, GB/s, ETA), plain lines otherwise.
 */
#ifndef CKPTCONV_PROGRESS_H
#define CKPTCONV_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

#include "ckptconv/exec.h"

struct progress_display {
	FILE *out;
	bool tty;
	double last_print;          /* 0 before the first update */
	unsigned long lines;        /* updates printed so far */
	bool complete_shown;        /* a plain line already showed 100% */
};

void progress_init(struct progress_display *d, FILE *out);
void progress_update(struct progress_display *d, const struct exec_progress *p, bool final);

/* Rate and remaining time from a progress sample. */
double progress_rate(const struct exec_progress *p);          /* bytes/s */
double progress_eta(const struct exec_progress *p);           /* seconds, -1 unknown */

#endif
