/* SPDX-License-Identifier: MIT */
/*
 * cli_convert: `ckptconv convert`.  Parses the exact option syntax, builds
 * the plan (printing it for --dry-run), runs it on a worker pool and reports
 * the result as text or JSON.  While the run goes on, one small watcher
 * thread redraws the progress display and turns the first SIGINT or SIGTERM
 * into a cancellation, so an interrupted conversion removes its output
 * instead of leaving half of it behind.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/cli.h"
#include "ckptconv/conversion_result.h"
#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/exclude.h"
#include "ckptconv/exec.h"
#include "ckptconv/partition.h"
#include "ckptconv/plan.h"
#include "ckptconv/progress.h"
#include "ckptconv/s3.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define WATCH_TICK_MS 200
#define MAX_THREADS 1024

static const char usage_text[] =
	"Usage: ckptconv convert --to native|hf [--ep-size N --ep-rank R]\n"
	"                        [--dtype auto|bf16|f16|f32|f64|keep] [--max-shard-size 5GB]\n"
	"                        [--exclude REGEX] [--threads N] [--max-rate 200MB]\n"
	"                        [--partition I/N] [--overwrite] [--resume] [--no-fsync]\n"
	"                        [--dry-run] [--allow-gaps] [--io auto|mmap|pread]\n"
	"                        [--json] SRC DST\n"
	"\n"
	"Converts the checkpoint at SRC (a directory, a .safetensors file or an s3://\n"
	"prefix) into DST, in the HF or the native (NeMo Automodel) layout.\n"
	"\n" CLI_CONVERT_OPTIONS_USAGE
	"  --threads N            worker threads (default: the CPUs available)\n"
	"  --no-fsync             skip the final fsyncs (scratch output, benchmarks)\n"
	"  --dry-run              print the plan and write nothing\n"
	"  --json                 print the result (or the error) as JSON on stdout\n" CLI_S3_USAGE
	"\n"
	"Exit status: 0 converted, 1 conversion error, 2 usage error.\n";

enum {
	OPT_TO = CLI_OPT_CONVERT,
	OPT_EP_SIZE,
	OPT_EP_RANK,
	OPT_DTYPE,
	OPT_MAX_SHARD_SIZE,
	OPT_EXCLUDE,
	OPT_THREADS,
	OPT_MAX_RATE,
	OPT_OVERWRITE,
	OPT_RESUME,
	OPT_NO_FSYNC,
	OPT_DRY_RUN,
	OPT_JSON,
	OPT_PARTITION,
	OPT_ALLOW_GAPS,
	OPT_IO,
};

static const struct option long_options[] = {
	{"to", required_argument, NULL, OPT_TO},
	{"ep-size", required_argument, NULL, OPT_EP_SIZE},
	{"ep-rank", required_argument, NULL, OPT_EP_RANK},
	{"dtype", required_argument, NULL, OPT_DTYPE},
	{"max-shard-size", required_argument, NULL, OPT_MAX_SHARD_SIZE},
	{"exclude", required_argument, NULL, OPT_EXCLUDE},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"max-rate", required_argument, NULL, OPT_MAX_RATE},
	{"overwrite", no_argument, NULL, OPT_OVERWRITE},
	{"resume", no_argument, NULL, OPT_RESUME},
	{"no-fsync", no_argument, NULL, OPT_NO_FSYNC},
	{"dry-run", no_argument, NULL, OPT_DRY_RUN},
	{"json", no_argument, NULL, OPT_JSON},
	{"partition", required_argument, NULL, OPT_PARTITION},
	{"allow-gaps", no_argument, NULL, OPT_ALLOW_GAPS},
	{"io", required_argument, NULL, OPT_IO},
	CLI_S3_LONG_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int parse_size_option(const char *command, const char *name, const char *text, uint64_t *out,
			     bool json)
{
	struct err e = {0};

	if (size_parse(text, out, &e) < 0) {
		cli_print_error(&e, json);
		return EXIT_USAGE;
	}
	if (*out == 0)
		return cli_usage_error(command, json, "%s must be greater than 0", name);
	return 0;
}

static int parse_partition_option(const char *text, struct convert_options *o, bool json)
{
	struct err e = {0};

	if (partition_parse(text, &o->partition_index, &o->partition_count, &e) == 0)
		return 0;
	cli_print_error(&e, json);
	return EXIT_USAGE;
}

static int parse_u32_option(const char *command, const char *name, const char *text,
			    unsigned long long min, unsigned long long max, uint32_t *out,
			    bool json)
{
	unsigned long long value;

	if (cli_parse_uint(text, min, max, &value) < 0)
		return cli_usage_error(command, json,
				       "%s wants a whole number from %llu to %llu, not '%s'", name,
				       min, max, text);
	*out = (uint32_t)value;
	return 0;
}

/* One option into a; EXIT_USAGE after printing a usage error. */
static int apply_option(struct cli_convert_args *a, const struct cli_extra_options *extra, int opt,
			const char *value)
{
	uint32_t threads = 0;
	struct err e = {0};
	int choice;

	if (cli_s3_flag(&a->s3, opt, value))
		return 0;
	if (opt >= CLI_OPT_EXTRA && extra)
		return extra->apply(extra->ctx, opt, value, a->json);
	switch (opt) {
	case OPT_TO:
		a->have_to = true;
		if (strcmp(value, "native") == 0)
			a->options.to = LAYOUT_NATIVE;
		else if (strcmp(value, "hf") == 0)
			a->options.to = LAYOUT_HF;
		else
			return cli_usage_error(a->command, a->json,
					       "--to wants native or hf, not '%s'", value);
		return 0;
	case OPT_EP_SIZE:
		a->have_ep_size = true;
		return parse_u32_option(a->command, "--ep-size", value, 1, UINT32_MAX,
					&a->options.ep_size, a->json);
	case OPT_EP_RANK:
		a->have_ep_rank = true;
		return parse_u32_option(a->command, "--ep-rank", value, 0, UINT32_MAX - 1,
					&a->options.ep_rank, a->json);
	case OPT_DTYPE:
		a->have_dtype = true;
		choice = dtype_choice_parse(value);
		if (choice < 0)
			return cli_usage_error(
				a->command, a->json,
				"--dtype wants auto, bf16, f16, f32, f64 or keep, not '%s'", value);
		a->options.dtype = (enum dtype_choice)choice;
		return 0;
	case OPT_MAX_SHARD_SIZE:
		return parse_size_option(a->command, "--max-shard-size", value,
					 &a->options.max_shard_size, a->json);
	case OPT_EXCLUDE:
		if (exclude_check(value, NULL, &e) < 0) {
			cli_print_error(&e, a->json);
			return EXIT_USAGE;
		}
		a->options.exclude = value;
		return 0;
	case OPT_THREADS:
		if (parse_u32_option(a->command, "--threads", value, 1, MAX_THREADS, &threads,
				     a->json) != 0)
			return EXIT_USAGE;
		a->threads = threads;
		a->have_threads = true;
		return 0;
	case OPT_MAX_RATE:
		return parse_size_option(a->command, "--max-rate", value,
					 &a->options.max_bytes_per_second, a->json);
	case OPT_OVERWRITE:
		a->options.overwrite = true;
		return 0;
	case OPT_RESUME:
		a->options.resume = true;
		return 0;
	case OPT_NO_FSYNC:
		a->options.durable = false;
		return 0;
	case OPT_ALLOW_GAPS:
		a->options.allow_gaps = true;
		return 0;
	case OPT_IO:
		choice = convert_io_parse(value);
		if (choice < 0)
			return cli_usage_error(a->command, a->json,
					       "--io wants auto, mmap or pread, not '%s'", value);
		a->options.io = (enum convert_io)choice;
		return 0;
	case OPT_DRY_RUN:
		a->dry_run = true;
		return 0;
	case OPT_JSON:
		a->json = true;
		return 0;
	case OPT_PARTITION:
		return parse_partition_option(value, &a->options, a->json);
	case 'h':
		a->help = true;
		return 0;
	}
	return cli_usage_error(a->command, a->json, "unexpected option");
}

