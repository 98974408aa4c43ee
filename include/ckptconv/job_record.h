/* SPDX-License-Identifier: MIT */
/*
 * job_record: a job's durable record, the JSON of <state>/jobs/<id>.json
 * (format "ckptconv-job-1"), and the atomic file write every file of the
 * state dir goes through (temporary file, fsync, rename, fsync of the
 * directory).
 *
 * Threads: any; the functions marked "locked" are called with the
 * registry's lock held (registry.h).
 */
#ifndef CKPTCONV_JOB_RECORD_H
#define CKPTCONV_JOB_RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "ckptconv/job.h"

/* Locked.  The record's JSON; job_from_record rebuilds a job from it
 * (code io_error naming what is wrong). */
json_t *job_record_json(const struct job *j);
int job_from_record(const json_t *record, struct job **out, struct err *e);

/* Writes `json` to dir/name atomically (temporary file, fsync, rename,
 * fsync of the directory).  Code io_error. */
int job_write_atomic(const char *dir, const char *name, const char *data, size_t len, bool durable,
		     struct err *e);

#endif
