/* SPDX-License-Identifier: MIT */
/*
 * err: the error record and the catalogue of error codes shared by the CLI
 * and the HTTP API.  docs/errors.md documents every entry of the table; a
 * test checks that the two agree.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"

static const struct err_code catalogue[] = {
	/* usage and requests */
	{"usage_error", 400, "The command line is not valid."},
	{"invalid_option", 400, "An option has a value that is not allowed."},
	{"invalid_size", 400, "A size or rate is not in the size syntax (5GB, 500MiB, 123)."},
	{"invalid_exclude", 400, "The exclude pattern is not a valid POSIX extended regular expression, or exceeds a bound on its cost (length, back-references, nesting, expanded size)."},
	{"invalid_json", 400, "The request body is not valid JSON."},
	{"invalid_field", 400, "A field of the request has a wrong type or value."},
	{"unknown_field", 400, "The request names a field the API does not know."},
	{"missing_field", 400, "A required field of the request is missing."},
	{"invalid_partition", 400, "The partition is not I/N with 0 <= I < N."},
	{"unauthorized", 401, "The bearer token is missing or wrong."},
	{"forbidden_path", 403, "A local path, or a file a job opens there (index, shard, config.json), resolves outside the allowed roots."},
	{"forbidden_s3_location", 403, "An s3:// location is outside the allowed prefixes."},
	{"forbidden_s3_endpoint", 403, "A job names an S3 endpoint that is not allowed."},
	{"job_not_found", 404, "No job has this id."},
	{"not_found", 404, "No such route."},
	{"method_not_allowed", 405, "The route does not accept this method."},
	{"malformed_request", 400, "The request is framed wrongly: an HTTP/1.1 request without a Host header or any request with two (RFC 9112, section 3.2), or a body length that is ambiguous: several Content-Length headers, Content-Length with Transfer-Encoding, or a Transfer-Encoding other than chunked."},
	{"destination_in_use", 409, "Another queued or running job writes to a location overlapping this job's source or destination, or reads from one overlapping its destination."},
	{"idempotency_conflict", 409, "The Idempotency-Key was used before with a different body."},
	{"payload_too_large", 413, "The request body is larger than 64 KiB."},
	{"unsupported_media_type", 415, "The request body is not application/json."},
	{"queue_full", 429, "Too many jobs are queued; retry later."},
	{"draining", 503, "The service is shutting down and accepts no new jobs."},
	{"not_ready", 503, "The service is not ready (starting, draining or its state dir is not writable)."},
	{"unhealthy", 503, "ckptconv healthcheck got no HTTP 200 from the daemon (no answer, a timeout or another status)."},
	{"server_unreachable", 502, "ckptconv jobs got no answer from the daemon (refused, timed out, or the connection broke)."},
	{"server_bad_response", 502, "The daemon's answer is not what its API describes (not JSON, a member of the wrong type, over 64 MiB, an event stream that keeps ending with no news of the job)."},
	{"job_finished", 409, "The job had already finished: there was nothing to cancel."},
	/* source checkpoint */
	{"source_not_found", 422, "The source does not exist."},
	{"source_unreadable", 422, "The source cannot be read."},
	{"invalid_location", 400, "A location is empty or uses a scheme this build cannot serve."},
	{"not_a_checkpoint", 422, "The source holds no safetensors checkpoint (unfinished `.ckptconv-tmp.*` files do not count)."},
	{"index_invalid", 422, CKPT_INDEX_NAME " is not a valid index."},
	{"index_missing_file", 422, "The index names a file that does not exist."},
	{"weight_map_mismatch", 422, "The index's weight_map disagrees with the tensors the files hold."},
	{"missing_config", 422, "config.json is missing."},
	{"config_invalid", 422, "config.json is not valid JSON, or a key has the wrong type or a value out of range."},
	{"missing_config_key", 422, "config.json lacks a key the conversion needs."},
	{"unsupported_model", 422, "The checkpoint is not a model family ckptconv converts (Ling 2.0)."},
	{"ambiguous_layout", 422, "Tensor names of both the HF and the native layout are present."},
	{"unknown_layout", 422, "No tensor name identifies the HF or the native layout."},
	{"already_in_layout", 422, "The checkpoint already has the requested layout."},
	{"lfs_pointer", 422, "A weight file, the index or config.json is a git-lfs pointer, not the file (run git lfs pull)."},
	/* safetensors */
	{"file_truncated", 422, "A safetensors file is shorter than its header says."},
	{"header_too_large", 422, "A safetensors header size is over 100,000,000 bytes."},
	{"header_out_of_bounds", 422, "A safetensors header size is larger than the file."},
	{"header_invalid_json", 422, "A safetensors header is not valid JSON."},
	{"header_not_object", 422, "A safetensors header is not a JSON object."},
	{"duplicate_tensor", 422, "A tensor name occurs twice."},
	{"unknown_dtype", 422, "A tensor has a dtype safetensors does not define."},
	{"invalid_shape", 422, "A tensor shape is not a list of non-negative integers."},
	{"invalid_offsets", 422, "A tensor's data_offsets are not [begin, end] with begin <= end."},
	{"offsets_mismatch", 422, "A tensor's data_offsets disagree with its shape and dtype."},
	{"invalid_tensor", 422, "A tensor of a dtype narrower than a byte (F4, F6_E2M3, F6_E3M2) has an element count whose bits are not a whole number of bytes."},
	{"overlapping_tensors", 422, "Two tensors' data regions overlap."},
	{"data_hole", 422, "The data area has bytes no tensor covers."},
	{"offsets_out_of_bounds", 422, "A tensor's data lies past the end of the file."},
	{"trailing_bytes", 422, "The file continues past the end of its data."},
	{"invalid_metadata", 422, "__metadata__ is not an object of strings."},
	/* sharded training checkpoints (NeMo Automodel) */
	{"sharding_info_missing", 422, "A shard of an Automodel sharded checkpoint has no __metadata__.DCP_SHARDING_INFO."},
	{"sharding_info_invalid", 422, "DCP_SHARDING_INFO is not JSON, lacks a tensor of the header, names one the header lacks, or gives offsets that are not one non-negative integer per dimension."},
	{"hf_metadata_missing", 422, "A sharded Automodel checkpoint lacks .hf_metadata/ or its fqn_to_file_index_mapping.json."},
	{"mapping_invalid", 422, "fqn_to_file_index_mapping.json is not an object of names to file indices 1..99999, or fqn_to_dtype_mapping.json not one of names to safetensors dtypes."},
	{"chunk_overlap", 422, "Two chunks of one tensor cover the same elements (or one shard holds a tensor twice)."},
	{"chunk_gap", 422, "The chunks of a tensor leave elements of its full shape uncovered (a shard missing, or a damaged DCP_SHARDING_INFO)."},
	{"shard_missing", 422, "A shard of a sharded checkpoint is missing: a tensor is smaller than config.json says (the shards that would hold the rest are named)."},
	{"chunk_dtype_mismatch", 422, "The chunks of one tensor have different dtypes."},
	{"chunk_ndim_mismatch", 422, "The chunks of one tensor have different numbers of dimensions."},
	{"chunk_out_of_bounds", 422, "An empty chunk's offsets lie past the full shape the other chunks give the tensor."},
	{"tensor_not_mapped", 422, "A tensor of the shards is in no output file of fqn_to_file_index_mapping.json."},
	/* model rules */
	{"qkv_shape_mismatch", 422, "A fused query_key_value tensor has the wrong row count."},
	{"qkv_mismatch", 422, "q/k/v projections of one layer differ in dtype or column count."},
	{"missing_experts", 422, "A MoE layer lacks some experts' projections."},
	{"expert_shape_mismatch", 422, "Experts of one layer have different shapes."},
	{"expert_out_of_range", 422, "An expert number is not below num_experts."},
	{"grouped_shape_mismatch", 422, "A grouped expert tensor does not have the shape config.json implies."},
	{"quantized_input", 422, "FP8 tensors or *_scale_inv scales are not supported, nor transposing or casting a tensor of F4, F6_E2M3, F6_E3M2 or C64 (copied as they are elsewhere)."},
	{"unsupported_cast", 422, "The tensor's dtype cannot be cast to the target dtype."},
	{"unsupported_tensor", 422, "A tensor has no place in the target layout: the output could not be converted back."},
	{"manifest_mismatch", 409, "The destination holds a partition manifest of a different plan."},
	{"partition_incomplete", 409, "Some planned output files of a partitioned conversion are missing."},
	/* destination and execution */
	{"destination_not_writable", 422, "The destination cannot be created or written."},
	{"destination_not_empty", 409, "The destination holds files; pass overwrite to replace them."},
	{"insufficient_space", 507, "The destination's filesystem lacks room for the output."},
	{"source_truncated", 422, "A source file shrank while it was being converted."},
	{"io_error", 500, "Reading or writing a file failed (also a write past the file size limit, ulimit -f: \"File too large\"); what was written is removed."},
	{"cancelled", 409, "The conversion was cancelled."},
	{"interrupted", 500, "The service stopped while the job was running, more than 3 times; what the job left in its destination was removed."},
	/* object storage */
	{"s3_error", 502, "The object store answered with an error."},
	{"s3_access_denied", 502, "The object store refused the credentials or the request."},
	{"s3_no_such_bucket", 422, "The bucket does not exist."},
	{"s3_unavailable", 502, "The object store could not be reached after retries."},
	{"s3_bad_response", 502, "The object store's answer was malformed (e.g. a range not honoured)."},
	{"s3_config", 400, "The S3 configuration (endpoint, region, addressing style, CA bundle) is invalid."},
	{"s3_credentials", 502, "No credentials for the object store could be obtained: the source in use (environment, web identity, shared files, container endpoint, instance metadata) failed, answered something malformed or expired credentials, or none is configured; the message names the source."},
	/* internal */
	{"plan_invalid", 500, "The conversion plan is inconsistent (a bug)."},
	{"internal_error", 500, "An unexpected internal failure."},
};

