/* SPDX-License-Identifier: MIT */
/*
 * cli_jobs: `ckptconv jobs`, the command-line client of the daemon, for
 * scripts and for people on a bastion host: submit a job with convert's
 * own options (parsed by the same code), get one, list them, follow one
 * through its event stream with convert's progress display, cancel one.
 * The server and the token file come from flags or CKPTCONV_SERVER and
 * CKPTCONV_TOKEN_FILE.  With --json every answer is the API's JSON on
 * stdout.  Following a job outlives a daemon restart: when the stream
 * ends before the job has, it is opened again.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/cli.h"
#include "ckptconv/client.h"
#include "ckptconv/conversion_result.h"
#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "ckptconv/progress.h"
#include "ckptconv/util.h"

#define DEFAULT_SERVER "http://127.0.0.1:8080"
#define SERVER_MAX 512
#define LIST_LIMIT_MAX 1000
/* Seconds to keep trying while the daemon cannot be reached during a
 * follow (it may be restarting), and between two attempts. */
#define FOLLOW_PATIENCE 120
#define FOLLOW_RETRY_DELAY 1
/* Streams in a row that may end with no news of the job (no progress
 * beyond what was seen, no final state) before the server is taken to be
 * broken: the daemon ends a stream early only when it stops, after which
 * it cannot be reached until it is back. */
#define FOLLOW_IDLE_STREAMS_MAX 5

static const char usage_text[] =
	"Usage: ckptconv jobs submit [CONVERT OPTIONS] [--label NAME=VALUE]... [--wait]\n"
	"                            [--idempotency-key KEY] SRC DST\n"
	"       ckptconv jobs submit --finalize [S3 OPTIONS] [--label NAME=VALUE]... [--wait]\n"
	"                            [--idempotency-key KEY] DST\n"
	"       ckptconv jobs get ID\n"
	"       ckptconv jobs list [--state STATE] [--label NAME=VALUE]... [--limit N]\n"
	"                          [--cursor C]\n"
	"       ckptconv jobs watch ID\n"
	"       ckptconv jobs cancel ID\n"
	"Every subcommand also takes [--server URL] [--token-file FILE] [--json].\n"
	"\n"
	"Talks to a running `ckptconv serve`: submits conversion jobs, shows them and\n"
	"their progress, and cancels them.  SRC and DST are paths on the daemon's side\n"
	"(absolute, inside its --allow-root) or s3:// locations under its --allow-s3.\n"
	"\n"
	"  --server URL           the daemon (default: CKPTCONV_SERVER, else the address\n"
	"                         of CKPTCONV_LISTEN, else " DEFAULT_SERVER ")\n"
	"  --token-file FILE      file holding the daemon's bearer token (default:\n"
	"                         CKPTCONV_TOKEN_FILE; none: send no token)\n"
	"  --json                 print the API's JSON (or the error) on stdout\n"
	"\n"
	"submit: queues a conversion of SRC into DST and prints its id; takes convert's\n"
	"options:\n" CLI_CONVERT_OPTIONS_USAGE
	"  --dry-run              plan the job and write nothing\n"
	"  --s3-endpoint-url URL, --s3-region REGION, --s3-addressing-style STYLE\n"
	"                         the job's options.s3 (the endpoint must be allowed by\n"
	"                         the daemon's --allow-s3-endpoint)\n"
	"  --label NAME=VALUE     a label of the job (repeatable)\n"
	"  --idempotency-key KEY  submitting again with the same KEY and options returns\n"
	"                         the same job instead of a new one\n"
	"  --wait                 follow the job to its end with convert's progress\n"
	"                         display; the exit status is the job's outcome\n"
	"  --finalize             queues `ckptconv finalize DST` instead: finishes DST once\n"
	"                         every --partition I/N job into it has succeeded (no SRC;\n"
	"                         takes only the --s3-* options, --label, --idempotency-key,\n"
	"                         --wait and --json)\n"
	"(--threads and --no-fsync are not job options: the daemon decides those.)\n"
	"\n"
	"get: the job's state, progress, result or error.\n"
	"list: jobs, newest first; --state, --label NAME=VALUE (all must match),\n"
	"      --limit N (1 to 1000, default 50), --cursor C (the next page's cursor).\n"
	"watch: follows the job's progress until it ends (--json: one event per line).\n"
	"cancel: cancels a queued or running job (a finished one is an error,\n"
	"        job_finished).\n"
	"\n"
	"Exit status: 0 success (for --wait and watch: the job succeeded), 1 an error\n"
	"or a job that failed or was cancelled, 2 usage error.\n";

