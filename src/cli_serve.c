/* SPDX-License-Identifier: MIT */
/*
 * cli_serve: `ckptconv serve`, the conversion service.  Reads its options
 * from the environment (CKPTCONV_*) and then the command line (flags win),
 * opens the state dir and the shared worker pool, binds the listening
 * socket, starts the job runners and the HTTP server, and then waits for
 * signals on the main thread, which also does the periodic work (records
 * of running jobs, retention, waking event streams).  SIGTERM or SIGINT
 * drains: readiness goes 503, new jobs are refused, running conversions
 * stop at a safe point and are recorded as queued for the next start, and
 * the process exits within --shutdown-timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "ckptconv/api.h"
#include "ckptconv/aws_credentials.h"
#include "ckptconv/cli.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/job.h"
#include "ckptconv/log.h"
#include "ckptconv/notify.h"
#include "ckptconv/paths.h"
#include "ckptconv/registry.h"
#include "ckptconv/s3.h"
#include "ckptconv/s3_job.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define TICK_SECONDS 0.1
#define LISTEN_BACKLOG 512
/* Part of the shutdown timeout kept for stopping the HTTP server and
 * writing the last records. */
#define SHUTDOWN_RESERVE 1.0

struct serve_options {
	const char *listen, *health_listen;
	unsigned long long workers, max_running, max_queued, http_threads, max_connections,
		max_connections_per_ip, http_nice, max_finished_jobs;
	const char *state_dir;
	struct strvec allow_roots, allow_s3, allow_s3_endpoints;
	const char *token_file;
	double shutdown_timeout, drain_grace, request_timeout;
	int64_t retain_ms;
	enum log_level log_level;
};

static const char usage_text[] =
	"usage: ckptconv serve [OPTIONS]\n"
	"Runs the HTTP conversion service.  Every option can also be set with the\n"
	"environment variable in brackets; a flag wins over its variable.\n"
	"  --listen HOST:PORT       address to listen on (default 127.0.0.1:8080;\n"
	"                           port 0 picks a free port and logs it) [CKPTCONV_LISTEN]\n"
	"  --workers N              conversion threads shared by all jobs (default: the\n"
	"                           CPUs the process may use) [CKPTCONV_WORKERS]\n"
	"  --max-running N          jobs converting at once (default 1) [CKPTCONV_MAX_RUNNING]\n"
	"  --max-queued N           queued jobs beyond which POST answers 429 (default 100)\n"
	"                           [CKPTCONV_MAX_QUEUED]\n"
	"  --state-dir DIR          job records (default /var/lib/ckptconv) [CKPTCONV_STATE_DIR]\n"
	"  --allow-root DIR         local paths, and every file a job opens there, must\n"
	"                           resolve inside one of these; repeatable\n"
	"                           (variable: ':'-separated; none = no local paths)\n"
	"                           [CKPTCONV_ALLOW_ROOT]\n"
	"  --token-file FILE        /v1/* requests need 'Authorization: Bearer <token>'\n"
	"                           [CKPTCONV_TOKEN_FILE]\n"
	"  --shutdown-timeout SEC   exit at most SEC seconds after SIGTERM (default 25)\n"
	"                           [CKPTCONV_SHUTDOWN_TIMEOUT]\n"
	"  --drain-grace SEC        after SIGTERM, keep answering (readyz 503, new jobs\n"
	"                           503) at least SEC seconds so load balancers notice\n"
	"                           (default 0) [CKPTCONV_DRAIN_GRACE]\n"
	"  --job-retention DURATION finished job records kept this long (default 7d;\n"
	"                           s, m, h, d, w; 0 = forever) [CKPTCONV_JOB_RETENTION]\n"
	"  --max-finished-jobs N    finished job records kept at most; the oldest go first\n"
	"                           (default 1000; 0 = no limit) [CKPTCONV_MAX_FINISHED_JOBS]\n"
	"  --allow-s3 PREFIX        s3:// prefix jobs may use; repeatable (variable:\n"
	"                           space-separated) [CKPTCONV_ALLOW_S3]\n"
	"  --allow-s3-endpoint URL  endpoint jobs may name in options.s3; repeatable\n"
	"                           [CKPTCONV_ALLOW_S3_ENDPOINT]\n"
	"  --http-threads N         HTTP polling threads (default: CPUs, 2 to 8)\n"
	"                           [CKPTCONV_HTTP_THREADS]\n"
	"  --max-connections N      open HTTP connections at most (default 512)\n"
	"                           [CKPTCONV_MAX_CONNECTIONS]\n"
	"  --max-connections-per-ip N\n"
	"                           open HTTP connections of one client address at most\n"
	"                           (default 64; 0 = no limit) [CKPTCONV_MAX_CONNECTIONS_PER_IP]\n"
	"  --request-timeout SEC    a connection must send a whole request (headers and\n"
	"                           body) within SEC seconds of opening or of its previous\n"
	"                           answer, else it is closed (default 10; 0 = no limit)\n"
	"                           [CKPTCONV_REQUEST_TIMEOUT]\n"
	"  --health-listen HOST:PORT\n"
	"                           a second address serving only /healthz, /readyz and\n"
	"                           /metrics, with its own thread and connections, so probes\n"
	"                           are answered however busy the main one is (default:\n"
	"                           none) [CKPTCONV_HEALTH_LISTEN]\n"
	"  --http-nice N            nice value added to the HTTP threads, so that under CPU\n"
	"                           contention conversions come first (0 to 19, default 5)\n"
	"                           [CKPTCONV_HTTP_NICE]\n"
	"  --log-level LEVEL        debug, info, warn or error (default info) [CKPTCONV_LOG_LEVEL]\n"
	"Logs are JSON lines on stderr.  Exit status: 0 after a clean drain, 1 when the\n"
	"service could not start or had to stop jobs the hard way, 2 on a usage error.\n";

