/* SPDX-License-Identifier: MIT */
/*
 * cli: what every subcommand shares: how an error is shown (one line on
 * stderr, or a JSON object on stdout for tools), which error codes are
 * usage errors (exit 2) rather than failures (exit 1), strict parsing of
 * numeric options, the --s3-* flags, the token file and the daemon's URL.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/cli.h"
#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define TOKEN_MAX 4096
#define HOST_MAX 256

static const enum err_code usage_codes[] = {
	ERR_USAGE_ERROR, ERR_INVALID_OPTION, ERR_INVALID_SIZE, ERR_INVALID_EXCLUDE, ERR_INVALID_PARTITION,
};

void cli_print_json(FILE *out, const json_t *doc, size_t flags)
{
	char *text = json_dumps(doc, flags);
	struct buf b = {0};
	const char *p;

	/* Outside its strings a JSON text is printable ASCII, and jansson
	 * writes well-formed UTF-8: a DEL byte or a 0xc2 lead byte can only be
	 * a character of a string. */
	for (p = text ? text : "null"; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch == 0x7f) {
			buf_puts(&b, "\\u007f");
		} else if (ch == 0xc2 && (unsigned char)p[1] <= 0x9f) {
			buf_printf(&b, "\\u00%02x", (unsigned char)p[1]);
			p++;
		} else {
			buf_append(&b, p, 1);
		}
	}
	buf_append(&b, "\n", 1);
	fwrite(b.data, 1, b.len, out);
	fflush(out);
	buf_fini(&b);
	free(text);
}

/* s as a JSON string: itself when it is UTF-8, else its printable form. */
static json_t *json_text(const char *s)
{
	struct buf shown = {0};
	json_t *v = json_string(s);

	if (!v) {
		buf_append_printable(&shown, s, strlen(s));
		v = json_string(shown.data ? shown.data : "");
		buf_fini(&shown);
	}
	return v;
}

