/* SPDX-License-Identifier: MIT */
/*
 * convert_options: the options of a conversion, their rules and their one
 * JSON form (convert_options.h).  Reading checks each member alone and
 * names the member at fault, so that the API can answer with the field;
 * the rules between members are convert_options_check's, which the CLI,
 * the API and conversion_prepare all call.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/convert_options.h"
#include "ckptconv/err.h"
#include "ckptconv/exclude.h"
#include "ckptconv/partition.h"
#include "ckptconv/util.h"

void convert_options_init(struct convert_options *o)
{
	memset(o, 0, sizeof(*o));
	o->to = LAYOUT_UNKNOWN;
	o->dtype = DTYPE_CHOICE_AUTO;
	o->durable = true;
}

const char *convert_io_name(enum convert_io io)
{
	switch (io) {
	case CONVERT_IO_MMAP:
		return "mmap";
	case CONVERT_IO_PREAD:
		return "pread";
	case CONVERT_IO_AUTO:
		break;
	}
	return "auto";
}

int convert_io_parse(const char *text)
{
	if (strcmp(text, "auto") == 0)
		return CONVERT_IO_AUTO;
	if (strcmp(text, "mmap") == 0)
		return CONVERT_IO_MMAP;
	if (strcmp(text, "pread") == 0)
		return CONVERT_IO_PREAD;
	return -1;
}

int convert_options_check(const struct convert_options *o, const char **field, struct err *e)
{
	/* A dtype with to hf is the source's to take: a consolidation does
	 * (docs/consolidation.md), a model adapter refuses it. */
	struct adapter_options ao = {.to = o->to,
				     .dtype = o->to == LAYOUT_HF ? DTYPE_CHOICE_AUTO : o->dtype,
				     .ep_size = o->ep_size,
				     .ep_rank = o->ep_rank};

	if (adapter_options_check(&ao, field, e) < 0)
		return -1;
	if (o->resume && o->overwrite) {
		if (field)
			*field = "resume";
		return err_set(e, ERR_INVALID_OPTION,
			       "resume and overwrite exclude each other: resume keeps the files an "
			       "interrupted run of the same plan finished, overwrite removes them");
	}
	if (o->partition_count && partition_check(o->partition_index, o->partition_count, e) < 0) {
		if (field)
			*field = "partition";
		return -1;
	}
	return 0;
}

/* ---- writing ------------------------------------------------------------ */