/* The combinations of options that make no sense, as usage errors: which
 * flags go together here, the rules between the options
 * convert_options_check's (the partition, checked by partition_parse
 * already, passes). */
static int check_combinations(const struct cli_convert_args *a)
{
	struct err e = {0};

	if (!a->have_to)
		return cli_usage_error(a->command, a->json, "--to native|hf is required");
	/* --dtype with --to hf: only a consolidation takes it (convert.c). */
	if (a->have_ep_size != a->have_ep_rank)
		return cli_usage_error(a->command, a->json, "--ep-size and --ep-rank go together");
	if (convert_options_check(&a->options, NULL, &e) < 0)
		return cli_usage_error(a->command, a->json, "%s", e.msg);
	return 0;
}

/* convert's options followed by extra's, in one getopt_long table. */
static struct option *option_table(const struct cli_extra_options *extra)
{
	size_t n = sizeof(long_options) / sizeof(long_options[0]) - 1, m = 0;
	struct option *table;

	while (extra && extra->options[m].name)
		m++;
	table = xcalloc(n + m + 1, sizeof(*table));
	memcpy(table, long_options, n * sizeof(*table));
	if (m)
		memcpy(table + n, extra->options, m * sizeof(*table));
	return table;
}

int cli_convert_parse(const char *command, int argc, char **argv,
		      const struct cli_extra_options *extra, struct cli_convert_args *a)
{
	struct option *table = option_table(extra);
	int opt, rc = 0;

	memset(a, 0, sizeof(*a));
	convert_options_init(&a->options);
	a->command = command;
	a->json = cli_wants_json(argc, argv);
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", table, NULL)) != -1) {
		if (opt == '?' || opt == ':') {
			rc = cli_option_error(command, a->json, opt, argv[optind - 1]);
			goto out;
		}
		if (apply_option(a, extra, opt, optarg) != 0) {
			rc = EXIT_USAGE;
			goto out;
		}
	}
	if (a->help)
		goto out;
	if (argc - optind != 2) {
		rc = cli_usage_error(command, a->json, "expected SRC and DST, got %d argument%s",
				     argc - optind, argc - optind == 1 ? "" : "s");
		goto out;
	}
	a->src = argv[optind];
	a->dst = argv[optind + 1];
	rc = check_combinations(a);