enum {
	OPT_SERVER = CLI_OPT_EXTRA,
	OPT_TOKEN_FILE,
	OPT_LABEL,
	OPT_WAIT,
	OPT_IDEMPOTENCY_KEY,
	OPT_STATE,
	OPT_LIMIT,
	OPT_CURSOR,
	OPT_JSON,
	OPT_HELP,
	OPT_FINALIZE,
};

#define COMMON_OPTIONS                                                \
	{"server", required_argument, NULL, OPT_SERVER},              \
	{                                                             \
		"token-file", required_argument, NULL, OPT_TOKEN_FILE \
	}

struct jobs_args {
	const char *command; /* "jobs submit" ... */
	const char *server, *token_file;
	bool json, wait, help;
	bool finalize; /* submit --finalize: DST alone, in convert.dst */
	json_t *labels; /* {NAME: VALUE} */
	const char *idempotency_key, *state, *cursor;
	unsigned long long limit;
	const char *id;
	struct cli_convert_args convert; /* submit's */
};

/* ---- options ------------------------------------------------------------ */

static int add_label(struct jobs_args *a, const char *text, bool json)
{
	const char *eq = strchr(text, '=');
	char *name;
	int rc = 0;

	if (!eq || eq == text)
		return cli_usage_error(a->command, json, "--label wants NAME=VALUE, not '%s'",
				       text);
	name = xstrdup(text);
	name[eq - text] = '\0';
	if (json_object_get(a->labels, name))
		rc = cli_usage_error(a->command, json, "--label %s is given twice", name);
	else
		json_object_set_new(a->labels, name, json_string(eq + 1));
	free(name);
	return rc;
}

/* An option of a jobs subcommand (and submit's extras); EXIT_USAGE after
 * printing a usage error. */
static int apply_jobs_option(void *ctx, int opt, const char *value, bool json)
{
	struct jobs_args *a = ctx;

	switch (opt) {
	case OPT_SERVER:
		a->server = value;
		return 0;
	case OPT_TOKEN_FILE:
		a->token_file = value;
		return 0;
	case OPT_LABEL:
		return add_label(a, value, json);
	case OPT_WAIT:
		a->wait = true;
		return 0;
	case OPT_IDEMPOTENCY_KEY:
		a->idempotency_key = value;
		return 0;
	case OPT_STATE:
		if (job_state_parse(value) < 0)
			return cli_usage_error(
				a->command, json,
				"--state wants queued, running, succeeded, failed or cancelled, not '%s'",
				value);
		a->state = value;
		return 0;
	case OPT_LIMIT:
		if (cli_parse_uint(value, 1, LIST_LIMIT_MAX, &a->limit) < 0)
			return cli_usage_error(a->command, json,
					       "--limit wants a number from 1 to %d, not '%s'",
					       LIST_LIMIT_MAX, value);
		return 0;
	case OPT_CURSOR:
		a->cursor = value;
		return 0;
	case OPT_JSON:
		a->json = true;
		return 0;
	case OPT_HELP:
		a->help = true;
		return 0;
	case OPT_FINALIZE:
		a->finalize = true;
		return 0;
	}
	return cli_usage_error(a->command, json, "unexpected option");
}

/* Options of get, list, watch and cancel; ID is required unless `list`. */
static int parse_args(const char *command, int argc, char **argv, bool takes_id,
		      const struct option *table, struct jobs_args *a)
{
	int opt;

	optind = 0;
	opterr = 0;
	a->command = command;
	a->json = cli_wants_json(argc, argv);
	while ((opt = getopt_long(argc, argv, ":h", table, NULL)) != -1) {
		if (opt == '?' || opt == ':')
			return cli_option_error(command, a->json, opt, argv[optind - 1]);
		if (apply_jobs_option(a, opt == 'h' ? OPT_HELP : opt, optarg, a->json) != 0)
			return EXIT_USAGE;
	}
	if (a->help)
		return 0;
	if (takes_id && argc - optind != 1)
		return cli_usage_error(command, a->json, "expected one job ID, got %d arguments",
				       argc - optind);
	if (!takes_id && argc - optind != 0)
		return cli_usage_error(command, a->json, "unexpected argument '%s'", argv[optind]);
	a->id = takes_id ? argv[optind] : NULL;
	return 0;
}

/* The client for the server and token the options and environment name;
 * EXIT_USAGE or EXIT_FAILED after printing the error. */