static json_t *json_u64(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

json_t *convert_options_to_json(const struct convert_options *o, unsigned members)
{
	json_t *j = json_object();

	if (members & CONVERT_JSON_TO)
		json_object_set_new(j, "to", json_string(layout_name(o->to)));
	if (members & CONVERT_JSON_PLAN) {
		json_object_set_new(j, "dtype", json_string(dtype_choice_name(o->dtype)));
		json_object_set_new(j, "max_shard_size",
				    json_u64(o->max_shard_size ? o->max_shard_size :
								 PLAN_MAX_SHARD_SIZE_DEFAULT));
		json_object_set_new(j, "exclude",
				    o->exclude ? json_string(o->exclude) : json_null());
		if (o->allow_gaps)
			json_object_set_new(j, "allow_gaps", json_true());
		json_object_set_new(j, "expert_parallel",
				    o->ep_size ?
					    json_pack("{s:I, s:I}", "size", (json_int_t)o->ep_size,
						      "rank", (json_int_t)o->ep_rank) :
					    json_null());
	}
	if (members & CONVERT_JSON_RUN) {
		json_object_set_new(j, "max_bytes_per_second",
				    o->max_bytes_per_second ? json_u64(o->max_bytes_per_second) :
							      json_null());
		json_object_set_new(j, "overwrite", json_boolean(o->overwrite));
		if (o->resume)
			json_object_set_new(j, "resume", json_true());
		json_object_set_new(j, "partition",
				    o->partition_count ?
					    json_pack("{s:I, s:I}", "index",
						      (json_int_t)o->partition_index, "count",
						      (json_int_t)o->partition_count) :
					    json_null());
		/* Only when asked for: records without it stay as they were. */
		if (o->io != CONVERT_IO_AUTO)
			json_object_set_new(j, "io", json_string(convert_io_name(o->io)));
	}
	return j;
}

/* ---- reading ------------------------------------------------------------ */

/* Where the member being read is, for errors. */
struct reader {
	const char *prefix;
	char *field; /* CONVERT_FIELD_MAX bytes, or NULL */
	struct err *e;
};

static int fault(struct reader *r, const char *member, enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Sets the error: code, field prefix+member, and the message after the
 * field's name. */
static int fault(struct reader *r, const char *member, enum err_code code, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (r->field)
		snprintf(r->field, CONVERT_FIELD_MAX, "%s%s", r->prefix, member);
	return err_set(r->e, code, "%s%s %s", r->prefix, member, msg);
}

static bool given(const json_t *v)
{
	return v && !json_is_null(v);
}

/* Refuses members of obj other than `allowed`. */
static int only_members(struct reader *r, const json_t *obj, const char *member,
			const char *const *allowed)
{
	const char *key, *const *a;
	char path[CONVERT_FIELD_MAX];
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		for (a = allowed; *a && strcmp(*a, key) != 0; a++)
			;
		if (*a)
			continue;
		snprintf(path, sizeof(path), "%s.%s", member, key);
		if (r->field)
			snprintf(r->field, CONVERT_FIELD_MAX, "%s%s", r->prefix, path);
		return err_set(r->e, ERR_UNKNOWN_FIELD, "unknown field '%s%s'", r->prefix, path);
	}
	return 0;
}

/* A size: a non-negative integer of bytes or a string in the size
 * syntax; 0 only when zero_ok. */
static int read_size(struct reader *r, const json_t *obj, const char *member, bool zero_ok,
		     uint64_t *out)
{
	const json_t *v = json_object_get(obj, member);
	struct err local = {0};

	if (!given(v))
		return 0;
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return fault(r, member, ERR_INVALID_FIELD, "must not be negative");
		*out = (uint64_t)json_integer_value(v);
	} else if (json_is_string(v)) {
		if (size_parse(json_string_value(v), out, &local) < 0)
			return fault(r, member, ERR_INVALID_SIZE, "%s", local.msg);
	} else {
		return fault(r, member, ERR_INVALID_FIELD,
			     "must be a size such as \"5GB\" or a number of bytes");
	}
	if (!zero_ok && *out == 0)
		return fault(r, member, ERR_INVALID_FIELD, "must be larger than 0");
	return 0;
}

static int read_to(struct reader *r, const json_t *obj, struct convert_options *o)
{
	const json_t *v = json_object_get(obj, "to");
	const char *s = json_string_value(v);

	if (!given(v))
		return fault(r, "to", ERR_MISSING_FIELD, "is required (\"native\" or \"hf\")");
	if (s && strcmp(s, "native") == 0)
		o->to = LAYOUT_NATIVE;
	else if (s && strcmp(s, "hf") == 0)
		o->to = LAYOUT_HF;
	else
		return fault(r, "to", ERR_INVALID_FIELD, "must be \"native\" or \"hf\"");
	return 0;
}

static int read_dtype(struct reader *r, const json_t *obj, struct convert_options *o)
{
	const json_t *v = json_object_get(obj, "dtype");
	int choice;

	if (!given(v))
		return 0;
	if (!json_is_string(v) || (choice = dtype_choice_parse(json_string_value(v))) < 0)
		return fault(r, "dtype", ERR_INVALID_FIELD,
			     "must be one of auto, bf16, f16, f32, f64, keep");
	o->dtype = (enum dtype_choice)choice;
	return 0;
}

/* Only the cheap check of the pattern here (a request is read on the HTTP
 * thread); it is compiled where the conversion is planned. */
static int read_exclude(struct reader *r, const json_t *obj, struct convert_options *o)
{
	const json_t *v = json_object_get(obj, "exclude");
	struct err local = {0};

	if (!given(v))
		return 0;
	if (!json_is_string(v))
		return fault(r, "exclude", ERR_INVALID_FIELD, "must be a string");
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fault(r, "exclude", ERR_INVALID_FIELD, "contains a NUL character");
	if (exclude_check(json_string_value(v), NULL, &local) < 0) {
		if (r->field)
			snprintf(r->field, CONVERT_FIELD_MAX, "%sexclude", r->prefix);
		return err_set(r->e, local.code, "%s", local.msg);
	}
	o->exclude = json_string_value(v);
	return 0;
}

/* An integer member `name` of the {…} option `member`, from min to max;
 * out of range it is bad_code, about the member itself when whole. */
