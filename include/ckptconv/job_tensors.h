/* SPDX-License-Identifier: MIT */
/*
 * job_tensors: the per-tensor listing of a job's plan, a file in the state
 * dir that the API pages through by copying bytes (62,000 tensors and
 * more).
 *
 * Threads: a listing is immutable once open, shared and reference
 * counted; any thread.  Code: io_error.
 */
#ifndef CKPTCONV_JOB_TENSORS_H
#define CKPTCONV_JOB_TENSORS_H

#include <stdbool.h>
#include <stddef.h>

struct err;
struct plan;

/* The per-tensor listing of a plan, kept as a file in the state dir and
 * mapped: for each output tensor in plan order, the JSON object without its
 * state ({"name","dtype","shape","bytes","file","sources","state":") so a
 * page of the listing is built by copying bytes.  Immutable; ref counted. */
struct job_tensors;
int job_tensors_write(const struct plan *plan, const char *path, bool durable, struct err *e);
int job_tensors_open(const char *path, struct job_tensors **out, struct err *e);
struct job_tensors *job_tensors_ref(struct job_tensors *t);
void job_tensors_unref(struct job_tensors *t);
size_t job_tensors_count(const struct job_tensors *t);
/* The fragment of tensor i (without its state and closing brace). */
void job_tensors_fragment(const struct job_tensors *t, size_t i, const char **out, size_t *len);

#endif