enum option_id {
	OPT_LISTEN = 1,
	OPT_WORKERS,
	OPT_MAX_RUNNING,
	OPT_MAX_QUEUED,
	OPT_STATE_DIR,
	OPT_ALLOW_ROOT,
	OPT_TOKEN_FILE,
	OPT_SHUTDOWN_TIMEOUT,
	OPT_DRAIN_GRACE,
	OPT_JOB_RETENTION,
	OPT_MAX_FINISHED_JOBS,
	OPT_ALLOW_S3,
	OPT_ALLOW_S3_ENDPOINT,
	OPT_HTTP_THREADS,
	OPT_MAX_CONNECTIONS,
	OPT_MAX_CONNECTIONS_PER_IP,
	OPT_REQUEST_TIMEOUT,
	OPT_HEALTH_LISTEN,
	OPT_HTTP_NICE,
	OPT_LOG_LEVEL,
	OPT_HELP,
	OPT_COUNT
};

static const struct option long_options[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"workers", required_argument, NULL, OPT_WORKERS},
	{"max-running", required_argument, NULL, OPT_MAX_RUNNING},
	{"max-queued", required_argument, NULL, OPT_MAX_QUEUED},
	{"state-dir", required_argument, NULL, OPT_STATE_DIR},
	{"allow-root", required_argument, NULL, OPT_ALLOW_ROOT},
	{"token-file", required_argument, NULL, OPT_TOKEN_FILE},
	{"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
	{"drain-grace", required_argument, NULL, OPT_DRAIN_GRACE},
	{"job-retention", required_argument, NULL, OPT_JOB_RETENTION},
	{"max-finished-jobs", required_argument, NULL, OPT_MAX_FINISHED_JOBS},
	{"allow-s3", required_argument, NULL, OPT_ALLOW_S3},
	{"allow-s3-endpoint", required_argument, NULL, OPT_ALLOW_S3_ENDPOINT},
	{"http-threads", required_argument, NULL, OPT_HTTP_THREADS},
	{"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
	{"max-connections-per-ip", required_argument, NULL, OPT_MAX_CONNECTIONS_PER_IP},
	{"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
	{"health-listen", required_argument, NULL, OPT_HEALTH_LISTEN},
	{"http-nice", required_argument, NULL, OPT_HTTP_NICE},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

/* The environment variable of each option. */
static const char *const option_env[OPT_COUNT] = {
	[OPT_LISTEN] = "CKPTCONV_LISTEN",
	[OPT_WORKERS] = "CKPTCONV_WORKERS",
	[OPT_MAX_RUNNING] = "CKPTCONV_MAX_RUNNING",
	[OPT_MAX_QUEUED] = "CKPTCONV_MAX_QUEUED",
	[OPT_STATE_DIR] = "CKPTCONV_STATE_DIR",
	[OPT_ALLOW_ROOT] = "CKPTCONV_ALLOW_ROOT",
	[OPT_TOKEN_FILE] = "CKPTCONV_TOKEN_FILE",
	[OPT_SHUTDOWN_TIMEOUT] = "CKPTCONV_SHUTDOWN_TIMEOUT",
	[OPT_DRAIN_GRACE] = "CKPTCONV_DRAIN_GRACE",
	[OPT_JOB_RETENTION] = "CKPTCONV_JOB_RETENTION",
	[OPT_MAX_FINISHED_JOBS] = "CKPTCONV_MAX_FINISHED_JOBS",
	[OPT_ALLOW_S3] = "CKPTCONV_ALLOW_S3",
	[OPT_ALLOW_S3_ENDPOINT] = "CKPTCONV_ALLOW_S3_ENDPOINT",
	[OPT_HTTP_THREADS] = "CKPTCONV_HTTP_THREADS",
	[OPT_MAX_CONNECTIONS] = "CKPTCONV_MAX_CONNECTIONS",
	[OPT_MAX_CONNECTIONS_PER_IP] = "CKPTCONV_MAX_CONNECTIONS_PER_IP",
	[OPT_REQUEST_TIMEOUT] = "CKPTCONV_REQUEST_TIMEOUT",
	[OPT_HEALTH_LISTEN] = "CKPTCONV_HEALTH_LISTEN",
	[OPT_HTTP_NICE] = "CKPTCONV_HTTP_NICE",
	[OPT_LOG_LEVEL] = "CKPTCONV_LOG_LEVEL",
};

static const char *option_name(int id)
{
	size_t i;

	for (i = 0; long_options[i].name; i++)
		if (long_options[i].val == id)
			return long_options[i].name;
	return "?";
}

/* Splits `text` at any of `seps` into v (empty parts skipped). */
static void split_into(struct strvec *v, const char *text, const char *seps)
{
	char *copy = xstrdup(text), *save = NULL, *part;

	for (part = strtok_r(copy, seps, &save); part; part = strtok_r(NULL, seps, &save))
		strvec_push(v, part);
	free(copy);
}

static int parse_count(const char *text, unsigned long long min, unsigned long long max,
		       unsigned long long *out, int id, const char *from)
{
	if (cli_parse_uint(text, min, max, out) < 0)
		return cli_usage_error("serve", 0,
				       "%s '%s' must be a whole number from %llu to %llu", from,
				       text, min, max);
	(void)id;
	return 0;
}

static int parse_seconds(const char *text, double *out, const char *from)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno || end == text || *end || v < 0 || v > 86400)
		return cli_usage_error("serve", 0,
				       "%s '%s' must be a number of seconds from 0 to 86400", from,
				       text);
	*out = v;
	return 0;
}

static int parse_level(const char *text, enum log_level *out, const char *from)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	int i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(text, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return cli_usage_error("serve", 0, "%s '%s' must be debug, info, warn or error", from,
			       text);
}

/* Applies one option's value; `from` names where it came from, for errors. */
static int apply_option(struct serve_options *o, int id, const char *value, const char *from)
{
	struct err e = {0};

	switch (id) {
	case OPT_LISTEN:
		o->listen = value;
		return 0;
	case OPT_WORKERS:
		return parse_count(value, 1, 1024, &o->workers, id, from);
	case OPT_MAX_RUNNING:
		return parse_count(value, 1, 64, &o->max_running, id, from);
	case OPT_MAX_QUEUED:
		return parse_count(value, 1, 1000000, &o->max_queued, id, from);
	case OPT_HTTP_THREADS:
		return parse_count(value, 1, 256, &o->http_threads, id, from);
	case OPT_MAX_CONNECTIONS:
		return parse_count(value, 4, 65536, &o->max_connections, id, from);
	case OPT_MAX_CONNECTIONS_PER_IP:
		return parse_count(value, 0, 65536, &o->max_connections_per_ip, id, from);
	case OPT_REQUEST_TIMEOUT:
		return parse_seconds(value, &o->request_timeout, from);
	case OPT_HEALTH_LISTEN:
		o->health_listen = *value ? value : NULL;
		return 0;
	case OPT_MAX_FINISHED_JOBS:
		return parse_count(value, 0, 100000000, &o->max_finished_jobs, id, from);
	case OPT_HTTP_NICE:
		return parse_count(value, 0, 19, &o->http_nice, id, from);
	case OPT_STATE_DIR:
		o->state_dir = value;
		return 0;
	case OPT_TOKEN_FILE:
		o->token_file = *value ? value : NULL;
		return 0;
	case OPT_SHUTDOWN_TIMEOUT:
		return parse_seconds(value, &o->shutdown_timeout, from);
	case OPT_DRAIN_GRACE:
		return parse_seconds(value, &o->drain_grace, from);
	case OPT_JOB_RETENTION:
		if (job_parse_duration(value, &o->retain_ms, &e) < 0)
			return cli_usage_error("serve", 0, "%s: %s", from, e.msg);
		return 0;
	case OPT_LOG_LEVEL:
		return parse_level(value, &o->log_level, from);
	default:
		return cli_usage_error("serve", 0, "unknown option %s", from);
	}
}

static int read_environment(struct serve_options *o)
{
	int id;

	for (id = OPT_LISTEN; id < OPT_HELP; id++) {
		const char *value = getenv(option_env[id]);

		if (!value)
			continue;
		if (id == OPT_ALLOW_ROOT)
			split_into(&o->allow_roots, value, ":");
		else if (id == OPT_ALLOW_S3)
			split_into(&o->allow_s3, value, " \t\n,");
		else if (id == OPT_ALLOW_S3_ENDPOINT)
			split_into(&o->allow_s3_endpoints, value, " \t\n,");
		else if (*value && apply_option(o, id, value, option_env[id]) != 0)
			return EXIT_USAGE;
	}
	return 0;
}

/* A list flag replaces the list its variable gave. */
static void list_flag(struct strvec *v, bool *seen, const char *value)
{
	if (!*seen) {
		strvec_fini(v);
		*seen = true;
	}
	strvec_push(v, value);
}

static int parse_args(int argc, char **argv, struct serve_options *o, bool *help)
{
	bool seen_roots = false, seen_s3 = false, seen_endpoints = false;
	char from[64];
	int c;

	*help = false;
	if (read_environment(o) != 0)
		return EXIT_USAGE;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		if (c == OPT_HELP) {
			*help = true;
			return 0;
		}
		if (c == '?' || c == ':')
			return cli_usage_error("serve", 0, "unknown option or missing value: %s",
					       argv[optind - 1]);
		snprintf(from, sizeof(from), "--%s", option_name(c));
		if (c == OPT_ALLOW_ROOT)
			list_flag(&o->allow_roots, &seen_roots, optarg);
		else if (c == OPT_ALLOW_S3)
			list_flag(&o->allow_s3, &seen_s3, optarg);
		else if (c == OPT_ALLOW_S3_ENDPOINT)
			list_flag(&o->allow_s3_endpoints, &seen_endpoints, optarg);
		else if (apply_option(o, c, optarg, from) != 0)
			return EXIT_USAGE;
	}
	if (optind < argc)
		return cli_usage_error("serve", 0, "unexpected argument '%s'", argv[optind]);
	return 0;
}