const struct err_code *err_catalogue(size_t *n)
{
	*n = sizeof(catalogue) / sizeof(catalogue[0]);
	return catalogue;
}

static const struct err_code *lookup(const char *code)
{
	size_t i;

	if (!code)
		return NULL;
	for (i = 0; i < sizeof(catalogue) / sizeof(catalogue[0]); i++)
		if (strcmp(catalogue[i].code, code) == 0)
			return &catalogue[i];
	return NULL;
}

int err_code_known(const char *code)
{
	return lookup(code) != NULL;
}

int err_http_status(const char *code)
{
	const struct err_code *c = lookup(code);

	return c ? c->http_status : 500;
}

static int vset(struct err *e, const char *code, int errnum, const char *fmt, va_list ap)
{
	size_t used;

	if (!e || e->code)
		return -1;
	e->code = code;
	e->errnum = errnum;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	if (errnum) {
		used = strlen(e->msg);
		snprintf(e->msg + used, sizeof(e->msg) - used, ": %s", strerror(errnum));
	}
	return -1;
}

int err_set(struct err *e, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(e, code, 0, fmt, ap);
	va_end(ap);
	return -1;
}

int err_set_errno(struct err *e, const char *code, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(e, code, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

void err_set_tensor(struct err *e, const char *tensor)
{
	if (e && tensor && !e->tensor[0])
		snprintf(e->tensor, sizeof(e->tensor), "%s", tensor);
}

void err_clear(struct err *e)
{
	if (e)
		memset(e, 0, sizeof(*e));
}

int err_is_set(const struct err *e)
{
	return e && e->code;
}