static int read_u32(struct reader *r, const json_t *obj, const char *member, const char *name,
		    json_int_t min, json_int_t max, enum err_code bad_code, bool whole,
		    uint32_t *out)
{
	const json_t *v = json_object_get(obj, name);
	char path[CONVERT_FIELD_MAX];

	snprintf(path, sizeof(path), "%s.%s", member, name);
	if (!v)
		return fault(r, path, ERR_MISSING_FIELD, "is required");
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return fault(r, whole ? member : path, bad_code,
			     "%s must be an integer from %" JSON_INTEGER_FORMAT
			     " to %" JSON_INTEGER_FORMAT,
			     name, min, max);
	*out = (uint32_t)json_integer_value(v);
	return 0;
}

static int read_expert_parallel(struct reader *r, const json_t *obj, struct convert_options *o)
{
	static const char *const members[] = {"size", "rank", NULL};
	const json_t *v = json_object_get(obj, "expert_parallel");

	if (!given(v))
		return 0;
	if (!json_is_object(v))
		return fault(r, "expert_parallel", ERR_INVALID_FIELD,
			     "must be an object {\"size\", \"rank\"}");
	if (only_members(r, v, "expert_parallel", members) < 0 ||
	    read_u32(r, v, "expert_parallel", "size", 1, UINT32_MAX, ERR_INVALID_FIELD, false,
		     &o->ep_size) < 0 ||
	    read_u32(r, v, "expert_parallel", "rank", 0, UINT32_MAX, ERR_INVALID_FIELD, false,
		     &o->ep_rank) < 0)
		return -1;
	return 0;
}

static int read_bool(struct reader *r, const json_t *obj, const char *member, bool *out)
{
	const json_t *v = json_object_get(obj, member);

	if (!given(v))
		return 0;
	if (!json_is_boolean(v))
		return fault(r, member, ERR_INVALID_FIELD, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

static int read_io(struct reader *r, const json_t *obj, struct convert_options *o)
{
	const json_t *v = json_object_get(obj, "io");
	int io;

	if (!given(v))
		return 0;
	if (!json_is_string(v) || (io = convert_io_parse(json_string_value(v))) < 0)
		return fault(r, "io", ERR_INVALID_FIELD, "must be one of auto, mmap, pread");
	o->io = (enum convert_io)io;
	return 0;
}

static int read_partition(struct reader *r, const json_t *obj, struct convert_options *o)
{
	static const char *const members[] = {"index", "count", NULL};
	const json_t *v = json_object_get(obj, "partition");

	if (!given(v))
		return 0;
	if (!json_is_object(v))
		return fault(r, "partition", ERR_INVALID_PARTITION,
			     "must be an object {\"index\", \"count\"}");
	if (only_members(r, v, "partition", members) < 0 ||
	    read_u32(r, v, "partition", "index", 0, UINT32_MAX, ERR_INVALID_PARTITION, true,
		     &o->partition_index) < 0 ||
	    read_u32(r, v, "partition", "count", 1, UINT32_MAX, ERR_INVALID_PARTITION, true,
		     &o->partition_count) < 0)
		return -1;
	return 0;
}

int convert_options_from_json(const json_t *obj, unsigned members, const char *prefix,
			      struct convert_options *o, char *field, struct err *e)
{
	struct reader r = {.prefix = prefix ? prefix : "", .field = field, .e = e};

	if (field)
		field[0] = '\0';
	if ((members & CONVERT_JSON_TO) && read_to(&r, obj, o) < 0)
		return -1;
	if ((members & CONVERT_JSON_PLAN) &&
	    (read_dtype(&r, obj, o) < 0 ||
	     read_size(&r, obj, "max_shard_size", members & CONVERT_JSON_STORED,
		       &o->max_shard_size) < 0 ||
	     read_exclude(&r, obj, o) < 0 || read_expert_parallel(&r, obj, o) < 0 ||
	     read_bool(&r, obj, "allow_gaps", &o->allow_gaps) < 0))
		return -1;
	if ((members & CONVERT_JSON_RUN) &&
	    (read_size(&r, obj, "max_bytes_per_second", true, &o->max_bytes_per_second) < 0 ||
	     read_bool(&r, obj, "overwrite", &o->overwrite) < 0 ||
	     read_bool(&r, obj, "resume", &o->resume) < 0 || read_partition(&r, obj, o) < 0 ||
	     read_io(&r, obj, o) < 0))
		return -1;
	return 0;
}