static void options_init(struct serve_options *o)
{
	unsigned cpus = exec_cpus_available();

	memset(o, 0, sizeof(*o));
	o->listen = "127.0.0.1:8080";
	o->max_running = 1;
	o->max_queued = 100;
	o->http_threads = cpus < 2 ? 2 : cpus > 8 ? 8 : cpus;
	o->max_connections = 512;
	o->max_connections_per_ip = 64;
	o->request_timeout = 10;
	o->max_finished_jobs = 1000;
	o->http_nice = 5;
	o->state_dir = "/var/lib/ckptconv";
	o->shutdown_timeout = 25;
	o->retain_ms = 7LL * 86400 * 1000;
	o->log_level = LOG_INFO;
}

static void options_fini(struct serve_options *o)
{
	strvec_fini(&o->allow_roots);
	strvec_fini(&o->allow_s3);
	strvec_fini(&o->allow_s3_endpoints);
}

/* ---- start-up ------------------------------------------------------------- */

static int resolve_roots(const struct strvec *given, struct strvec *resolved, struct err *e)
{
	size_t i;

	for (i = 0; i < given->len; i++) {
		char *root;

		if (paths_root(given->items[i], &root, e) < 0)
			return -1;
		strvec_push(resolved, root);
		free(root);
	}
	return 0;
}

