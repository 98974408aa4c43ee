/* SPDX-License-Identifier: MIT */
/*
 * cli_inspect: `ckptconv inspect`.  Opens a checkpoint (which validates
 * every safetensors header and the index) and describes it: model family,
 * layout, layers, experts, tensor count, bytes by dtype, files, and with
 * --tensors every tensor.  A damaged file is an error (exit 1); a checkpoint
 * of a family ckptconv does not convert is still described, with the reason.
 * The description is built once as JSON and printed as JSON or as text.
 */
#include <getopt.h>
#include <jansson.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/automodel.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/cli.h"
#include "ckptconv/err.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

static const char usage_text[] =
	"Usage: ckptconv inspect [--json] [--tensors] PATH\n"
	"\n"
	"Describes the checkpoint at PATH (a directory, a .safetensors file or an\n"
	"s3:// prefix) and validates every header: model, layout, layers, experts,\n"
	"tensors, bytes by dtype, files.\n"
	"\n"
	"  --json      print the description as one JSON object\n"
	"  --tensors   list every tensor: name, dtype, shape, file\n"
	CLI_S3_USAGE
	"\n"
	"Exit status: 0 valid, 1 invalid or unreadable, 2 usage error.\n";

struct inspect_args {
	bool json, tensors, help;
	struct cli_s3_flags s3;
	const char *path;
};

static int parse_args(int argc, char **argv, struct inspect_args *a)
{
	static const struct option long_options[] = {
		{"json", no_argument, NULL, 'j'},
		{"tensors", no_argument, NULL, 't'},
		CLI_S3_LONG_OPTIONS,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	memset(a, 0, sizeof(*a));
	a->json = cli_wants_json(argc, argv);
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
		if (cli_s3_flag(&a->s3, opt, optarg))
			continue;
		if (opt == 'j')
			a->json = true;
		else if (opt == 't')
			a->tensors = true;
		else if (opt == 'h')
			a->help = true;
		else
			return cli_option_error("inspect", a->json, opt, argv[optind - 1]);
	}
	if (a->help)
		return 0;
	if (argc - optind != 1)
		return cli_usage_error("inspect", a->json, "expected one PATH");
	a->path = argv[optind];
	return 0;
}

static json_t *shape_json(int ndim, const uint64_t *shape)
{
	json_t *array = json_array();
	int i;

	for (i = 0; i < ndim; i++)
		json_array_append_new(array, json_integer((json_int_t)shape[i]));
	return array;
}

static json_t *strvec_json(const struct strvec *v)
{
	json_t *array = json_array();
	size_t i;

	for (i = 0; i < v->len; i++)
		json_array_append_new(array, json_string(v->items[i]));
	return array;
}

/* model_type and the first architecture as config.json states them. */
static void describe_config(const struct ckpt *c, json_t *out)
{
	json_t *archs;
	const char *type;

	if (!c->config) {
		json_object_set_new(out, "config", json_false());
		return;
	}
	json_object_set_new(out, "config", json_true());
	type = ckpt_config_string(c, "model_type");
	if (type)
		json_object_set_new(out, "model_type", json_string(type));
	archs = json_object_get(c->config, "architectures");
	if (json_is_array(archs) && json_is_string(json_array_get(archs, 0)))
		json_object_set(out, "architecture", json_array_get(archs, 0));
}

/* The routed experts a grouped (native) checkpoint holds: the first
 * dimension of a layer's gate_and_up_projs, fewer than config.json's
 * num_experts in an expert-parallel rank's output; 0 when there is none. */
static uint64_t grouped_experts_held(const struct ckpt *c)
{
	static const char suffix[] = ".mlp.experts.gate_and_up_projs";
	size_t i, len;

	for (i = 0; i < c->ntensors; i++) {
		len = strlen(c->tensors[i].name);
		if (len > sizeof(suffix) - 1 && c->tensors[i].ndim >= 1 &&
		    strcmp(c->tensors[i].name + len - (sizeof(suffix) - 1), suffix) == 0)
			return c->tensors[i].shape[0];
	}
	return 0;
}

/* What the family's adapter knows: layout, layers, experts, the model's
 * dtype and the config.json key it comes from ("default" when none is
 * set).  A checkpoint it cannot describe gets "model_error" instead. */
