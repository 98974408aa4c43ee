/* SPDX-License-Identifier: MIT */
/*
 * cli_verify: `ckptconv verify EXPECTED ACTUAL`.  Compares two checkpoints
 * tensor by tensor (names, dtypes, shapes, bytes), printing each difference
 * and a summary.  Exit 0 when they hold the same tensors, 1 on a difference
 * or when a side cannot be read, 2 on a usage error.  `ckptconv verify
 * --checksums DST` instead reads every file DST's checksum records name
 * again (manifest.h): exit 1 with checksum_mismatch naming the first that
 * differs, or destination_incomplete naming the first file the plan
 * manifest lists that is missing or not recorded.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "ckptconv/cli.h"
#include "ckptconv/err.h"
#include "ckptconv/manifest.h"
#include "ckptconv/store.h"
#include "ckptconv/verify.h"

#define DEFAULT_MAX_LINES 50

static const char usage_text[] =
	"Usage: ckptconv verify [--json] [--max-lines N] EXPECTED ACTUAL\n"
	"       ckptconv verify [--json] --checksums DST\n"
	"\n"
	"Compares two checkpoints tensor by tensor: the same names, and for each the\n"
	"same dtype, shape and bytes.  File names, shard split and header order do not\n"
	"matter.  With --checksums, reads every file a conversion into DST recorded in\n"
	"its checksum records (ckptconv-sums*.json) again and compares its size and\n"
	"CRC-32C with the record, then checks that every file its plan manifest\n"
	"(ckptconv-plan.json) lists is present and recorded.\n"
	"\n"
	"  --checksums     check DST's files against its checksum records\n"
	"  --json          print the summary (or the error) as JSON on stdout\n"
	"  --max-lines N   print at most N differences (default 50)\n"
	CLI_S3_USAGE
	"\n"
	"Exit status: 0 equal, 1 different or unreadable, 2 usage error.\n";

struct verify_args {
	bool json, help, checksums;
	struct cli_s3_flags s3;
	unsigned long long max_lines;
	const char *expected, *actual;
};

static int parse_args(int argc, char **argv, struct verify_args *a)
{
	static const struct option long_options[] = {
		{"json", no_argument, NULL, 'j'},
		{"max-lines", required_argument, NULL, 'm'},
		{"checksums", no_argument, NULL, 'c'},
		CLI_S3_LONG_OPTIONS,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	memset(a, 0, sizeof(*a));
	a->max_lines = DEFAULT_MAX_LINES;
	a->json = cli_wants_json(argc, argv);
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
		if (cli_s3_flag(&a->s3, opt, optarg))
			continue;
		if (opt == 'j') {
			a->json = true;
		} else if (opt == 'h') {
			a->help = true;
		} else if (opt == 'c') {
			a->checksums = true;
		} else if (opt == 'm') {
			if (cli_parse_uint(optarg, 0, 1000000000, &a->max_lines) < 0)
				return cli_usage_error("verify", a->json,
						       "--max-lines wants a whole number, not '%s'",
						       optarg);
		} else {
			return cli_option_error("verify", a->json, opt, argv[optind - 1]);
		}
	}
	if (a->help)
		return 0;
	if (a->checksums) {
		if (argc - optind != 1)
			return cli_usage_error("verify", a->json, "--checksums expects DST alone");
		a->actual = argv[optind];
		return 0;
	}
	if (argc - optind != 2)
		return cli_usage_error("verify", a->json, "expected EXPECTED and ACTUAL");
	a->expected = argv[optind];
	a->actual = argv[optind + 1];
	return 0;
}

static void print_summary(const struct verify_report *r, bool json)
{
	json_t *summary;

	if (json) {
		summary = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "equal",
				    r->differences == 0, "tensors_compared",
				    (json_int_t)r->tensors_compared, "differences",
				    (json_int_t)r->differences, "only_expected",
				    (json_int_t)r->only_expected, "only_actual",
				    (json_int_t)r->only_actual, "dtype_mismatch",
				    (json_int_t)r->dtype_mismatch, "shape_mismatch",
				    (json_int_t)r->shape_mismatch, "bytes_mismatch",
				    (json_int_t)r->bytes_mismatch, "layouts_differ", r->layouts_differ);
		json_dumpf(summary, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(summary);
		return;
	}
	if (r->differences == 0) {
		printf("equal: %zu tensors compared\n", r->tensors_compared);
		return;
	}
	printf("different: %zu difference%s (%zu only in expected, %zu only in actual, "
	       "%zu dtype, %zu shape, %zu bytes) among %zu tensors compared\n",
	       r->differences, r->differences == 1 ? "" : "s", r->only_expected, r->only_actual,
	       r->dtype_mismatch, r->shape_mismatch, r->bytes_mismatch, r->tensors_compared);
}

/* --checksums: every recorded file read again. */
static int verify_checksums(const struct verify_args *a, const struct store_config *cfg)
{
	struct store *dst = NULL;
	uint64_t files = 0, bytes = 0;
	struct err e = {0};
	json_t *summary;

	if (store_open_config(a->actual, cfg, &dst, &e) < 0 ||
	    manifest_verify(dst, &files, &bytes, &e) < 0) {
		store_free(dst);
		cli_print_error(&e, a->json);
		return EXIT_FAILED;
	}
	store_free(dst);
	if (a->json) {
		summary = json_pack("{s:b, s:I, s:I}", "equal", 1, "files_checked",
				    (json_int_t)files, "bytes_checked", (json_int_t)bytes);
		json_dumpf(summary, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(summary);
	} else {
		printf("checksums match: %" PRIu64 " files, %" PRIu64 " bytes read again\n", files,
		       bytes);
	}
	return EXIT_OK;
}

int cli_verify(int argc, char **argv)
{
	struct verify_report report;
	struct store_config store = {0};
	struct verify_args a;
	struct err e = {0};
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
	if (a.checksums) {
		rc = verify_checksums(&a, &store);
		goto out;
	}
	memset(&report, 0, sizeof(report));
	if (verify_checkpoints(a.expected, a.actual, &store, a.json ? stderr : stdout, a.max_lines,
			       &report, &e) < 0) {
		cli_print_error(&e, a.json);
		rc = EXIT_FAILED;
		goto out;
	}
	print_summary(&report, a.json);
	rc = report.differences == 0 ? EXIT_OK : EXIT_FAILED;
out:
	cli_store_config_fini(&store);
	return rc;
}
