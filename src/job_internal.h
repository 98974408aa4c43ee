/* SPDX-License-Identifier: MIT */
/*
 * job_internal: what job.c shares with job_record.c and nothing else
 * sees.
 */
#ifndef CKPTCONV_JOB_INTERNAL_H
#define CKPTCONV_JOB_INTERNAL_H

#include <jansson.h>

#include "ckptconv/job.h"

/* A job with one reference and nothing else set (a record fills it in). */
struct job *job_alloc(void);
/* An error as the API and the records show it: {"code", "message",
 * "tensor"}, or null when e has no code. */
json_t *job_err_json(const struct err *e);
/* The job's credentials_source as the API and the records show it: the
 * source's name, or null. */
json_t *job_credentials_source_json(const struct job *j);

#endif