/* Checks the --allow-s3 prefixes and normalises the --allow-s3-endpoint
 * URLs (as the S3 client compares them). */
static int check_s3_policy(const struct serve_options *o, struct strvec *endpoints, struct err *e)
{
	size_t i;

	for (i = 0; i < o->allow_s3.len; i++) {
		char *bucket = NULL, *prefix = NULL;
		struct err pe = {0};

		if (s3_location_parse(o->allow_s3.items[i], &bucket, &prefix, &pe) < 0)
			return err_set(e, ERR_USAGE_ERROR, "--allow-s3: %s", pe.msg);
		free(bucket);
		free(prefix);
	}
	for (i = 0; i < o->allow_s3_endpoints.len; i++) {
		struct err ee = {0};
		char *url = s3_endpoint_normalize(o->allow_s3_endpoints.items[i], &ee);

		if (!url)
			return err_set(e, ERR_USAGE_ERROR, "--allow-s3-endpoint: %s", ee.msg);
		strvec_push(endpoints, url);
		free(url);
	}
	return 0;
}

static int prepare_state_dir(const char *dir, char **resolved, struct err *e)
{
	char buf[PATH_MAX];

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return err_set_errno(e, ERR_IO_ERROR, errno, "cannot create the state directory %s",
				     dir);
	if (!realpath(dir, buf))
		return err_set_errno(e, ERR_IO_ERROR, errno, "state directory %s", dir);
	*resolved = xstrdup(buf);
	return 0;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
static int split_listen(const char *listen, char *host, size_t hostlen, char *port, size_t portlen,
			struct err *e)
{
	const char *colon;
	size_t n;

	if (listen[0] == '[') {
		const char *close = strchr(listen, ']');

		if (!close || close[1] != ':')
			return err_set(e, ERR_USAGE_ERROR, "listen address '%s' is not [IPV6]:PORT",
				       listen);
		n = (size_t)(close - listen - 1);
		colon = close + 1;
		if (n >= hostlen)
			return err_set(e, ERR_USAGE_ERROR, "listen address '%s' is too long", listen);
		memcpy(host, listen + 1, n);
		host[n] = '\0';
	} else {
		colon = strrchr(listen, ':');
		if (!colon)
			return err_set(e, ERR_USAGE_ERROR, "listen address '%s' is not HOST:PORT",
				       listen);
		n = (size_t)(colon - listen);
		if (n >= hostlen)
			return err_set(e, ERR_USAGE_ERROR, "listen address '%s' is too long", listen);
		memcpy(host, listen, n);
		host[n] = '\0';
		if (strcmp(host, "*") == 0)
			host[0] = '\0';
	}
	if (!colon[1] || strlen(colon + 1) >= portlen ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return err_set(e, ERR_USAGE_ERROR, "listen address '%s' has no valid port", listen);
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

static int bind_address(const struct addrinfo *ai, struct err *e)
{
	int one = 1;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			ai->ai_protocol);

	if (fd < 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		err_set_errno(e, ERR_IO_ERROR, errno, "cannot listen");
		close(fd);
		return -1;
	}
	return fd;
}

/* The listening socket and the address it got, as "host:port". */
static int open_listener(const char *listen, char *bound, size_t boundlen, unsigned *port_out,
			 struct err *e)
{
	struct addrinfo hints = {0}, *res = NULL, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], port[16], addr[INET6_ADDRSTRLEN];
	int fd = -1, rc;

	if (split_listen(listen, host, sizeof(host), port, sizeof(port), e) < 0)
		return -1;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc != 0)
		return err_set(e, ERR_USAGE_ERROR, "listen address '%s': %s", listen,
			       gai_strerror(rc));
	for (ai = res; ai && fd < 0; ai = ai->ai_next)
		fd = bind_address(ai, e);
	freeaddrinfo(res);
	if (fd < 0) {
		err_set(e, ERR_IO_ERROR, "cannot listen on %s", listen);
		return -1;
	}
	err_clear(e);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
		*port_out = ntohs(s6->sin6_port);
		snprintf(bound, boundlen, "[%s]:%u", addr, *port_out);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
		*port_out = ntohs(s4->sin_port);
		snprintf(bound, boundlen, "%s:%u", addr, *port_out);
	}
	return fd;
}

