/* SPDX-License-Identifier: MIT */
/*
 * cli_finalize: `ckptconv finalize DST`.  Finishes a conversion that ran in
 * partitions (`convert --partition I/N`): checks that every planned file is
 * present and complete, copies the non-weight files, publishes the index
 * and removes the plan manifest.  On a destination that is already a
 * finished checkpoint it only validates it, so running it twice is safe.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <string.h>

#include "ckptconv/cli.h"
#include "ckptconv/conversion_result.h"
#include "ckptconv/err.h"
#include "ckptconv/finalize.h"
#include "ckptconv/partition.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

static const char usage_text[] =
	"Usage: ckptconv finalize [--no-fsync] [--json] [S3 OPTIONS] DST\n"
	"\n"
	"Finishes a partitioned conversion (convert --partition I/N) in DST (a\n"
	"directory or an s3:// prefix) once every partition has succeeded: checks\n"
	"that every planned file is present with its planned size and header,\n"
	"copies config.json and the other non-weight files from the source, publishes\n"
	"the index last and removes " PARTITION_MANIFEST ".  While a partition's files are\n"
	"missing it fails with partition_incomplete, naming them.  On a finished\n"
	"checkpoint it validates it and succeeds.\n"
	"\n"
	"  --no-fsync             skip the final fsyncs (scratch output)\n"
	"  --json                 print the result (or the error) as JSON on stdout\n"
	CLI_S3_USAGE
	"\n"
	"Exit status: 0 finished, 1 incomplete or error, 2 usage error.\n";

struct finalize_args {
	bool json, help, no_fsync;
	struct cli_s3_flags s3;
	const char *dst;
};

static int parse_args(int argc, char **argv, struct finalize_args *a)
{
	static const struct option long_options[] = {
		{"json", no_argument, NULL, 'j'},
		{"no-fsync", no_argument, NULL, 'n'},
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
		else if (opt == 'n')
			a->no_fsync = true;
		else if (opt == 'h')
			a->help = true;
		else
			return cli_option_error("finalize", a->json, opt, argv[optind - 1]);
	}
	if (a->help)
		return 0;
	if (argc - optind != 1)
		return cli_usage_error("finalize", a->json, "expected one DST");
	a->dst = argv[optind];
	return 0;
}

static void print_result(struct conversion_result *r, const struct finalize_args *a)
{
	char size[32];
	json_t *out;
	size_t i;

	if (a->json) {
		r->destination = xstrdup(a->dst);
		out = conversion_result_to_json(r);
		json_dumpf(out, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(out);
		return;
	}
	for (i = 0; i < r->warnings.len; i++)
		fprintf(stderr, "ckptconv: warning: %s\n", r->warnings.items[i]);
	size_format(r->bytes, size, sizeof(size));
	if (r->already_finished)
		printf("%s is already a finished checkpoint: %" PRIu64
		       " tensor%s (%s) in %zu file%s\n",
		       a->dst, r->tensors, plural_s(r->tensors), size, r->files.len,
		       plural_s(r->files.len));
	else
		printf("finalized %s: %" PRIu64 " tensor%s (%s) in %zu file%s\n", a->dst,
		       r->tensors, plural_s(r->tensors), size, r->files.len,
		       plural_s(r->files.len));
}

int cli_finalize(int argc, char **argv)
{
	struct finalize_options o;
	struct store_config store;
	struct conversion_result r;
	struct finalize_args a;
	struct err e = {0};
	int rc;

	rc = parse_args(argc, argv, &a);
	if (rc != 0 || a.help) {
		if (a.help)
			fputs(usage_text, stdout);
		return rc;
	}
	rc = cli_store_config(&a.s3, &store, a.json);
	if (rc != 0)
		return rc;
	finalize_options_init(&o);
	o.durable = !a.no_fsync;
	o.store = &store;
	if (finalize_destination(a.dst, &o, &r, &e) != 0) {
		cli_print_error(&e, a.json);
		rc = cli_exit_code(&e);
	} else {
		print_result(&r, &a);
		conversion_result_fini(&r);
		rc = EXIT_OK;
	}
	cli_store_config_fini(&store);
	return rc;
}
