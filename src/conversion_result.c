/* SPDX-License-Identifier: MIT */
/*
 * conversion_result: the one form of a conversion's, a partition's and a
 * finalize's result, as JSON (the CLI's --json, the daemon's job result)
 * and as the CLI's summary line.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/conversion_result.h"
#include "ckptconv/util.h"

void conversion_result_init(struct conversion_result *r)
{
	memset(r, 0, sizeof(*r));
	r->seconds = -1;
}

void conversion_result_fini(struct conversion_result *r)
{
	if (!r)
		return;
	strvec_fini(&r->files);
	strvec_fini(&r->warnings);
	free(r->source);
	free(r->destination);
	free(r->credentials_source);
	conversion_result_init(r);
}

static json_t *strings(const struct strvec *v)
{
	json_t *array = json_array();
	size_t i;

	for (i = 0; i < v->len; i++)
		json_array_append_new(array, json_string(v->items[i]));
	return array;
}

static json_t *count(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

static double rate(const struct conversion_result *r)
{
	uint64_t written = r->bytes > r->kept_data_bytes ? r->bytes - r->kept_data_bytes : 0;

	return r->seconds > 0 ? (double)written / r->seconds : 0;
}

json_t *conversion_result_to_json(const struct conversion_result *r)
{
	json_t *j = json_object();

	json_object_set_new(j, "files", strings(&r->files));
	json_object_set_new(j, "tensors", count(r->tensors));
	json_object_set_new(j, "bytes", count(r->bytes));
	json_object_set_new(j, "file_bytes", count(r->file_bytes));
	if (r->seconds >= 0) {
		json_object_set_new(j, "seconds", json_real(r->seconds));
		json_object_set_new(j, "bytes_per_second", json_real(rate(r)));
	}
	json_object_set_new(j, "warnings", strings(&r->warnings));
	if (!r->finalize) {
		json_object_set_new(j, "kept_files", count(r->kept_files));
		json_object_set_new(j, "kept_bytes", count(r->kept_bytes));
	}
	if (r->partition_count)
		json_object_set_new(j, "partition",
				    json_pack("{s:o, s:o, s:o}", "index", count(r->partition_index),
					      "count", count(r->partition_count), "planned_files",
					      count(r->planned_files)));
	if (r->finalize)
		json_object_set_new(j, "finalize",
				    json_pack("{s:s?, s:b}", "source", r->source,
					      "already_finished", r->already_finished));
	if (r->destination)
		json_object_set_new(j, "destination", json_string(r->destination));
	if (r->credentials_source)
		json_object_set_new(j, "credentials_source", json_string(r->credentials_source));
	return j;
}

/* The *.safetensors files among r's files. */
static size_t weight_files(const struct conversion_result *r)
{
	static const char suffix[] = ".safetensors";
	size_t i, n = 0, len;

	for (i = 0; i < r->files.len; i++) {
		len = strlen(r->files.items[i]);
		n += len > sizeof(suffix) - 1 &&
		     strcmp(r->files.items[i] + len - (sizeof(suffix) - 1), suffix) == 0;
	}
	return n;
}

/* What a resumed run kept, when it kept anything. */
static void print_kept(FILE *out, const struct conversion_result *r)
{
	char size[32];

	if (!r->kept_files)
		return;
	size_format(r->kept_bytes, size, sizeof(size));
	fprintf(out, "kept %" PRIu64 " file%s (%s) an interrupted run had published\n",
		r->kept_files, r->kept_files == 1 ? "" : "s", size);
}

void conversion_result_print(FILE *out, const struct conversion_result *r, const char *dst)
{
	double seconds = r->seconds > 0 ? r->seconds : 0;
	size_t files = weight_files(r);
	char size[32], speed[32];

	size_format(r->bytes, size, sizeof(size));
	size_format((uint64_t)rate(r), speed, sizeof(speed));
	if (!r->partition_count) {
		fprintf(out,
			"converted %" PRIu64 " tensor%s (%s) into %zu file%s in %.2f s (%s/s): %s\n",
			r->tensors, plural_s(r->tensors), size, files, plural_s(files), seconds, speed,
			dst);
		print_kept(out, r);
		return;
	}
	fprintf(out,
		"partition %" PRIu32 "/%" PRIu32 ": converted %" PRIu64 " tensor%s (%s) into %zu of"
		" %" PRIu64 " file%s in %.2f s (%s/s): %s\n" CONVERSION_FINALIZE_HINT "\n",
		r->partition_index, r->partition_count, r->tensors, plural_s(r->tensors), size, files,
		r->planned_files, plural_s(r->planned_files), seconds, speed, dst, dst,
		r->partition_count);
	print_kept(out, r);
}
