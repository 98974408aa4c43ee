/* SPDX-License-Identifier: MIT */
/*
 * progress: a running conversion's rate and remaining time, computed here
 * for every view of it (the CLI's display, the API's progress object), and
 * the CLI's display: a one-line bar redrawn on a terminal (tensors, GB,
 * GB/s, ETA), plain lines otherwise.  The sample is exec's struct
 * exec_progress, which a daemon job keeps as its last seen progress too.
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

/* Rate and remaining time from a progress sample: the bytes this run wrote
 * (bytes_done less bytes_kept) per elapsed second (0 before any time
 * passed); seconds left at that rate, 0 when all
 * bytes are done, -1 when the rate is still 0.  Any thread. */
double progress_rate(const struct exec_progress *p);
double progress_eta(const struct exec_progress *p);

#endif