static void describe_model(const struct ckpt *c, json_t *out)
{
	const struct adapter *adapter;
	struct model_info info;
	struct err e = {0};

	memset(&info, 0, sizeof(info));
	adapter = adapter_for(c, &e);
	if (!adapter || adapter->describe(c, &info, &e) < 0) {
		json_object_set_new(out, "model_error",
				    json_pack("{s:s, s:s}", "code",
					      err_name(e.code), "message",
					      e.msg));
		return;
	}
	json_object_set_new(out, "adapter", json_string(adapter->name));
	json_object_set_new(out, "layout", json_string(layout_name(info.layout)));
	json_object_set_new(out, "layers", json_integer((json_int_t)info.layers));
	json_object_set_new(out, "mtp_layers", json_integer((json_int_t)info.mtp_layers));
	json_object_set_new(out, "experts", json_integer((json_int_t)info.experts));
	json_object_set_new(out, "experts_layout", json_string(info.experts_layout));
	if (info.experts_layout && strcmp(info.experts_layout, "grouped") == 0)
		json_object_set_new(out, "experts_held",
				    json_integer((json_int_t)grouped_experts_held(c)));
	json_object_set_new(out, "dtype",
			    info.dtype != DTYPE_INVALID ? json_string(dtype_name(info.dtype)) :
							  json_null());
	json_object_set_new(out, "dtype_source",
			    json_string(info.dtype_key ? info.dtype_key : "default"));
}

static json_t *describe_files(const struct ckpt *c)
{
	json_t *files = json_array();
	size_t i;

	for (i = 0; i < c->nfiles; i++)
		json_array_append_new(files,
				      json_pack("{s:s, s:I, s:I}", "name", c->files[i].name, "size",
						(json_int_t)c->files[i].size, "tensors",
						(json_int_t)c->files[i].header.ntensors));
	return files;
}

static json_t *describe_bytes_by_dtype(const struct ckpt *c)
{
	uint64_t bytes[DTYPE_COUNT] = {0};
	json_t *by_dtype = json_object();
	size_t i;
	int t;

	for (i = 0; i < c->ntensors; i++)
		if (c->tensors[i].dtype < DTYPE_COUNT)
			bytes[c->tensors[i].dtype] += c->tensors[i].nbytes;
	for (t = 1; t < DTYPE_COUNT; t++)
		if (bytes[t])
			json_object_set_new(by_dtype, dtype_name((enum dtype)t),
					    json_integer((json_int_t)bytes[t]));
	return by_dtype;
}

static json_t *describe_tensors(const struct ckpt *c)
{
	json_t *tensors = json_array();
	const struct ckpt_tensor *t;
	size_t i;

	for (i = 0; i < c->ntensors; i++) {
		t = &c->tensors[i];
		json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:s, s:I}", "name",
							 t->name, "dtype", dtype_name(t->dtype),
							 "shape", shape_json(t->ndim, t->shape),
							 "file", c->files[t->file].name, "bytes",
							 (json_int_t)t->nbytes));
	}
	return tensors;
}

static json_t *describe(const struct ckpt *c, const struct inspect_args *a)
{
	json_t *out = json_object();

	json_object_set_new(out, "location", json_string(a->path));
	describe_config(c, out);
	if (c->config)
		describe_model(c, out);
	json_object_set_new(out, "tensors", json_integer((json_int_t)c->ntensors));
	json_object_set_new(out, "bytes", json_integer((json_int_t)c->total_bytes));
	json_object_set_new(out, "bytes_by_dtype", describe_bytes_by_dtype(c));
	json_object_set_new(out, "index", json_boolean(c->has_index));
	json_object_set_new(out, "files", describe_files(c));
	json_object_set_new(out, "other_files", strvec_json(&c->copy_files));
	json_object_set_new(out, "warnings", strvec_json(&c->warnings));
	if (a->tensors)
		json_object_set_new(out, "tensor_list", describe_tensors(c));
	return out;
}

/* A NeMo Automodel sharded checkpoint (automodel.h): what its shards hold
 * and what consolidating it (convert --to hf) writes. */
static json_t *describe_sharded(const struct ckpt *c, const struct automodel *am,
				const struct inspect_args *a)
{
	json_t *out = json_object(), *sharded = automodel_describe(am, c);

	json_object_set_new(out, "location", json_string(a->path));
	describe_config(c, out);
	json_object_set_new(out, "layout", json_string("hf"));
	json_object_set_new(sharded, "format", json_string("nemo_automodel"));
	json_object_set_new(out, "tensors",
			    json_integer((json_int_t)json_array_size(json_object_get(sharded, "tensors"))));
	json_object_set_new(out, "bytes", json_integer((json_int_t)c->total_bytes));
	json_object_set_new(out, "bytes_by_dtype", describe_bytes_by_dtype(c));
	json_object_set_new(out, "warnings", strvec_json(&c->warnings));
	if (!a->tensors && !a->json)
		json_object_del(sharded, "tensors");
	json_object_set_new(out, "sharded", sharded);
	return out;
}

