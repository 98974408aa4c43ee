/* SPDX-License-Identifier: MIT */
/*
 * conversion_result: what a finished conversion, a partition of one or a
 * finalize wrote, and its one JSON form.  `ckptconv convert --json`,
 * `ckptconv finalize --json`, a daemon job's "result" (and so its record
 * on disk) all print conversion_result_to_json(); the text lines of the
 * CLI are made from the same figures.
 *
 * The figures, one meaning each wherever a result is shown:
 *   tensors     output tensors written
 *   bytes       tensor data bytes written (the sum over those tensors of
 *               element count x dtype size; the figure a job's progress
 *               counts in bytes_total/bytes_done; bytes_per_second
 *               divides those this run wrote), headers and non-weight files not included
 *   file_bytes  bytes of the *.safetensors files written, headers included
 *               (not the index, not the copied non-weight files)
 *   kept_files  *.safetensors files a resumed run kept from an interrupted
 *               one (manifest.h) instead of writing them: counted in the
 *               figures above too, as the checkpoint holds them
 *   kept_bytes  their bytes, headers included
 * For a partition these are its own group's; for a finalize the whole
 * checkpoint's.
 *
 * Adding a figure: a member here, the line that fills it (convert.c or
 * finalize.c) and one line in conversion_result_to_json().
 *
 * Threads: a result is owned by one thread; nothing here keeps state.
 */
#ifndef CKPTCONV_CONVERSION_RESULT_H
#define CKPTCONV_CONVERSION_RESULT_H

#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ckptconv/util.h"

struct conversion_result {
	/* The files written, in the order they are published: the
	 * *.safetensors files, then the copied non-weight files and those
	 * written from memory, the index last. */
	struct strvec files;
	uint64_t tensors;
	uint64_t bytes;		/* tensor data bytes (see the top of this file) */
	uint64_t file_bytes;	/* *.safetensors bytes, headers included */
	uint64_t kept_files;	/* of them kept from an interrupted run */
	uint64_t kept_bytes;	/* their bytes, headers included */
	uint64_t kept_data_bytes; /* their tensor data bytes: of `bytes`, those
				   * this run did not write (not shown) */
	double seconds;		/* wall seconds of the run; < 0: not timed */
	struct strvec warnings; /* source files not copied (other weight formats, ...) */

	/* A partition's result (partition_count > 0): which one, and how
	 * many files the whole plan has. */
	uint32_t partition_index, partition_count;
	uint64_t planned_files;

	/* A finalize's result: the manifest's source (NULL when the
	 * destination was a finished checkpoint already). */
	bool finalize, already_finished;
	char *source;

	/* Optional (NULL: left out): the destination as given (the CLI's
	 * finalize) and where the S3 credentials came from (aws_credentials.h). */
	char *destination;
	char *credentials_source;
};

/* An empty result: no files, zero figures, not timed (seconds -1). */
void conversion_result_init(struct conversion_result *r);
/* Frees what r holds and leaves it as _init does; NULL is a no-op. */
void conversion_result_fini(struct conversion_result *r);

/* The result as one JSON object (a new reference):
 *   {"files": [names], "tensors": n, "bytes": n, "file_bytes": n,
 *    "warnings": [sentences]}, and for a conversion or partition run (not
 *   a finalize) "kept_files": n, "kept_bytes": n
 * plus, when present: "seconds" and "bytes_per_second" (the bytes this run
 * wrote, bytes less kept_data_bytes, / seconds,
 * 0 for a run of no measurable time) for a timed run; "partition":
 * {"index", "count", "planned_files"}; "finalize": {"source" (string or
 * null), "already_finished"}; "destination"; "credentials_source".
 * The wire form of docs/openapi.yaml's Result; never NULL. */
json_t *conversion_result_to_json(const struct conversion_result *r);

/* What follows a partition's summary, for `convert --partition` and a
 * partition job's `jobs submit --wait`: a printf format taking the
 * destination (string) and the partition count (uint32_t), with no end
 * of line. */
#define CONVERSION_FINALIZE_HINT \
	"run `ckptconv finalize %s` once all %" PRIu32 " partitions have succeeded"

/* The CLI's one-line summary of a conversion or partition run to `out`
 * (a partition's also says to run finalize on `dst` once all have
 * succeeded). */
void conversion_result_print(FILE *out, const struct conversion_result *r, const char *dst);

#endif