/* ---- running ---------------------------------------------------------------- */

struct service {
	struct serve_options *opts;
	struct strvec roots, s3_endpoints;
	char *state_dir;
	char *token;
	struct job_policy policy;
	/* Every job's stores start from it: the environment's settings and
	 * one credentials provider for the whole run, asked for credentials
	 * only when a job opens an s3:// store. */
	struct store_config store;
	struct exec_pool *pool;
	struct registry *reg;
	struct api *api;
	int listen_fd, health_fd;
	sigset_t signals;
};

static void log_listening(const char *bound, unsigned port, const char *health_bound,
			  unsigned health_port, const struct service *s)
{
	json_t *f = json_pack("{s:s, s:i, s:i, s:I, s:I, s:s, s:b}", "address", bound, "port",
			      (int)port, "workers", (int)exec_pool_threads(s->pool), "max_running",
			      (json_int_t)s->opts->max_running, "max_queued",
			      (json_int_t)s->opts->max_queued, "state_dir", s->state_dir, "token",
			      s->token != NULL);

	if (health_bound) {
		json_object_set_new(f, "health_address", json_string(health_bound));
		json_object_set_new(f, "health_port", json_integer((json_int_t)health_port));
	}
	log_msg(LOG_INFO, f, "listening on %s", bound);
	json_decref(f);
}