static int open_client(const struct jobs_args *a, struct client **out)
{
	const char *server = a->server, *token_file = a->token_file, *listen;
	char derived[SERVER_MAX];
	char *token = NULL;
	struct err e = {0};
	int rc;

	if (!server && (server = getenv("CKPTCONV_SERVER")) && !*server)
		server = NULL;
	if (!server && (listen = getenv("CKPTCONV_LISTEN")) && *listen) {
		if (cli_listen_url("CKPTCONV_LISTEN", listen, "", derived, sizeof(derived), &e) < 0)
			goto out_error;
		server = derived;
	}
	if (!server)
		server = DEFAULT_SERVER;
	if (!token_file && (token_file = getenv("CKPTCONV_TOKEN_FILE")) && !*token_file)
		token_file = NULL;
	if (token_file && cli_read_token(token_file, &token, &e) < 0)
		goto out_error;
	rc = client_new(server, token, out, &e);
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	if (rc == 0)
		return 0;
out_error:
	cli_print_error(&e, a->json);
	return e.code == ERR_INTERNAL_ERROR ? EXIT_FAILED : EXIT_USAGE;
}

/* "/v1/jobs/<id><suffix>" with the id escaped, so that whatever is given
 * reaches the daemon as one path segment. */
static char *job_path(const char *id, const char *suffix)
{
	char *escaped = curl_easy_escape(NULL, id, 0);
	struct buf path = {0};

	buf_printf(&path, "/v1/jobs/%s%s", escaped ? escaped : "", suffix);
	curl_free(escaped);
	return path.data;
}

/* ---- output ------------------------------------------------------------- */

static void print_json(const json_t *doc)
{
	cli_print_json(stdout, doc, JSON_COMPACT);
}

/* One line on `out`: every value in it comes from the daemon (or the
 * command line), so the whole line is escaped as by buf_append_printable()
 * (a label or a location cannot carry a terminal's escape sequences), and
 * the end of line is added. */