static const char *text_of(const json_t *o, const char *key, const char *absent)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : absent;
}

static void print_size_line(const char *label, json_int_t bytes)
{
	char size[32];

	size_format((uint64_t)bytes, size, sizeof(size));
	printf("%-14s %s (%lld bytes)\n", label, size, (long long)bytes);
}

static void print_model_text(const json_t *d)
{
	const json_t *model_error = json_object_get(d, "model_error"), *held, *mtp;

	if (!json_is_true(json_object_get(d, "config"))) {
		printf("%-14s none (no config.json)\n", "model:");
		return;
	}
	printf("%-14s %s (%s)\n", "model:", text_of(d, "model_type", "?"),
	       text_of(d, "architecture", "no architecture"));
	if (model_error) {
		printf("%-14s %s: %s\n", "convertible:", text_of(model_error, "code", "?"),
		       text_of(model_error, "message", ""));
		return;
	}
	printf("%-14s %s\n", "layout:", text_of(d, "layout", "?"));
	mtp = json_object_get(d, "mtp_layers");
	if (json_integer_value(mtp) > 0)
		printf("%-14s %lld + %lld MTP (layers.%lld)\n", "layers:",
		       (long long)json_integer_value(json_object_get(d, "layers")),
		       (long long)json_integer_value(mtp),
		       (long long)json_integer_value(json_object_get(d, "layers")));
	else
		printf("%-14s %lld\n",
		       "layers:", (long long)json_integer_value(json_object_get(d, "layers")));
	held = json_object_get(d, "experts_held");
	if (json_is_integer(held) && json_integer_value(held) > 0 &&
	    json_integer_value(held) < json_integer_value(json_object_get(d, "experts")))
		printf("%-14s %lld of %lld (%s: one expert-parallel rank's share)\n", "experts:",
		       (long long)json_integer_value(held),
		       (long long)json_integer_value(json_object_get(d, "experts")),
		       text_of(d, "experts_layout", "?"));
	else
		printf("%-14s %lld (%s)\n",
		       "experts:", (long long)json_integer_value(json_object_get(d, "experts")),
		       text_of(d, "experts_layout", "?"));
	if (strcmp(text_of(d, "dtype_source", ""), "default") == 0)
		printf("%-14s %s (default: config.json sets neither dtype nor torch_dtype)\n",
		       "dtype:", text_of(d, "dtype", "?"));
	else
		printf("%-14s %s (config.json \"%s\")\n",
		       "dtype:", text_of(d, "dtype", "not bfloat16, float16 or float32"),
		       text_of(d, "dtype_source", "?"));
}

static void print_shape(const json_t *shape)
{
	size_t i;
	json_t *dim;

	putchar('[');
	json_array_foreach(shape, i, dim)
		printf("%s%lld", i ? ", " : "", (long long)json_integer_value(dim));
	putchar(']');
}