static int start(struct service *s, struct err *e)
{
	struct registry_config rc = {0};
	struct api_config ac = {0};
	char bound[300], health_bound[300];
	unsigned port = 0, health_port = 0;

	if (resolve_roots(&s->opts->allow_roots, &s->roots, e) < 0 ||
	    store_local_confine(&s->roots, e) < 0 ||
	    check_s3_policy(s->opts, &s->s3_endpoints, e) < 0 ||
	    prepare_state_dir(s->opts->state_dir, &s->state_dir, e) < 0 ||
	    (s->opts->token_file && cli_read_token(s->opts->token_file, &s->token, e) < 0))
		return -1;
	s->policy.allow_roots = &s->roots;
	s->policy.allow_s3 = &s->opts->allow_s3;
	s->policy.allow_s3_endpoints = &s->s3_endpoints;
	s->policy.state_dir = s->state_dir;
	/* Per-job S3 settings (options.s3): checked against the endpoint
	 * allow list at submission, laid over the service's store
	 * configuration for the job's stores. */
	s->policy.s3_options_check = s3_job_options_check;
	s->policy.s3_options_apply = s3_job_options_apply;
	s->store.credentials = aws_credentials_new();
	s->pool = exec_pool_new((unsigned)s->opts->workers, e);
	if (!s->pool)
		return -1;
	rc.state_dir = s->state_dir;
	rc.max_running = (unsigned)s->opts->max_running;
	rc.max_queued = (unsigned)s->opts->max_queued;
	rc.retain_ms = s->opts->retain_ms;
	rc.max_finished = (size_t)s->opts->max_finished_jobs;
	rc.policy = &s->policy;
	rc.store = &s->store;
	rc.pool = s->pool;
	if (registry_open(&rc, &s->reg, e) < 0)
		return -1;
	s->listen_fd = open_listener(s->opts->listen, bound, sizeof(bound), &port, e);
	if (s->listen_fd < 0)
		return -1;
	if (s->opts->health_listen) {
		s->health_fd = open_listener(s->opts->health_listen, health_bound,
					     sizeof(health_bound), &health_port, e);
		if (s->health_fd < 0)
			return -1;
	}
	if (registry_start(s->reg, e) < 0)
		return -1;
	ac.listen_fd = s->listen_fd;
	ac.health_listen_fd = s->health_fd;
	ac.threads = (unsigned)s->opts->http_threads;
	ac.connection_limit = (unsigned)s->opts->max_connections;
	ac.per_ip_limit = (unsigned)s->opts->max_connections_per_ip;
	ac.request_timeout = s->opts->request_timeout;
	ac.nice = (int)s->opts->http_nice;
	ac.token = s->token;
	ac.reg = s->reg;
	ac.pool = s->pool;
	ac.policy = &s->policy;
	if (api_start(&ac, &s->api, e) < 0)
		return -1;
	s->listen_fd = -1;
	s->health_fd = -1;
	log_listening(bound, port, s->opts->health_listen ? health_bound : NULL, health_port, s);
	notify_send("READY=1");
	return 0;
}

/* The next signal, or 0 after `seconds`. */
static int wait_signal(const struct service *s, double seconds)
{
	struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
	int sig = sigtimedwait(&s->signals, NULL, &ts);

	return sig < 0 ? 0 : sig;
}

static void tick(struct service *s)
{
	api_tick(s->api);
	registry_tick(s->reg);
}

