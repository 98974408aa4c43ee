/* SPDX-License-Identifier: MIT */
/*
 * s3_job: a daemon job's S3 settings ("options": {"s3": {"endpoint_url",
 * "region", "addressing_style"}}, never secrets).  s3_job_options_check
 * validates the object when the job is submitted and refuses an endpoint
 * that is not in the service's --allow-s3-endpoint list (compared after
 * normalisation: scheme and host lower case, default port dropped);
 * s3_job_options_apply lays them over the settings the job's stores are
 * opened with (its struct store_config).  They fit job_policy's
 * s3_options_check and s3_options_apply hooks.
 *
 * Codes: unknown_field, invalid_field, s3_config, forbidden_s3_endpoint
 * (je->field names the member at fault).
 */
#ifndef CKPTCONV_S3_JOB_H
#define CKPTCONV_S3_JOB_H

#include <jansson.h>

struct err;
struct s3_settings;
struct job_policy;
struct job_error;

int s3_job_options_check(const json_t *s3, const struct job_policy *p, struct job_error *je);
/* Sets the fields of *settings that `s3` (NULL or JSON null: none) sets;
 * the strings are borrowed from `s3`.  Any thread.  Code: s3_config,
 * invalid_field, unknown_field. */
int s3_job_options_apply(const json_t *s3, struct s3_settings *settings, struct err *e);

#endif