out:
	free(table);
	return rc;
}

/* The watcher: progress on stderr, SIGINT/SIGTERM as cancellation. */
struct watcher {
	struct conversion *conversion;
	int signal_fd, wake_fd;
	atomic_bool cancelled, stop;
	struct progress_display display;
	pthread_t thread;
};

/* Takes the pending signals; the first one cancels the run (unless it is
 * over: then they are only taken off the queue). */
static void drain_signals(struct watcher *w, bool running)
{
	struct signalfd_siginfo info;

	while (read(w->signal_fd, &info, sizeof(info)) == (ssize_t)sizeof(info)) {
		if (running && !atomic_exchange(&w->cancelled, true)) {
			fprintf(stderr,
				"\nckptconv: %s received, cancelling and removing the output\n",
				strsignal((int)info.ssi_signo));
			conversion_cancel(w->conversion);
		}
	}
}

static void *watch(void *arg)
{
	struct watcher *w = arg;
	struct pollfd fds[2] = {{.fd = w->signal_fd, .events = POLLIN},
				{.fd = w->wake_fd, .events = POLLIN}};
	struct exec_progress p;

	pthread_setname_np(pthread_self(), "ckptconv-watch");
	while (!atomic_load(&w->stop)) {
		if (poll(fds, 2, WATCH_TICK_MS) > 0 && (fds[0].revents & POLLIN))
			drain_signals(w, true);
		if (atomic_load(&w->stop))
			break;
		if (!atomic_load(&w->cancelled)) {
			conversion_progress(w->conversion, &p);
			progress_update(&w->display, &p, false);
		}
	}
	return NULL;
}

/* Blocks SIGINT and SIGTERM (so they reach the watcher only) and starts it.
 * Called before the pool exists, so no thread can take the signals. */
static int watcher_start(struct watcher *w, struct conversion *c, sigset_t *saved, struct err *e)
{
	sigset_t set;
	int rc = -1;

	memset(w, 0, sizeof(*w));
	w->conversion = c;
	atomic_init(&w->cancelled, false);
	atomic_init(&w->stop, false);
	progress_init(&w->display, stderr);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, saved);
	w->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (w->signal_fd < 0) {
		err_set_errno(e, ERR_INTERNAL_ERROR, errno, "cannot watch for signals");
		goto out_unblock;
	}
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->wake_fd < 0) {
		err_set_errno(e, ERR_INTERNAL_ERROR, errno, "cannot create an eventfd");
		goto out_close_signal;
	}
	errno = pthread_create(&w->thread, NULL, watch, w);
	if (errno) {
		err_set_errno(e, ERR_INTERNAL_ERROR, errno, "cannot start the progress thread");
		goto out_close_wake;
	}
	return 0;