/* Serves until SIGTERM or SIGINT. */
static void serve(struct service *s)
{
	for (;;) {
		int sig = wait_signal(s, TICK_SECONDS);

		if (sig == SIGTERM || sig == SIGINT) {
			json_t *f =
				json_pack("{s:s}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");

			log_msg(LOG_INFO, f,
				"draining: no new jobs; running jobs stop and stay queued");
			json_decref(f);
			return;
		}
		if (sig == SIGHUP)
			log_info("SIGHUP ignored");
		tick(s);
	}
}

/* Waits for the running jobs to stop (and the drain grace to pass); false
 * when the time ran out or a second signal asked to stop now. */
static bool drain(struct service *s)
{
	double budget = s->opts->shutdown_timeout - SHUTDOWN_RESERVE;
	double start = now_seconds();
	double deadline = start + (budget > 0.2 ? budget : 0.2);
	double grace_end = start + s->opts->drain_grace;

	notify_send("STOPPING=1");
	registry_drain(s->reg);
	for (;;) {
		bool idle = registry_wait_idle(s->reg, TICK_SECONDS);
		double now = now_seconds();
		int sig;

		if (idle && now >= grace_end)
			return true;
		if (now >= deadline) {
			if (!idle)
				log_warn("shutdown timeout reached with jobs still running");
			return idle;
		}
		sig = wait_signal(s, idle ? TICK_SECONDS : 0.001);
		if (sig == SIGTERM || sig == SIGINT) {
			if (!idle)
				log_warn("second signal: stopping now");
			return idle;
		}
		tick(s);
	}
}

static void service_fini(struct service *s, bool clean)
{
	if (!clean) {
		registry_record_running_as_queued(s->reg);
		api_stop(s->api);
		log_warn(
			"stopped with jobs still running; they run again from the start at the next start");
		fflush(stderr);
		_exit(EXIT_FAILED);
	}
	api_stop(s->api);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->health_fd >= 0)
		close(s->health_fd);
	registry_free(s->reg);
	exec_pool_free(s->pool);
	aws_credentials_unref(s->store.credentials);
	s->store.credentials = NULL;
	store_local_confine(NULL, NULL);
	strvec_fini(&s->roots);
	strvec_fini(&s->s3_endpoints);
	free(s->state_dir);
	if (s->token) {
		explicit_bzero(s->token, strlen(s->token));
		free(s->token);
	}
}

int cli_serve(int argc, char **argv)
{
	struct serve_options opts;
	struct service s = {0};
	struct err e = {0};
	bool help, clean;
	int rc;

	options_init(&opts);
	rc = parse_args(argc, argv, &opts, &help);
	if (rc != 0 || help) {
		if (help)
			fputs(usage_text, stdout);
		options_fini(&opts);
		return rc;
	}
	log_init(opts.log_level, 1);
	s.opts = &opts;
	s.listen_fd = -1;
	s.health_fd = -1;
	sigemptyset(&s.signals);
	sigaddset(&s.signals, SIGTERM);
	sigaddset(&s.signals, SIGINT);
	sigaddset(&s.signals, SIGHUP);
	/* Every thread started from here on inherits the blocked set; the main
	 * thread takes the signals with sigtimedwait. */
	pthread_sigmask(SIG_BLOCK, &s.signals, NULL);
	if (start(&s, &e) < 0) {
		json_t *f = json_pack("{s:s}", "code", err_name(e.code));

		log_msg(LOG_ERROR, f, "cannot start: %s", e.msg);
		json_decref(f);
		rc = cli_exit_code(&e);
		if (s.api) {
			api_stop(s.api);
			s.listen_fd = -1;
			s.health_fd = -1;
		}
		if (s.listen_fd >= 0)
			close(s.listen_fd);
		if (s.health_fd >= 0)
			close(s.health_fd);
		if (s.reg)
			registry_drain(s.reg);
		registry_free(s.reg);
		exec_pool_free(s.pool);
		store_local_confine(NULL, NULL);
		strvec_fini(&s.roots);
		strvec_fini(&s.s3_endpoints);
		free(s.state_dir);
		free(s.token);
		options_fini(&opts);
		return rc == EXIT_USAGE ? EXIT_USAGE : EXIT_FAILED;
	}
	serve(&s);
	clean = drain(&s);
	service_fini(&s, clean);
	log_info("stopped");
	options_fini(&opts);
	return EXIT_OK;
}
