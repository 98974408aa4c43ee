/* SPDX-License-Identifier: MIT */
/*
 * err_catalogue: every error code ckptconv reports, in one list: the
 * enum constant, the stable snake_case name used on the wire and in
 * docs/errors.md, the HTTP status the daemon answers with, and the
 * description.  err.h builds enum err_code from it and err.c the table;
 * a test checks docs/errors.md against the table.
 *
 * X(id, name, http_status, description)
 */
#ifndef CKPTCONV_ERR_CATALOGUE_H
#define CKPTCONV_ERR_CATALOGUE_H

#define ERR_CATALOGUE(X) \
	/* usage and requests */ \
	X(ERR_USAGE_ERROR, "usage_error", 400, \
	  "The command line is not valid.") \
	X(ERR_INVALID_OPTION, "invalid_option", 400, \
	  "An option has a value that is not allowed.") \
	X(ERR_INVALID_SIZE, "invalid_size", 400, \
	  "A size or rate is not in the size syntax (5GB, 500MiB, 123).") \
	X(ERR_INVALID_EXCLUDE, "invalid_exclude", 400, \
	  "The exclude pattern is not a valid POSIX extended regular expression, or exceeds a bound on its cost (length, back-references, nesting, expanded size).") \
	X(ERR_INVALID_JSON, "invalid_json", 400, \
	  "The request body is not valid JSON.") \
	X(ERR_INVALID_FIELD, "invalid_field", 400, \
	  "A field of the request has a wrong type or value.") \
	X(ERR_UNKNOWN_FIELD, "unknown_field", 400, \
	  "The request names a field the API does not know.") \
	X(ERR_MISSING_FIELD, "missing_field", 400, \
	  "A required field of the request is missing.") \
	X(ERR_INVALID_PARTITION, "invalid_partition", 400, \
	  "The partition is not I/N with 0 <= I < N.") \
	X(ERR_UNAUTHORIZED, "unauthorized", 401, \
	  "The bearer token is missing or wrong.") \
	X(ERR_FORBIDDEN_PATH, "forbidden_path", 403, \
	  "A local path, or a file a job opens there (index, shard, config.json), resolves outside the allowed roots.") \
	X(ERR_FORBIDDEN_S3_LOCATION, "forbidden_s3_location", 403, \
	  "An s3:// location is outside the allowed prefixes.") \
	X(ERR_FORBIDDEN_S3_ENDPOINT, "forbidden_s3_endpoint", 403, \
	  "A job names an S3 endpoint that is not allowed.") \
	X(ERR_JOB_NOT_FOUND, "job_not_found", 404, \
	  "No job has this id.") \
	X(ERR_NOT_FOUND, "not_found", 404, \
	  "No such route.") \
	X(ERR_METHOD_NOT_ALLOWED, "method_not_allowed", 405, \
	  "The route does not accept this method.") \
	X(ERR_MALFORMED_REQUEST, "malformed_request", 400, \
	  "The request is framed wrongly: an HTTP/1.1 request without a Host header or any request with two (RFC 9112, section 3.2), or a body length that is ambiguous: several Content-Length headers, Content-Length with Transfer-Encoding, or a Transfer-Encoding other than chunked.") \
	X(ERR_DESTINATION_IN_USE, "destination_in_use", 409, \
	  "Another queued or running job writes to a location overlapping this job's source or destination, or reads from one overlapping its destination; or (local destinations) another ckptconv process is writing into the destination: a conversion that is not partitioned excludes every other run, partitions and finalize exclude only such a conversion.") \
	X(ERR_IDEMPOTENCY_CONFLICT, "idempotency_conflict", 409, \
	  "The Idempotency-Key was used before with a different body.") \
	X(ERR_PAYLOAD_TOO_LARGE, "payload_too_large", 413, \
	  "The request body is larger than 64 KiB.") \
	X(ERR_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415, \
	  "The request body is not application/json.") \
	X(ERR_QUEUE_FULL, "queue_full", 429, \
	  "Too many jobs are queued; retry later.") \
	X(ERR_DRAINING, "draining", 503, \
	  "The service is shutting down and accepts no new jobs.") \
	X(ERR_NOT_READY, "not_ready", 503, \
	  "The service is not ready (starting, draining or its state dir is not writable).") \
	X(ERR_UNHEALTHY, "unhealthy", 503, \
	  "ckptconv healthcheck got no HTTP 200 from the daemon (no answer, a timeout or another status).") \
	X(ERR_SERVER_UNREACHABLE, "server_unreachable", 502, \
	  "ckptconv jobs got no answer from the daemon (refused, timed out, or the connection broke).") \
	X(ERR_SERVER_BAD_RESPONSE, "server_bad_response", 502, \
	  "The daemon's answer is not what its API describes (not JSON, a member of the wrong type, over 64 MiB, an event stream that keeps ending with no news of the job).") \
	X(ERR_JOB_FINISHED, "job_finished", 409, \
	  "The job had already finished: there was nothing to cancel.") \
	/* source checkpoint */ \
	X(ERR_SOURCE_NOT_FOUND, "source_not_found", 422, \
	  "The source does not exist.") \
	X(ERR_SOURCE_UNREADABLE, "source_unreadable", 422, \
	  "The source cannot be read.") \
	X(ERR_INVALID_LOCATION, "invalid_location", 400, \
	  "A location is empty or uses a scheme this build cannot serve.") \
	X(ERR_NOT_A_CHECKPOINT, "not_a_checkpoint", 422, \
	  "The source holds no safetensors checkpoint (unfinished `.ckptconv-tmp.*` files do not count).") \
	X(ERR_INDEX_INVALID, "index_invalid", 422, \
	  CKPT_INDEX_NAME " is not a valid index.") \
	X(ERR_INDEX_MISSING_FILE, "index_missing_file", 422, \
	  "The index names a file that does not exist.") \
	X(ERR_WEIGHT_MAP_MISMATCH, "weight_map_mismatch", 422, \
	  "The index's weight_map disagrees with the tensors the files hold.") \
	X(ERR_MISSING_CONFIG, "missing_config", 422, \
	  "config.json is missing.") \
	X(ERR_CONFIG_INVALID, "config_invalid", 422, \
	  "config.json is not valid JSON, or a key has the wrong type or a value out of range.") \
	X(ERR_MISSING_CONFIG_KEY, "missing_config_key", 422, \
	  "config.json lacks a key the conversion needs.") \
	X(ERR_UNSUPPORTED_MODEL, "unsupported_model", 422, \
	  "The checkpoint is not a model family ckptconv converts (Ling 2.0).") \
	X(ERR_AMBIGUOUS_LAYOUT, "ambiguous_layout", 422, \
	  "Tensor names of both the HF and the native layout are present.") \
	X(ERR_UNKNOWN_LAYOUT, "unknown_layout", 422, \
	  "No tensor name identifies the HF or the native layout.") \
	X(ERR_ALREADY_IN_LAYOUT, "already_in_layout", 422, \
	  "The checkpoint already has the requested layout.") \
	X(ERR_LFS_POINTER, "lfs_pointer", 422, \
	  "A weight file, the index or config.json is a git-lfs pointer, not the file (run git lfs pull).") \
	/* safetensors */ \
	X(ERR_FILE_TRUNCATED, "file_truncated", 422, \
	  "A safetensors file is shorter than its header says.") \
	X(ERR_HEADER_TOO_LARGE, "header_too_large", 422, \
	  "A safetensors header size is over 100,000,000 bytes.") \
	X(ERR_HEADER_OUT_OF_BOUNDS, "header_out_of_bounds", 422, \
	  "A safetensors header size is larger than the file.") \
	X(ERR_HEADER_INVALID_JSON, "header_invalid_json", 422, \
	  "A safetensors header is not valid JSON.") \
	X(ERR_HEADER_NOT_OBJECT, "header_not_object", 422, \
	  "A safetensors header is not a JSON object.") \
	X(ERR_DUPLICATE_TENSOR, "duplicate_tensor", 422, \
	  "A tensor name occurs twice.") \
	X(ERR_UNKNOWN_DTYPE, "unknown_dtype", 422, \
	  "A tensor has a dtype safetensors does not define.") \
	X(ERR_INVALID_SHAPE, "invalid_shape", 422, \
	  "A tensor shape is not a list of non-negative integers.") \
	X(ERR_INVALID_OFFSETS, "invalid_offsets", 422, \
	  "A tensor's data_offsets are not [begin, end] with begin <= end.") \
	X(ERR_OFFSETS_MISMATCH, "offsets_mismatch", 422, \
	  "A tensor's data_offsets disagree with its shape and dtype.") \
	X(ERR_INVALID_TENSOR, "invalid_tensor", 422, \
	  "A tensor of a dtype narrower than a byte (F4, F6_E2M3, F6_E3M2) has an element count whose bits are not a whole number of bytes.") \
	X(ERR_OVERLAPPING_TENSORS, "overlapping_tensors", 422, \
	  "Two tensors' data regions overlap.") \
	X(ERR_DATA_HOLE, "data_hole", 422, \
	  "The data area has bytes no tensor covers.") \
	X(ERR_OFFSETS_OUT_OF_BOUNDS, "offsets_out_of_bounds", 422, \
	  "A tensor's data lies past the end of the file.") \
	X(ERR_TRAILING_BYTES, "trailing_bytes", 422, \
	  "The file continues past the end of its data.") \
	X(ERR_INVALID_METADATA, "invalid_metadata", 422, \
	  "__metadata__ is not an object of strings.") \
	/* sharded training checkpoints (NeMo Automodel) */ \
	X(ERR_SHARDING_INFO_MISSING, "sharding_info_missing", 422, \
	  "A shard of an Automodel sharded checkpoint has no __metadata__.DCP_SHARDING_INFO.") \
	X(ERR_SHARDING_INFO_INVALID, "sharding_info_invalid", 422, \
	  "DCP_SHARDING_INFO is not JSON, lacks a tensor of the header, names one the header lacks, or gives offsets that are not one non-negative integer per dimension.") \
	X(ERR_HF_METADATA_MISSING, "hf_metadata_missing", 422, \
	  "A sharded Automodel checkpoint lacks .hf_metadata/ or its fqn_to_file_index_mapping.json.") \
	X(ERR_MAPPING_INVALID, "mapping_invalid", 422, \
	  "fqn_to_file_index_mapping.json is not an object of names to file indices 1..99999, or fqn_to_dtype_mapping.json not one of names to safetensors dtypes.") \
	X(ERR_CHUNK_OVERLAP, "chunk_overlap", 422, \
	  "Two chunks of one tensor cover the same elements (or one shard holds a tensor twice).") \
	X(ERR_CHUNK_GAP, "chunk_gap", 422, \
	  "The chunks of a tensor leave elements of its full shape uncovered (a shard missing, or a damaged DCP_SHARDING_INFO).") \
	X(ERR_SHARD_MISSING, "shard_missing", 422, \
	  "A shard of a sharded checkpoint is missing, its file named: the mapping names a tensor no shard holds (one its rank saved whole; only a tied lm_head.weight may be absent), or a tensor is smaller than config.json says.") \
	X(ERR_CHUNK_DTYPE_MISMATCH, "chunk_dtype_mismatch", 422, \
	  "The chunks of one tensor have different dtypes.") \
	X(ERR_CHUNK_NDIM_MISMATCH, "chunk_ndim_mismatch", 422, \
	  "The chunks of one tensor have different numbers of dimensions.") \
	X(ERR_CHUNK_OUT_OF_BOUNDS, "chunk_out_of_bounds", 422, \
	  "An empty chunk's offsets lie past the full shape the other chunks give the tensor.") \
	X(ERR_TENSOR_NOT_MAPPED, "tensor_not_mapped", 422, \
	  "A tensor of the shards is in no output file of fqn_to_file_index_mapping.json.") \
	/* model rules */ \
	X(ERR_QKV_SHAPE_MISMATCH, "qkv_shape_mismatch", 422, \
	  "A fused query_key_value tensor has the wrong row count.") \
	X(ERR_QKV_MISMATCH, "qkv_mismatch", 422, \
	  "q/k/v projections of one layer differ in dtype or column count.") \
	X(ERR_MISSING_EXPERTS, "missing_experts", 422, \
	  "A MoE layer (first_k_dense_replace on, the MTP layer included) has no routed experts, or lacks some experts' projections or one of its two packed tensors; nothing is written.") \
	X(ERR_EXPERT_SHAPE_MISMATCH, "expert_shape_mismatch", 422, \
	  "Experts of one layer have different shapes.") \
	X(ERR_EXPERT_OUT_OF_RANGE, "expert_out_of_range", 422, \
	  "An expert number is not below num_experts.") \
	X(ERR_GROUPED_SHAPE_MISMATCH, "grouped_shape_mismatch", 422, \
	  "A grouped expert tensor does not have the shape config.json implies.") \
	X(ERR_QUANTIZED_INPUT, "quantized_input", 422, \
	  "FP8 tensors or *_scale_inv scales are not supported, nor transposing or casting a tensor of F4, F6_E2M3, F6_E3M2 or C64 (copied as they are elsewhere).") \
	X(ERR_UNSUPPORTED_CAST, "unsupported_cast", 422, \
	  "The tensor's dtype cannot be cast to the target dtype.") \
	X(ERR_UNSUPPORTED_TENSOR, "unsupported_tensor", 422, \
	  "A tensor has no place in the target layout: the output could not be converted back.") \
	X(ERR_MANIFEST_MISMATCH, "manifest_mismatch", 409, \
	  "The destination holds a plan manifest of a different plan.") \
	X(ERR_CHECKSUM_MISMATCH, "checksum_mismatch", 409, \
	  "A published file does not have the size or CRC-32C its destination's checksum record gives.") \
	X(ERR_PARTITION_INCOMPLETE, "partition_incomplete", 409, \
	  "Some planned output files of a partitioned conversion are missing.") \
	X(ERR_DESTINATION_INCOMPLETE, "destination_incomplete", 409, \
	  "The destination does not hold a finished conversion: a file its plan manifest lists is missing or not in its checksum record, its partitions are not finalized, or it holds no plan manifest or checksum record.") \
	/* destination and execution */ \
	X(ERR_DESTINATION_NOT_WRITABLE, "destination_not_writable", 422, \
	  "The destination cannot be created or written.") \
	X(ERR_DESTINATION_NOT_EMPTY, "destination_not_empty", 409, \
	  "The destination holds files; pass overwrite to replace them.") \
	X(ERR_INSUFFICIENT_SPACE, "insufficient_space", 507, \
	  "The destination's filesystem lacks room for the output.") \
	X(ERR_SOURCE_TRUNCATED, "source_truncated", 422, \
	  "A source file shrank while it was being converted.") \
	X(ERR_SOURCE_CHANGED, "source_changed", 409, \
	  "A source file or object changed while the job read it, or since the plan a partition of the job was made from (another inode, size, mtime or ctime; another ETag or VersionId); nothing of the job is published.") \
	X(ERR_IO_ERROR, "io_error", 500, \
	  "Reading or writing a file failed (also a write past the file size limit, ulimit -f: \"File too large\"); what was written is removed.") \
	X(ERR_CANCELLED, "cancelled", 409, \
	  "The conversion was cancelled.") \
	X(ERR_INTERRUPTED, "interrupted", 500, \
	  "The service stopped while the job was running, more than 3 times; what the job left in its destination was removed.") \
	/* object storage: kept together, err_is_s3() tests the range */ \
	X(ERR_S3_ERROR, "s3_error", 502, \
	  "The object store answered with an error.") \
	X(ERR_S3_ACCESS_DENIED, "s3_access_denied", 502, \
	  "The object store refused the credentials or the request.") \
	X(ERR_S3_NO_SUCH_BUCKET, "s3_no_such_bucket", 422, \
	  "The bucket does not exist.") \
	X(ERR_S3_UNAVAILABLE, "s3_unavailable", 502, \
	  "The object store could not be reached after retries.") \
	X(ERR_S3_BAD_RESPONSE, "s3_bad_response", 502, \
	  "The object store's answer was malformed (e.g. a range not honoured).") \
	X(ERR_S3_CONFIG, "s3_config", 400, \
	  "The S3 configuration (endpoint, region, addressing style, CA bundle) is invalid.") \
	X(ERR_S3_CREDENTIALS, "s3_credentials", 502, \
	  "No credentials for the object store could be obtained: the source in use (environment, web identity, shared files, container endpoint, instance metadata) failed, answered something malformed or expired credentials, or none is configured; the message names the source.") \
	X(ERR_S3_WRONG_REGION, "s3_wrong_region", 502, \
	  "The bucket is in another region than the one configured, and the request could not be sent there (S3 named an endpoint outside the configured one, or kept redirecting); the message names the bucket's region.") \
	X(ERR_CLOCK_SKEW, "clock_skew", 502, \
	  "The object store refused the request time as too far from its own (RequestTimeTooSkewed), still after signing again with the time it sent; the clock of this machine is wrong.") \
	/* internal */ \
	X(ERR_PLAN_INVALID, "plan_invalid", 500, \
	  "The conversion plan is inconsistent (a bug).") \
	X(ERR_INTERNAL_ERROR, "internal_error", 500, \
	  "An unexpected internal failure.")

#endif