void cli_print_error(const struct err *e, int json)
{
	const char *code = err_name(e ? e->code : ERR_NONE);
	const char *msg = e && e->code ? e->msg : "unknown failure";
	struct buf shown = {0};
	json_t *body;

	if (!json) {
		/* A message may carry a daemon's or a file's text: never raw on
		 * a terminal. */
		buf_append_printable(&shown, msg, strlen(msg));
		fprintf(stderr, "ckptconv: %s: %s\n", code, shown.data ? shown.data : "");
		buf_fini(&shown);
		return;
	}
	body = json_pack("{s:{s:s, s:o}}", "error", "code", code, "message", json_text(msg));
	if (e && e->tensor[0])
		json_object_set_new(json_object_get(body, "error"), "tensor", json_text(e->tensor));
	cli_print_json(stdout, body, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(body);
}

int cli_exit_code(const struct err *e)
{
	size_t i;

	if (!e || !e->code)
		return EXIT_FAILED;
	for (i = 0; i < sizeof(usage_codes) / sizeof(usage_codes[0]); i++)
		if (e->code == usage_codes[i])
			return EXIT_USAGE;
	return EXIT_FAILED;
}

int cli_usage_error(const char *command, int json, const char *fmt, ...)
{
	struct err e = {0};
	char text[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	err_set(&e, ERR_USAGE_ERROR, "%s (see 'ckptconv %s --help')", text, command);
	cli_print_error(&e, json);
	return EXIT_USAGE;
}

bool cli_wants_json(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			return true;
	return false;
}

int cli_option_error(const char *command, int json, int opt, const char *arg)
{
	if (opt == ':')
		return cli_usage_error(command, json, "option '%s' needs a value", arg);
	return cli_usage_error(command, json, "unknown option '%s'", arg);
}

int cli_parse_uint(const char *text, unsigned long long min, unsigned long long max,
		   unsigned long long *out)
{
	unsigned long long value;
	char *end;

	if (!text || !isdigit((unsigned char)text[0]))
		return -1;
	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || *end || value < min || value > max)
		return -1;
	*out = value;
	return 0;
}

int cli_s3_flag(struct cli_s3_flags *f, int opt, const char *value)
{
	switch (opt) {
	case CLI_OPT_S3_ENDPOINT_URL:
		f->endpoint_url = value;
		return 1;
	case CLI_OPT_S3_REGION:
		f->region = value;
		return 1;
	case CLI_OPT_S3_ADDRESSING_STYLE:
		f->addressing_style = value;
		return 1;
	}
	return 0;
}

int cli_store_config(const struct cli_s3_flags *f, struct store_config *out, int json)
{
	struct err e = {0};

	memset(out, 0, sizeof(*out));
	out->s3.endpoint_url = f->endpoint_url;
	out->s3.region = f->region;
	out->s3.addressing_style = f->addressing_style;
	if (s3_settings_check(&out->s3, &e)) {
		cli_print_error(&e, json);
		return EXIT_USAGE;
	}
	out->credentials = aws_credentials_new();
	return 0;
}

void cli_store_config_fini(struct store_config *c)
{
	if (!c)
		return;
	aws_credentials_unref(c->credentials);
	c->credentials = NULL;
}

int cli_read_token(const char *path, char **out, struct err *e)
{
	char buf[TOKEN_MAX + 2];
	size_t n;
	FILE *f;

	*out = NULL;
	f = fopen(path, "r");
	if (!f)
		return err_set_errno(e, ERR_USAGE_ERROR, errno, "token file %s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	if (n > TOKEN_MAX)
		return err_set(e, ERR_USAGE_ERROR, "token file %s is longer than %d bytes", path,
			       TOKEN_MAX);
	buf[n] = '\0';
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
		     buf[n - 1] == '\t'))
		buf[--n] = '\0';
	if (n == 0 || strlen(buf) != n)
		return err_set(e, ERR_USAGE_ERROR, "token file %s holds no usable token", path);
	*out = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

/* Host part of a listen address as a URL host: wildcards become loopback,
 * IPv6 literals get their brackets. */
static const char *url_host(const char *host, size_t len, int bracketed, char *buf, size_t size)
{
	if (len == 0 || (len == 1 && host[0] == '*') ||
	    (len == 7 && memcmp(host, "0.0.0.0", 7) == 0))
		return "127.0.0.1";
	if (len == 2 && memcmp(host, "::", 2) == 0)
		return "[::1]";
	if (bracketed || memchr(host, ':', len))
		snprintf(buf, size, "[%.*s]", (int)len, host);
	else
		snprintf(buf, size, "%.*s", (int)len, host);
	return buf;
}

int cli_listen_url(const char *variable, const char *listen, const char *path, char *url,
		   size_t size, struct err *e)
{
	const char *host = listen, *colon, *port;
	char host_buf[HOST_MAX], *end;
	size_t host_len;
	int bracketed = listen[0] == '[';
	long port_number;

	if (bracketed) {
		colon = strchr(listen, ']');
		if (!colon || colon[1] != ':')
			goto out_invalid;
		host = listen + 1;
		host_len = (size_t)(colon - host);
		colon++;
	} else {
		colon = strrchr(listen, ':');
		if (!colon)
			goto out_invalid;
		host_len = (size_t)(colon - listen);
	}
	port = colon + 1;
	errno = 0;
	port_number = strtol(port, &end, 10);
	if (errno || end == port || *end || port_number < 1 || port_number > 65535 ||
	    host_len >= sizeof(host_buf) - 2)
		goto out_invalid;
	snprintf(url, size, "http://%s:%ld%s",
		 url_host(host, host_len, bracketed, host_buf, sizeof(host_buf)), port_number,
		 path);
	return 0;
out_invalid:
	return err_set(e, ERR_INVALID_OPTION, "%s=%s: not HOST:PORT with a port from 1 to 65535",
		       variable, listen);
}
