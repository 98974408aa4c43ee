/* SPDX-License-Identifier: MIT */
/*
 * cli_healthcheck: `ckptconv healthcheck`, the probe a container runtime
 * runs inside the daemon's container (images carry no curl).  It sends one
 * GET to the daemon's /healthz and exits 0 on HTTP 200, 1 otherwise with a
 * one-line reason on stderr, 2 on a usage error.  Without --url it derives
 * the address from CKPTCONV_HEALTH_LISTEN (the daemon's health listener)
 * or else CKPTCONV_LISTEN, reaching a daemon bound to a wildcard address
 * through the loopback interface.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/cli.h"
#include "ckptconv/err.h"

#define HEALTHCHECK_DEFAULT_URL "http://127.0.0.1:8080/healthz"
#define HEALTHCHECK_DEFAULT_TIMEOUT 5.0
#define HEALTHCHECK_MAX_TIMEOUT 3600.0
#define HEALTHCHECK_URL_MAX 512

struct healthcheck_options {
	char url[HEALTHCHECK_URL_MAX];
	double timeout_seconds;
	int help;
};

static const char usage_text[] =
	"usage: ckptconv healthcheck [--url URL] [--timeout SEC]\n"
	"  --url URL      address to probe (default: /healthz of CKPTCONV_HEALTH_LISTEN,\n"
	"                 else of CKPTCONV_LISTEN, a wildcard host replaced by loopback;\n"
	"                 else " HEALTHCHECK_DEFAULT_URL ")\n"
	"  --timeout SEC  give up after SEC seconds (default 5)\n"
	"Exits 0 when the URL answers HTTP 200, 1 otherwise, 2 on a usage error.\n";

static int parse_timeout(const char *text, double *out, struct err *e)
{
	char *end;
	double value;

	errno = 0;
	value = strtod(text, &end);
	if (errno || end == text || *end || !(value > 0) || value > HEALTHCHECK_MAX_TIMEOUT)
		return err_set(e, ERR_USAGE_ERROR,
			       "--timeout %s: not a number of seconds above 0 and up to 3600",
			       text);
	*out = value;
	return 0;
}

static int parse_options(int argc, char **argv, struct healthcheck_options *opt, struct err *e)
{
	static const struct option longopts[] = {
		{"url", required_argument, NULL, 'u'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *health = getenv("CKPTCONV_HEALTH_LISTEN");
	const char *listen = getenv("CKPTCONV_LISTEN");
	const char *url = NULL;
	int c;

	memset(opt, 0, sizeof(*opt));
	opt->timeout_seconds = HEALTHCHECK_DEFAULT_TIMEOUT;
	optind = 0; /* full reset: the subcommand may run more than once per process */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case 'u':
			url = optarg;
			break;
		case 't':
			if (parse_timeout(optarg, &opt->timeout_seconds, e) < 0)
				return -1;
			break;
		case 'h':
			opt->help = 1;
			return 0;
		default:
			return err_set(e, ERR_USAGE_ERROR,
				       "healthcheck: unknown option or missing value: %s",
				       argv[optind - 1]);
		}
	}
	if (optind < argc)
		return err_set(e, ERR_USAGE_ERROR, "healthcheck: unexpected argument: %s",
			       argv[optind]);
	if (url) {
		if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
			return err_set(e, ERR_USAGE_ERROR, "--url %s: not an http:// or https:// URL",
				       url);
		if (strlen(url) >= sizeof(opt->url))
			return err_set(e, ERR_USAGE_ERROR, "--url: longer than %d characters",
				       HEALTHCHECK_URL_MAX - 1);
		snprintf(opt->url, sizeof(opt->url), "%s", url);
		return 0;
	}
	if (health && *health)
		return cli_listen_url("CKPTCONV_HEALTH_LISTEN", health, "/healthz", opt->url,
				      sizeof(opt->url), e);
	if (listen && *listen)
		return cli_listen_url("CKPTCONV_LISTEN", listen, "/healthz", opt->url,
				      sizeof(opt->url), e);
	snprintf(opt->url, sizeof(opt->url), "%s", HEALTHCHECK_DEFAULT_URL);
	return 0;
}

/* The answer's body is not needed, only its status. */
static size_t discard_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	(void)data;
	(void)userdata;
	return size * nmemb;
}

/* One GET of opt->url; 0 when it answers 200.  The probe always goes
 * straight to the daemon, never through a proxy from the environment. */
static int probe(const struct healthcheck_options *opt, struct err *e)
{
	char curl_message[CURL_ERROR_SIZE] = "";
	long timeout_ms = (long)(opt->timeout_seconds * 1000.0 + 0.5);
	long status = 0;
	CURLcode res;
	CURL *curl;
	int rc = -1;

	curl = curl_easy_init();
	if (!curl)
		return err_set(e, ERR_INTERNAL_ERROR, "healthcheck: cannot initialise libcurl");
	curl_easy_setopt(curl, CURLOPT_URL, opt->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "ckptconv-healthcheck/" PACKAGE_VERSION);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_message);
	res = curl_easy_perform(curl);
	if (res != CURLE_OK) {
		err_set(e, ERR_UNHEALTHY, "%s: %s", opt->url,
			curl_message[0] ? curl_message : curl_easy_strerror(res));
		goto out_cleanup;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		err_set(e, ERR_UNHEALTHY, "%s answered HTTP %ld", opt->url, status);
		goto out_cleanup;
	}
	rc = 0;
out_cleanup:
	curl_easy_cleanup(curl);
	return rc;
}

int cli_healthcheck(int argc, char **argv)
{
	struct healthcheck_options opt;
	struct err e = {0};

	if (parse_options(argc, argv, &opt, &e) < 0) {
		if (e.code == ERR_USAGE_ERROR)
			return cli_usage_error("healthcheck", 0, "%s", e.msg);
		cli_print_error(&e, 0);
		return cli_exit_code(&e);
	}
	if (opt.help) {
		fputs(usage_text, stdout);
		return EXIT_OK;
	}
	if (probe(&opt, &e) < 0) {
		cli_print_error(&e, 0);
		return EXIT_FAILED;
	}
	return EXIT_OK;
}