out_close_wake:
	close(w->wake_fd);
out_close_signal:
	close(w->signal_fd);
out_unblock:
	pthread_sigmask(SIG_SETMASK, saved, NULL);
	return rc;
}

/* Stops the watcher, completes the display (the final figures after a
 * success, else just the end of a partly drawn bar), and takes signals that
 * came too late to cancel anything off the queue. */
static void watcher_stop(struct watcher *w, const sigset_t *saved, bool succeeded)
{
	struct exec_progress p;
	uint64_t one = 1;

	atomic_store(&w->stop, true);
	/* Should the wake-up fail, the watcher still sees `stop` within a tick. */
	(void)!write(w->wake_fd, &one, sizeof(one));
	pthread_join(w->thread, NULL);
	if (succeeded) {
		conversion_progress(w->conversion, &p);
		progress_update(&w->display, &p, true);
	} else if (w->display.tty && w->display.lines > 0 && !atomic_load(&w->cancelled)) {
		fputc('\n', stderr);
	}
	drain_signals(w, false);
	close(w->wake_fd);
	close(w->signal_fd);
	pthread_sigmask(SIG_SETMASK, saved, NULL);
}

static void print_result(const struct conversion *c, const struct cli_convert_args *a,
			 double seconds)
{
	const struct store_config *store = a->options.store;
	const char *credentials_source =
		store && store->credentials ? aws_credentials_source(store->credentials) : NULL;
	struct conversion_result r;
	json_t *result;
	size_t i;

	conversion_result_init(&r);
	conversion_describe_result(c, &r);
	r.seconds = seconds;
	if (((store_location_caps(a->src) | store_location_caps(a->dst)) & STORE_REMOTE) &&
	    credentials_source)
		r.credentials_source = xstrdup(credentials_source);
	if (a->json) {
		result = conversion_result_to_json(&r);
		json_dumpf(result, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(result);
	} else {
		for (i = 0; i < r.warnings.len; i++)
			fprintf(stderr, "ckptconv: warning: %s\n", r.warnings.items[i]);
		conversion_result_print(stdout, &r, a->dst);
	}
	conversion_result_fini(&r);
}

/* Runs the prepared conversion with the watcher alongside. */
static int run_conversion(struct conversion *c, const struct cli_convert_args *a, struct err *e)
{
	struct exec_pool *pool;
	struct watcher w;
	sigset_t saved;
	double started = now_seconds();
	int rc = -1;

	if (watcher_start(&w, c, &saved, e) < 0)
		goto out;
	pool = exec_pool_new(a->threads, e);
	if (!pool)
		goto out_watcher;
	rc = conversion_run(c, pool, e);
	exec_pool_free(pool);
out_watcher:
	watcher_stop(&w, &saved, rc == 0);
	if (rc == 0)
		print_result(c, a, now_seconds() - started);
out:
	return rc;
}

int cli_convert(int argc, char **argv)
{
	struct store_config store = {0};
	struct conversion *c = NULL;
	struct cli_convert_args a;
	struct err e = {0};
	int rc;

	rc = cli_convert_parse("convert", argc, argv, NULL, &a);
	if (rc != 0)
		goto out;
	if (a.help) {
		fputs(usage_text, stdout);
		goto out;
	}
	rc = cli_store_config(&a.s3, &store, a.json);
	if (rc != 0)
		goto out;
	a.options.store = &store;
	if (conversion_prepare(a.src, a.dst, &a.options, &c, &e) < 0)
		goto out_error;
	if (a.dry_run) {
		plan_print(conversion_plan(c), stdout, a.json);
		if (!a.json)
			fprintf(stderr, "ckptconv: dry run: nothing was written to %s\n", a.dst);
		goto out_free;
	}
	if (run_conversion(c, &a, &e) == 0)
		goto out_free;
out_error:
	cli_print_error(&e, a.json);
	rc = cli_exit_code(&e);
out_free:
	conversion_free(c);
out:
	cli_store_config_fini(&store);
	return rc;
}