static void print_sharded_text(const json_t *d)
{
	const json_t *sh = json_object_get(d, "sharded"), *v, *ch;
	size_t i, k, nchunks = 0;

	printf("%-14s %s\n", "location:", text_of(d, "location", ""));
	json_array_foreach(json_object_get(sh, "ranks"), i, v)
		nchunks += (size_t)json_integer_value(json_object_get(v, "chunks"));
	printf("%-14s NeMo Automodel sharded checkpoint: %zu ranks, %zu chunks "
	       "(convert --to hf consolidates it)\n",
	       "format:", json_array_size(json_object_get(sh, "ranks")), nchunks);
	if (json_is_true(json_object_get(d, "config")))
		printf("%-14s %s (%s)\n", "model:", text_of(d, "model_type", "?"),
		       text_of(d, "architecture", "no architecture"));
	printf("%-14s %lld\n",
	       "tensors:", (long long)json_integer_value(json_object_get(d, "tensors")));
	print_size_line("bytes:", json_integer_value(json_object_get(d, "bytes")));
	json_array_foreach(json_object_get(sh, "ranks"), i, v)
		printf("  rank %-5lld %-40s %8lld chunks\n",
		       (long long)json_integer_value(json_object_get(v, "rank")),
		       text_of(v, "file", ""),
		       (long long)json_integer_value(json_object_get(v, "chunks")));
	printf("%-14s %zu\n", "output files:", json_array_size(json_object_get(sh, "output_files")));
	json_array_foreach(json_object_get(sh, "output_files"), i, v)
		printf("  %s\n", json_string_value(v));
	json_array_foreach(json_object_get(d, "warnings"), i, v)
		printf("warning: %s\n", json_string_value(v));
	printf("%-14s valid (chunks tile every tensor)\n", "headers:");
	json_array_foreach(json_object_get(sh, "tensors"), i, v) {
		printf("%s %s ", text_of(v, "name", ""), text_of(v, "dtype", ""));
		print_shape(json_object_get(v, "shape"));
		printf(" -> %s:", text_of(v, "file", ""));
		json_array_foreach(json_object_get(v, "chunks"), k, ch) {
			printf(" rank %lld ", (long long)json_integer_value(json_object_get(ch, "rank")));
			print_shape(json_object_get(ch, "shape"));
			putchar('@');
			print_shape(json_object_get(ch, "offsets"));
		}
		putchar('\n');
	}
}

static void print_text(const json_t *d)
{
	const char *key;
	json_t *v;
	size_t i;
	char size[32];

	printf("%-14s %s\n", "location:", text_of(d, "location", ""));
	print_model_text(d);
	printf("%-14s %lld\n",
	       "tensors:", (long long)json_integer_value(json_object_get(d, "tensors")));
	print_size_line("bytes:", json_integer_value(json_object_get(d, "bytes")));
	json_object_foreach(json_object_get(d, "bytes_by_dtype"), key, v) {
		size_format((uint64_t)json_integer_value(v), size, sizeof(size));
		printf("  %-12s %s\n", key, size);
	}
	printf("%-14s %zu%s\n", "files:", json_array_size(json_object_get(d, "files")),
	       json_is_true(json_object_get(d, "index")) ? " (with index)" : "");
	json_array_foreach(json_object_get(d, "files"), i, v) {
		size_format((uint64_t)json_integer_value(json_object_get(v, "size")), size,
			    sizeof(size));
		printf("  %-40s %12s %8lld tensor%s\n", text_of(v, "name", ""), size,
		       (long long)json_integer_value(json_object_get(v, "tensors")),
		       plural_s((unsigned long long)json_integer_value(json_object_get(v, "tensors"))));
	}
	json_array_foreach(json_object_get(d, "other_files"), i, v)
		printf("  %-40s (copied as is)\n", json_string_value(v));
	json_array_foreach(json_object_get(d, "warnings"), i, v)
		printf("warning: %s\n", json_string_value(v));
	printf("%-14s valid\n", "headers:");
	json_array_foreach(json_object_get(d, "tensor_list"), i, v) {
		printf("%s %s ", text_of(v, "name", ""), text_of(v, "dtype", ""));
		print_shape(json_object_get(v, "shape"));
		printf(" %s\n", text_of(v, "file", ""));
	}
}

int cli_inspect(int argc, char **argv)
{
	struct inspect_args a;
	struct store_config store = {0};
	struct automodel *am = NULL;
	struct ckpt *c = NULL;
	struct err e = {0};
	json_t *description;
	int rc;

	rc = parse_args(argc, argv, &a);
	if (rc != 0 || a.help) {
		if (a.help)
			fputs(usage_text, stdout);
		goto out;
	}
	rc = cli_store_config(&a.s3, &store, a.json);
	if (rc != 0)
		goto out;
	/* A NeMo Automodel sharded checkpoint is described as one (automodel.h). */
	rc = automodel_open(a.path, &store, false, &c, &am, &e);
	if (rc == 1)
		rc = ckpt_open_config(a.path, 0, &store, &c, &e);
	if (rc < 0) {
		cli_print_error(&e, a.json);
		rc = cli_exit_code(&e);
		goto out;
	}
	description = am ? describe_sharded(c, am, &a) : describe(c, &a);
	if (a.json) {
		json_dumpf(description, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
	} else if (am) {
		print_sharded_text(description);
	} else {
		print_text(description);
	}
	json_decref(description);
	ckpt_free(c);
	automodel_free(am);
out:
	cli_store_config_fini(&store);
	return rc;
}
