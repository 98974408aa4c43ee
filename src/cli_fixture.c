/* SPDX-License-Identifier: MIT */
/*
 * cli_fixture: `ckptconv fixture`.  Writes a deterministic synthetic Ling
 * 2.0 checkpoint in the HF layout (tiny: the golden checkpoint's
 * dimensions; mini: Ling-mini-2.0's), for tests, benchmarks and demos.
 */
#include <getopt.h>
#include <stdint.h>
#include <string.h>

#include "ckptconv/cli.h"
#include "ckptconv/err.h"
#include "ckptconv/fixture.h"
#include "ckptconv/util.h"

#define MAX_LAYERS 1000

static const char usage_text[] =
	"Usage: ckptconv fixture --preset tiny|mini [--layers N] [--dtype bf16|f32]\n"
	"                        [--seed S] [--max-shard-size SIZE] DIR\n"
	"\n"
	"Writes a synthetic Ling 2.0 checkpoint in the HF layout into DIR: random\n"
	"weights (same options, same bytes), config.json, shards and index.\n"
	"\n"
	"  --preset tiny|mini     tiny: H 64, 4 experts (the golden checkpoint's sizes);\n"
	"                         mini: Ling-mini-2.0's sizes (H 2048, 256 experts)\n"
	"  --layers N             hidden layers (default 2; layer 0 is dense)\n"
	"  --dtype bf16|f32       weights' dtype (default bf16; the router stays F32)\n"
	"  --seed S               random seed (default 0)\n"
	"  --max-shard-size SIZE  shard size (default: about 1 GB for mini)\n"
	"\n"
	"Exit status: 0 written, 1 error, 2 usage error.\n";

struct fixture_args {
	struct fixture_options options;
	bool have_preset, help;
	const char *dir;
};

static int apply_option(struct fixture_args *a, int opt, const char *value)
{
	unsigned long long number;
	struct err e = {0};

	switch (opt) {
	case 'p':
		a->have_preset = true;
		if (strcmp(value, "tiny") == 0)
			a->options.preset = FIXTURE_TINY;
		else if (strcmp(value, "mini") == 0)
			a->options.preset = FIXTURE_MINI;
		else
			return cli_usage_error("fixture", false,
					       "--preset wants tiny or mini, not '%s'", value);
		return 0;
	case 'l':
		if (cli_parse_uint(value, 1, MAX_LAYERS, &number) < 0)
			return cli_usage_error("fixture", false,
					       "--layers wants a number from 1 to %d, not '%s'",
					       MAX_LAYERS, value);
		a->options.layers = (uint32_t)number;
		return 0;
	case 'd':
		if (strcmp(value, "bf16") == 0)
			a->options.dtype = DTYPE_BF16;
		else if (strcmp(value, "f32") == 0)
			a->options.dtype = DTYPE_F32;
		else
			return cli_usage_error("fixture", false,
					       "--dtype wants bf16 or f32, not '%s'", value);
		return 0;
	case 's':
		if (cli_parse_uint(value, 0, UINT64_MAX, &number) < 0)
			return cli_usage_error("fixture", false,
					       "--seed wants a whole number, not '%s'", value);
		a->options.seed = number;
		return 0;
	case 'm':
		if (size_parse(value, &a->options.max_shard_size, &e) < 0) {
			cli_print_error(&e, false);
			return EXIT_USAGE;
		}
		if (a->options.max_shard_size == 0)
			return cli_usage_error("fixture", false,
					       "--max-shard-size must be above 0");
		return 0;
	case 'h':
		a->help = true;
		return 0;
	}
	return cli_usage_error("fixture", false, "unexpected option");
}

static int parse_args(int argc, char **argv, struct fixture_args *a)
{
	static const struct option long_options[] = {
		{"preset", required_argument, NULL, 'p'},
		{"layers", required_argument, NULL, 'l'},
		{"dtype", required_argument, NULL, 'd'},
		{"seed", required_argument, NULL, 's'},
		{"max-shard-size", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	memset(a, 0, sizeof(*a));
	a->options.dtype = DTYPE_BF16;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
		if (opt == '?' || opt == ':')
			return cli_option_error("fixture", false, opt, argv[optind - 1]);
		if (apply_option(a, opt, optarg) != 0)
			return EXIT_USAGE;
	}
	if (a->help)
		return 0;
	if (!a->have_preset)
		return cli_usage_error("fixture", false, "--preset tiny|mini is required");
	if (argc - optind != 1)
		return cli_usage_error("fixture", false, "expected one DIR");
	a->dir = argv[optind];
	return 0;
}

int cli_fixture(int argc, char **argv)
{
	struct fixture_args a;
	struct err e = {0};
	int rc;

	rc = parse_args(argc, argv, &a);
	if (rc != 0 || a.help) {
		if (a.help)
			fputs(usage_text, stdout);
		return rc;
	}
	if (fixture_write(a.dir, &a.options, &e) < 0) {
		cli_print_error(&e, false);
		return cli_exit_code(&e);
	}
	printf("wrote a %s Ling 2.0 checkpoint (HF layout) to %s\n",
	       a.options.preset == FIXTURE_TINY ? "tiny" : "mini", a.dir);
	return EXIT_OK;
}