static void __attribute__((format(printf, 2, 3))) print_line(FILE *out, const char *fmt, ...)
{
	struct buf raw = {0}, shown = {0};
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n > 0) {
		raw.data = xmalloc((size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(raw.data, (size_t)n + 1, fmt, ap);
		va_end(ap);
		buf_append_printable(&shown, raw.data, (size_t)n);
	}
	buf_append(&shown, "\n", 1);
	fwrite(shown.data, 1, shown.len, out);
	fflush(out);
	buf_fini(&shown);
	free(raw.data);
}

static const char *string_member(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static uint64_t count_member(const json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	return v > 0 ? (uint64_t)v : 0;
}

static void progress_from_json(const json_t *p, struct exec_progress *out)
{
	out->tensors_total = count_member(p, "tensors_total");
	out->tensors_done = count_member(p, "tensors_done");
	out->bytes_total = count_member(p, "bytes_total");
	out->bytes_done = count_member(p, "bytes_done");
	out->elapsed_seconds = json_number_value(json_object_get(p, "elapsed_seconds"));
}

/* Seconds since an RFC 3339 UTC time as the API writes it; -1 if unknown. */
static double age_seconds(const char *when)
{
	struct tm tm = {0};
	const char *rest = when ? strptime(when, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;

	if (!rest)
		return -1;
	return difftime(time(NULL), timegm(&tm));
}

static void format_age(double seconds, char *buf, size_t len)
{
	unsigned long s = seconds < 0 ? 0 : (unsigned long)seconds;

	if (seconds < 0)
		snprintf(buf, len, "-");
	else if (s < 60)
		snprintf(buf, len, "%lus", s);
	else if (s < 3600)
		snprintf(buf, len, "%lum", s / 60);
	else if (s < 86400)
		snprintf(buf, len, "%luh%02lum", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%lud%02luh", s / 86400, s / 3600 % 24);
}

static void labels_text(const json_t *labels, struct buf *out)
{
	const char *key;
	json_t *value;

	json_object_foreach((json_t *)labels, key, value) {
		buf_printf(out, "%s%s=%s", out->len ? "," : "", key, json_string_value(value));
	}
}

/* The safetensors files a result lists (shards, not the index or the
 * copied files). */
static size_t safetensors_files(const json_t *result)
{
	const json_t *name;
	size_t i, n = 0, len;

	json_array_foreach(json_object_get(result, "files"), i, name) {
		len = strlen(json_string_value(name) ? json_string_value(name) : "");
		if (len > 12 && strcmp(json_string_value(name) + len - 12, ".safetensors") == 0)
			n++;
	}
	return n;
}

static void print_result_line(const json_t *job)
{
	const json_t *result = json_object_get(job, "result");
	const json_t *progress = json_object_get(job, "progress");
	double seconds = json_number_value(json_object_get(progress, "elapsed_seconds"));
	uint64_t bytes = count_member(result, "bytes");
	size_t files = safetensors_files(result);
	char size[32], speed[32];

	size_format(bytes, size, sizeof(size));
	size_format(seconds > 0 ? (uint64_t)((double)bytes / seconds) : 0, speed, sizeof(speed));
	if (json_is_true(json_object_get(json_object_get(job, "options"), "dry_run")))
		print_line(
			stdout,
			"job %s planned %llu tensor%s (%s) into %zu file%s; nothing was written: %s",
			string_member(job, "id"),
			(unsigned long long)count_member(result, "tensors"),
			plural_s(count_member(result, "tensors")), size, files,
			files == 1 ? "" : "s", string_member(job, "destination"));
	else
		print_line(
			stdout,
			"job %s converted %llu tensor%s (%s) into %zu file%s in %.2f s (%s/s): %s",
			string_member(job, "id"),
			(unsigned long long)count_member(result, "tensors"),
			plural_s(count_member(result, "tensors")), size, files,
			files == 1 ? "" : "s", seconds, speed, string_member(job, "destination"));
	if (count_member(json_object_get(result, "partition"), "count"))
		print_line(stdout, CONVERSION_FINALIZE_HINT, string_member(job, "destination"),
			   (uint32_t)count_member(json_object_get(result, "partition"), "count"));
}

static void print_job_text(const json_t *job)
{
	const json_t *p = json_object_get(job, "progress");
	const char *state = string_member(job, "state");
	struct exec_progress ep;
	struct buf labels = {0}, line = {0};
	char done[32], total[32], rate[32], age[32];
	struct err e = {0};
	json_t *v;

	progress_from_json(p, &ep);
	size_format(ep.bytes_done, done, sizeof(done));
	size_format(ep.bytes_total, total, sizeof(total));
	size_format(count_member(p, "bytes_per_second"), rate, sizeof(rate));
	format_age(age_seconds(string_member(job, "created_at")), age, sizeof(age));
	labels_text(json_object_get(job, "labels"), &labels);
	print_line(stdout, "id           %s", string_member(job, "id"));
	print_line(stdout, "state        %s%s", state,
		   json_is_true(json_object_get(job, "cancel_requested")) &&
				   (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0) ?
			   " (cancelling)" :
			   "");
	print_line(stdout, "source       %s", string_member(job, "source"));
	print_line(stdout, "destination  %s", string_member(job, "destination"));
	print_line(stdout, "to           %s", string_member(job, "to"));
	buf_printf(&line, "%.1f%%, %llu/%llu tensors, %s of %s",
		   json_number_value(json_object_get(p, "percent")),
		   (unsigned long long)ep.tensors_done, (unsigned long long)ep.tensors_total, done,
		   total);
	if (strcmp(state, "running") == 0) {
		buf_printf(&line, ", %s/s", rate);
		v = json_object_get(p, "eta_seconds");
		if (json_is_integer(v))
			buf_printf(&line, ", ETA %llds", (long long)json_integer_value(v));
	}
	print_line(stdout, "progress     %s", line.data);
	print_line(stdout, "created      %s (%s ago)", string_member(job, "created_at"), age);
	if (json_is_string(json_object_get(job, "started_at")))
		print_line(stdout, "started      %s", string_member(job, "started_at"));
	if (json_is_string(json_object_get(job, "finished_at")))
		print_line(stdout, "finished     %s", string_member(job, "finished_at"));
	if (labels.len)
		print_line(stdout, "labels       %s", labels.data);
	if (json_is_string(json_object_get(job, "credentials_source")))
		print_line(stdout, "credentials  %s", string_member(job, "credentials_source"));
	if (client_job_error(job, &e) < 0)
		print_line(stdout, "error        %s: %s%s%s%s", err_name(e.code), e.msg,
			   e.tensor[0] ? " (tensor " : "", e.tensor, e.tensor[0] ? ")" : "");
	if (json_is_object(json_object_get(job, "result"))) {
		const json_t *result = json_object_get(job, "result");

		size_format(count_member(result, "bytes"), total, sizeof(total));
		print_line(stdout, "result       %llu tensor%s, %s in %zu safetensors file%s",
			   (unsigned long long)count_member(result, "tensors"),
			   plural_s(count_member(result, "tensors")), total,
			   safetensors_files(result), safetensors_files(result) == 1 ? "" : "s");
	}
	buf_fini(&line);
	buf_fini(&labels);
}

/* ---- following a job ---------------------------------------------------- */

/* The data of a state event: a job that has finished. */
static int check_final(const json_t *job, struct err *e)
{
	const char *state;

	if (client_check_job(job, "", e) < 0)
		return -1;
	state = string_member(job, "state");
	if (!job_state_finished((enum job_state)job_state_parse(state)))
		return err_set(e, ERR_SERVER_BAD_RESPONSE,
			       "the final state event says the job is %s, which is not an end",
			       state);
	return 0;
}

struct follow {
	bool json_events; /* watch --json: every event on stdout */
	bool show_progress;
	struct progress_display display;
	json_t *final; /* the job, once a state event came */
	struct err bad; /* set when the state event is not a finished job */
	bool news;	/* this stream told of progress beyond best, or the end */
	bool have_progress;
	struct exec_progress best; /* the furthest progress told */
};

static int on_event(void *ctx, const char *event, json_t *data)
{
	struct follow *f = ctx;
	struct exec_progress p;

	if (strcmp(event, "state") == 0 && check_final(data, &f->bad) < 0)
		return 1;
	if (f->json_events) {
		json_t *line = json_pack("{s:s, s:O}", "event", event, "data", data);

		print_json(line);
		json_decref(line);
	}
	if (strcmp(event, "progress") == 0) {
		progress_from_json(data, &p);
		if (!f->have_progress || p.tensors_done > f->best.tensors_done ||
		    p.bytes_done > f->best.bytes_done) {
			f->news = true;
			f->have_progress = true;
			f->best = p;
		}
		if (f->show_progress)
			progress_update(&f->display, &p, false);
	} else if (strcmp(event, "state") == 0) {
		f->final = json_incref(data);
		return 1;
	}
	return 0;
}

/* Follows job `id` until a state event says it has finished, opening the
 * stream again when it ends early (the daemon drained or restarted). */
static int follow_job(struct client *c, const char *id, struct follow *f, struct err *e)
{
	char *path = job_path(id, "/events");
	double unreachable_since = -1;
	bool noted = false;
	int idle_streams = 0, rc = -1;

	for (;;) {
		struct err fe = {0};

		f->news = false;
		if (client_follow(c, path, on_event, f, &fe) < 0) {
			if (fe.code != ERR_SERVER_UNREACHABLE) {
				*e = fe;
				break;
			}
			if (unreachable_since < 0)
				unreachable_since = now_seconds();
			if (now_seconds() - unreachable_since > FOLLOW_PATIENCE) {
				*e = fe;
				break;
			}
		} else {
			unreachable_since = -1;
			idle_streams = f->news ? 0 : idle_streams + 1;
		}
		if (f->bad.code) {
			*e = f->bad;
			break;
		}
		if (f->final) {
			rc = 0;
			break;
		}
		if (idle_streams >= FOLLOW_IDLE_STREAMS_MAX) {
			err_set(e, ERR_SERVER_BAD_RESPONSE,
				"the event stream of job %s ended %d times in a row with no news of "
				"the job (no further progress, no final state)",
				id, idle_streams);
			break;
		}
		if (!noted && !f->json_events) {
			if (f->display.tty && f->display.lines)
				fputc('\n', stderr);
			print_line(stderr,
				   "ckptconv: the event stream of job %s ended early; "
				   "following it again",
				   id);
			noted = true;
		}
		sleep(FOLLOW_RETRY_DELAY);
	}
	free(path);
	return rc;
}

/* Follows job `id` to its end and reports it; the exit status is its
 * outcome. */
static int wait_for(struct client *c, const char *id, bool json_final, bool json_events)
{
	struct follow f = {.json_events = json_events,
			   .show_progress = !json_final && !json_events};
	struct exec_progress p;
	struct err e = {0};
	int rc = EXIT_FAILED;

	progress_init(&f.display, stderr);
	if (follow_job(c, id, &f, &e) < 0) {
		if (f.display.tty && f.display.lines)
			fputc('\n', stderr);
		cli_print_error(&e, json_final || json_events);
		return cli_exit_code(&e);
	}
	if (strcmp(string_member(f.final, "state"), "succeeded") == 0) {
		rc = EXIT_OK;
		if (f.show_progress) {
			progress_from_json(json_object_get(f.final, "progress"), &p);
			progress_update(&f.display, &p, true);
		}
	} else if (f.display.tty && f.display.lines) {
		fputc('\n', stderr);
	}
	if (json_final)
		print_json(f.final);
	else if (!json_events && rc == EXIT_OK)
		print_result_line(f.final);
	else if (!json_events && client_job_error(f.final, &e) < 0)
		cli_print_error(&e, false);
	json_decref(f.final);
	return rc;
}

/* ---- subcommands -------------------------------------------------------- */

static int check_job(const json_t *doc, struct err *e)
{
	return client_check_job(doc, "", e);
}

/* One request whose answer (but for a 204) has the shape `check` wants:
 * the answer in *out, or an exit status after printing the error. */
static int call(struct jobs_args *a, struct client *client, const char *method, const char *path,
		const json_t *body, int (*check)(const json_t *doc, struct err *e), long *status,
		json_t **out)
{
	struct err e = {0};

	if (client_call(client, method, path, body, body ? a->idempotency_key : NULL, status, out,
			&e) == 0 &&
	    (!*out || check(*out, &e) == 0))
		return 0;
	json_decref(*out);
	*out = NULL;
	cli_print_error(&e, a->json);
	return cli_exit_code(&e);
}

/* GET path; the answer in *out, or an exit status after printing. */
static int get_json(struct jobs_args *a, struct client *client, const char *path,
		    int (*check)(const json_t *doc, struct err *e), json_t **out)
{
	long status;

	return call(a, client, "GET", path, NULL, check, &status, out);
}

static json_t *s3_options(const struct cli_s3_flags *s3)
{
	json_t *o = json_object();

	if (s3->endpoint_url)
		json_object_set_new(o, "endpoint_url", json_string(s3->endpoint_url));
	if (s3->region)
		json_object_set_new(o, "region", json_string(s3->region));
	if (s3->addressing_style)
		json_object_set_new(o, "addressing_style", json_string(s3->addressing_style));
	return o;
}

/* The request body for convert's options (docs/openapi.yaml JobRequest):
 * convert_options' JSON form, leaving the shard size to the service's
 * default when not given. */
static json_t *job_request(const struct cli_convert_args *c, json_t *labels)
{
	const struct convert_options *o = &c->options;
	json_t *options = convert_options_to_json(o, CONVERT_JSON_PLAN | CONVERT_JSON_RUN);

	if (!o->max_shard_size)
		json_object_del(options, "max_shard_size");
	if (c->dry_run)
		json_object_set_new(options, "dry_run", json_true());
	if (c->s3.endpoint_url || c->s3.region || c->s3.addressing_style)
		json_object_set_new(options, "s3", s3_options(&c->s3));
	return json_pack("{s:s, s:s, s:s, s:o, s:O}", "source", c->src, "destination", c->dst, "to",
			 layout_name(o->to), "options", options, "labels", labels);
}

static const struct option submit_options[] = {
	COMMON_OPTIONS,
	{"label", required_argument, NULL, OPT_LABEL},
	{"wait", no_argument, NULL, OPT_WAIT},
	{"idempotency-key", required_argument, NULL, OPT_IDEMPOTENCY_KEY},
	{NULL, 0, NULL, 0},
};

/* submit --finalize's options: none of convert's but the --s3-* ones. */
static const struct option finalize_options[] = {
	COMMON_OPTIONS,
	{"finalize", no_argument, NULL, OPT_FINALIZE},
	{"label", required_argument, NULL, OPT_LABEL},
	{"wait", no_argument, NULL, OPT_WAIT},
	{"idempotency-key", required_argument, NULL, OPT_IDEMPOTENCY_KEY},
	{"json", no_argument, NULL, OPT_JSON},
	{"help", no_argument, NULL, OPT_HELP},
	CLI_S3_LONG_OPTIONS,
	{NULL, 0, NULL, 0},
};

/* Whether --finalize is among the arguments (before any "--"). */
static bool wants_finalize(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--finalize") == 0)
			return true;
	return false;
}

/* submit --finalize's command line: finalize_options and DST. */
static int parse_finalize(int argc, char **argv, struct jobs_args *a)
{
	const struct option *o;
	int opt, i;

	optind = 0;
	opterr = 0;
	a->json = cli_wants_json(argc, argv);
	/* Each option named in full (getopt_long would take --to for
	 * --token-file), so that one of convert's is named as such. */
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *arg = argv[i];
		size_t len = strcspn(arg, "=");

		if (strncmp(arg, "--", 2) != 0 || len == 2)
			continue;
		for (o = finalize_options; o->name; o++)
			if (strlen(o->name) == len - 2 && strncmp(o->name, arg + 2, len - 2) == 0)
				break;
		if (!o->name)
			return cli_usage_error(a->command, a->json,
					       "%.*s does not apply to --finalize (see 'ckptconv %s --help')",
					       (int)len, arg, a->command);
		if (o->has_arg == required_argument && !arg[len])
			i++;
	}
	while ((opt = getopt_long(argc, argv, ":h", finalize_options, NULL)) != -1) {
		if (opt == '?' || opt == ':')
			return cli_option_error(a->command, a->json, opt, argv[optind - 1]);
		if (cli_s3_flag(&a->convert.s3, opt, optarg))
			continue;
		if (apply_jobs_option(a, opt == 'h' ? OPT_HELP : opt, optarg, a->json) != 0)
			return EXIT_USAGE;
	}
	if (a->help)
		return 0;
	if (argc - optind != 1)
		return cli_usage_error(a->command, a->json,
				       "--finalize wants DST alone (no SRC), got %d arguments",
				       argc - optind);
	a->convert.dst = argv[optind];
	return 0;
}

/* submit's command line: convert's, plus submit_options (or, with
 * --finalize, finalize_options). */
static int parse_submit(int argc, char **argv, struct jobs_args *a)
{
	const struct cli_extra_options extra = {submit_options, apply_jobs_option, a};
	struct cli_convert_args *c = &a->convert;
	int rc;

	if (wants_finalize(argc, argv))
		return parse_finalize(argc, argv, a);
	rc = cli_convert_parse(a->command, argc, argv, &extra, c);

	a->json = c->json;
	a->help = c->help;
	if (rc != 0 || c->help)
		return rc;
	if (c->have_threads)
		return cli_usage_error(
			a->command, a->json,
			"--threads is not a job option: the daemon's --workers decide");
	if (!c->options.durable)
		return cli_usage_error(a->command, a->json,
				       "--no-fsync is not a job option: a daemon always syncs");
	return 0;
}

/* The request body of a finalize job (docs/openapi.yaml JobRequest):
 * the destination alone, options.finalize and options.s3. */
static json_t *finalize_request(const struct cli_convert_args *c, json_t *labels)
{
	json_t *options = json_pack("{s:b}", "finalize", 1);

	if (c->s3.endpoint_url || c->s3.region || c->s3.addressing_style)
		json_object_set_new(options, "s3", s3_options(&c->s3));
	return json_pack("{s:s, s:o, s:O}", "destination", c->dst, "options", options, "labels",
			 labels);
}

static int jobs_submit(struct jobs_args *a, struct client *client)
{
	json_t *request = a->finalize ? finalize_request(&a->convert, a->labels) :
					job_request(&a->convert, a->labels),
	       *job = NULL;
	long status;
	int rc = call(a, client, "POST", "/v1/jobs", request, check_job, &status, &job);

	if (rc != 0)
		goto out;
	if (a->json && !a->wait) {
		print_json(job);
	} else if (!a->json) {
		print_line(stdout, "%s", string_member(job, "id"));
	}
	rc = a->wait ? wait_for(client, string_member(job, "id"), a->json, false) : EXIT_OK;
out:
	json_decref(job);
	json_decref(request);
	return rc;
}

static int jobs_get(struct jobs_args *a, struct client *client)
{
	char *path = job_path(a->id, "");
	json_t *job = NULL;
	int rc = get_json(a, client, path, check_job, &job);

	if (rc == 0 && a->json)
		print_json(job);
	else if (rc == 0)
		print_job_text(job);
	json_decref(job);
	free(path);
	return rc;
}

static void print_list_text(const json_t *page)
{
	const json_t *jobs = json_object_get(page, "jobs"), *job;
	const char *cursor = json_string_value(json_object_get(page, "next_cursor"));
	size_t i;

	print_line(stdout, "%-16s  %-9s  %6s  %7s  %s", "ID", "STATE", "DONE", "AGE",
		   "SOURCE -> DESTINATION [LABELS]");
	json_array_foreach(jobs, i, job) {
		struct buf labels = {0};
		char age[32], done[32];

		labels_text(json_object_get(job, "labels"), &labels);
		format_age(age_seconds(string_member(job, "created_at")), age, sizeof(age));
		/* a dry run writes nothing: no percentage to show */
		if (json_is_true(json_object_get(json_object_get(job, "options"), "dry_run")))
			snprintf(done, sizeof(done), "%6s", "dry");
		else
			snprintf(done, sizeof(done), "%5.1f%%",
				 json_number_value(json_object_get(
					 json_object_get(job, "progress"), "percent")));
		print_line(stdout, "%-16s  %-9s  %s  %7s  %s -> %s%s%s%s",
			   string_member(job, "id"), string_member(job, "state"), done,
			   age, string_member(job, "source"), string_member(job, "destination"),
			   labels.len ? " [" : "", labels.len ? labels.data : "",
			   labels.len ? "]" : "");
		buf_fini(&labels);
	}
	if (cursor)
		print_line(stdout, "(more: --cursor %s)", cursor);
}

static const struct option list_options[] = {
	COMMON_OPTIONS,
	{"state", required_argument, NULL, OPT_STATE},
	{"label", required_argument, NULL, OPT_LABEL},
	{"limit", required_argument, NULL, OPT_LIMIT},
	{"cursor", required_argument, NULL, OPT_CURSOR},
	{"json", no_argument, NULL, OPT_JSON},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

/* Appends "&NAME=VALUE" with VALUE escaped for a query string. */
static void add_query(struct buf *path, const char *name, const char *value)
{
	char *escaped = curl_easy_escape(NULL, value, 0);

	buf_printf(path, "&%s=%s", name, escaped ? escaped : "");
	curl_free(escaped);
}

static int jobs_list(struct jobs_args *a, struct client *client)
{
	struct buf path = {0};
	json_t *page = NULL, *value;
	const char *key;
	int rc;

	buf_printf(&path, "/v1/jobs?limit=%llu", a->limit ? a->limit : 50);
	if (a->state)
		add_query(&path, "state", a->state);
	if (a->cursor)
		add_query(&path, "cursor", a->cursor);
	json_object_foreach(a->labels, key, value) {
		struct buf filter = {0};

		buf_printf(&filter, "%s:%s", key, json_string_value(value));
		add_query(&path, "label", filter.data);
		buf_fini(&filter);
	}
	rc = get_json(a, client, path.data, client_check_page, &page);
	if (rc == 0 && a->json)
		print_json(page);
	else if (rc == 0)
		print_list_text(page);
	json_decref(page);
	buf_fini(&path);
	return rc;
}

static int jobs_watch(struct jobs_args *a, struct client *client)
{
	return wait_for(client, a->id, false, a->json);
}

static int jobs_cancel(struct jobs_args *a, struct client *client)
{
	char *path = job_path(a->id, "");
	json_t *job = NULL, *after = NULL;
	struct err e = {0};
	long status = 0;
	int rc = get_json(a, client, path, check_job, &job);

	if (rc != 0)
		goto out;
	/* DELETE of a finished job removes its record: cancel never asks that. */
	if (job_state_finished((enum job_state)job_state_parse(string_member(job, "state")))) {
		err_set(&e, ERR_JOB_FINISHED, "job %s has already %s", string_member(job, "id"),
			string_member(job, "state"));
		goto out_error;
	}
	rc = call(a, client, "DELETE", path, NULL, check_job, &status, &after);
	if (rc != 0)
		goto out;
	if (status == 204) {
		err_set(&e, ERR_JOB_FINISHED,
			"job %s finished before the cancellation arrived; its record was deleted",
			string_member(job, "id"));
		goto out_error;
	}
	if (a->json)
		print_json(after);
	else
		print_line(stdout, "job %s %s", string_member(after, "id"),
			   status == 202 ? "is stopping (its unfinished output is removed)" :
					   "cancelled");
	rc = EXIT_OK;
	goto out;
out_error:
	cli_print_error(&e, a->json);
	rc = cli_exit_code(&e);
out:
	json_decref(after);
	json_decref(job);
	free(path);
	return rc;
}

static const struct option id_options[] = {
	COMMON_OPTIONS,
	{"json", no_argument, NULL, OPT_JSON},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

static const struct subcommand {
	const char *name, *command;
	const struct option *options; /* NULL: convert's and submit_options */
	bool takes_id;
	int (*run)(struct jobs_args *a, struct client *client);
} subcommands[] = {
	{"submit", "jobs submit", NULL, false, jobs_submit},
	{"get", "jobs get", id_options, true, jobs_get},
	{"list", "jobs list", list_options, false, jobs_list},
	{"watch", "jobs watch", id_options, true, jobs_watch},
	{"cancel", "jobs cancel", id_options, true, jobs_cancel},
};

static int run_subcommand(const struct subcommand *sub, int argc, char **argv)
{
	struct jobs_args a = {.command = sub->command, .labels = json_object()};
	struct client *client = NULL;
	int rc = sub->options ?
			 parse_args(sub->command, argc, argv, sub->takes_id, sub->options, &a) :
			 parse_submit(argc, argv, &a);

	if (rc != 0)
		goto out;
	if (a.help) {
		fputs(usage_text, stdout);
		goto out;
	}
	rc = open_client(&a, &client);
	if (rc == 0)
		rc = sub->run(&a, client);
	client_free(client);
out:
	json_decref(a.labels);
	return rc;
}

int cli_jobs(int argc, char **argv)
{
	bool json = cli_wants_json(argc, argv);
	size_t i;

	if (argc < 2)
		return cli_usage_error("jobs", json,
				       "expected a subcommand: submit, get, list, watch or cancel");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage_text, stdout);
		return EXIT_OK;
	}
	for (i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (strcmp(argv[1], subcommands[i].name) == 0)
			return run_subcommand(&subcommands[i], argc - 1, argv + 1);
	return cli_usage_error("jobs", json,
			       "unknown subcommand '%s' (submit, get, list, watch, cancel)",
			       argv[1]);
}
