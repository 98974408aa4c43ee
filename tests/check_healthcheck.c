/* SPDX-License-Identifier: MIT */
/*
 * check_healthcheck: `ckptconv healthcheck` against a small HTTP responder
 * that each test starts on 127.0.0.1 with a port the kernel picks.  It
 * checks the exit codes (0 on 200, 1 on another status, a refused
 * connection or a timeout, 2 on usage errors), the one-line reason on
 * stderr, the path asked for and the address derived from CKPTCONV_LISTEN.
 */
#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ckptconv/cli.h"
#include "testutil.h"

#define MAX_ARGS 16

/* A responder that answers every connection with `status`, or holds it
 * open without answering when status is 0. */
struct responder {
	int listen_fd;
	int port;
	int status;
	pthread_t thread;
	pthread_mutex_t lock;
	char request_line[256]; /* first request line seen, under lock */
	int requests;		/* under lock */
};

static struct responder server;
static char *tmp_dir;

static void *responder_main(void *arg)
{
	struct responder *r = arg;
	char buf[4096], response[256];
	size_t used;
	ssize_t n;
	int fd;

	while ((fd = accept(r->listen_fd, NULL, NULL)) >= 0) {
		used = 0;
		while (used < sizeof(buf) - 1 &&
		       (n = read(fd, buf + used, sizeof(buf) - 1 - used)) > 0) {
			used += (size_t)n;
			buf[used] = '\0';
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		buf[used] = '\0';
		pthread_mutex_lock(&r->lock);
		if (r->requests++ == 0)
			snprintf(r->request_line, sizeof(r->request_line), "%.*s",
				 (int)strcspn(buf, "\r\n"), buf);
		pthread_mutex_unlock(&r->lock);
		if (r->status == 0)
			continue; /* keep the connection open, never answer */
		snprintf(response, sizeof(response),
			 "HTTP/1.1 %d Status\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
			 "Connection: close\r\n\r\nok\n",
			 r->status);
		if (write(fd, response, strlen(response)) < 0)
			perror("responder write");
		close(fd);
	}
	return NULL;
}

/* A port on 127.0.0.1 that was free a moment ago and has no listener. */
static int closed_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	close(fd);
	return ntohs(addr.sin_port);
}

static void responder_start(int status)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);

	memset(&server, 0, sizeof(server));
	pthread_mutex_init(&server.lock, NULL);
	server.status = status;
	server.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(server.listen_fd, 0);
	ck_assert_int_eq(bind(server.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(listen(server.listen_fd, 8), 0);
	ck_assert_int_eq(getsockname(server.listen_fd, (struct sockaddr *)&addr, &len), 0);
	server.port = ntohs(addr.sin_port);
	ck_assert_int_eq(pthread_create(&server.thread, NULL, responder_main, &server), 0);
}

static int requests_seen(char *line, size_t size)
{
	int n;

	pthread_mutex_lock(&server.lock);
	n = server.requests;
	snprintf(line, size, "%s", server.request_line);
	pthread_mutex_unlock(&server.lock);
	return n;
}

static void setup(void)
{
	tmp_dir = test_mkdtemp();
	unsetenv("CKPTCONV_LISTEN");
	unsetenv("CKPTCONV_HEALTH_LISTEN");
	server.listen_fd = -1;
}

static void teardown(void)
{
	if (server.listen_fd >= 0) {
		shutdown(server.listen_fd, SHUT_RDWR); /* ends the responder's accept loop */
		pthread_join(server.thread, NULL);
		close(server.listen_fd);
		server.listen_fd = -1;
	}
	test_rmtree(tmp_dir);
	free(tmp_dir);
	tmp_dir = NULL;
}

/* Runs `ckptconv healthcheck ARGS...` (NULL-terminated) with stderr
 * captured into `err_text`. */
static int run_healthcheck(char *err_text, size_t size, ...)
{
	char *argv[MAX_ARGS + 1];
	char *err_path = test_path(tmp_dir, "stderr");
	int argc = 0, saved_stderr, fd, rc;
	ssize_t n;
	va_list ap;

	argv[argc++] = (char *)"healthcheck";
	va_start(ap, size);
	while (argc < MAX_ARGS && (argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	va_end(ap);
	argv[argc] = NULL;

	fflush(stderr);
	saved_stderr = dup(STDERR_FILENO);
	fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	rc = cli_healthcheck(argc, argv);
	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);

	fd = open(err_path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	n = read(fd, err_text, size - 1);
	err_text[n > 0 ? n : 0] = '\0';
	close(fd);
	free(err_path);
	return rc;
}

static int count_lines(const char *text)
{
	int n = 0;

	for (; *text; text++)
		n += *text == '\n';
	return n;
}

START_TEST(test_ok_on_200)
{
	char url[128], err_text[1024], line[256];

	responder_start(200);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", server.port);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", url, NULL), EXIT_OK);
	ck_assert_str_eq(err_text, "");
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
	ck_assert_str_eq(line, "GET /healthz HTTP/1.1");
}
END_TEST

START_TEST(test_fails_on_503_with_one_line)
{
	char url[128], err_text[1024], line[256];

	responder_start(503);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", server.port);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", url, NULL),
			 EXIT_FAILED);
	ck_assert_int_eq(count_lines(err_text), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "ckptconv: unhealthy: "));
	ck_assert_ptr_nonnull(strstr(err_text, "HTTP 503"));
	ck_assert_ptr_nonnull(strstr(err_text, url));
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
}
END_TEST

START_TEST(test_fails_on_redirect)
{
	char url[128], err_text[1024];

	responder_start(302);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", server.port);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", url, NULL),
			 EXIT_FAILED);
	ck_assert_ptr_nonnull(strstr(err_text, "HTTP 302"));
}
END_TEST

START_TEST(test_fails_when_refused)
{
	char url[128], err_text[1024];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", closed_port());
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", url, NULL),
			 EXIT_FAILED);
	ck_assert_int_eq(count_lines(err_text), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "ckptconv: unhealthy: "));
	ck_assert_ptr_nonnull(strstr(err_text, url));
}
END_TEST

START_TEST(test_fails_on_timeout)
{
	char url[128], err_text[1024], line[256];

	responder_start(0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", server.port);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", url, "--timeout",
					 "0.5", NULL),
			 EXIT_FAILED);
	ck_assert_int_eq(count_lines(err_text), 1);
	ck_assert_ptr_nonnull(strstr(err_text, "ckptconv: unhealthy: "));
	ck_assert_ptr_nonnull(strstr(err_text, "timed out"));
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
}
END_TEST

START_TEST(test_wildcard_listen_probes_loopback)
{
	char listen_addr[64], err_text[1024], line[256];

	responder_start(200);
	snprintf(listen_addr, sizeof(listen_addr), "0.0.0.0:%d", server.port);
	setenv("CKPTCONV_LISTEN", listen_addr, 1);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), NULL), EXIT_OK);
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
	ck_assert_str_eq(line, "GET /healthz HTTP/1.1");
}
END_TEST

START_TEST(test_listen_address_is_used)
{
	char listen_addr[64], err_text[1024], line[256];

	responder_start(503);
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", server.port);
	setenv("CKPTCONV_LISTEN", listen_addr, 1);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), NULL), EXIT_FAILED);
	ck_assert_ptr_nonnull(strstr(err_text, "HTTP 503"));
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
}
END_TEST

START_TEST(test_health_listen_wins_over_listen)
{
	char listen_addr[64], err_text[1024], line[256];

	responder_start(200);
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", closed_port());
	setenv("CKPTCONV_LISTEN", listen_addr, 1);
	snprintf(listen_addr, sizeof(listen_addr), "0.0.0.0:%d", server.port);
	setenv("CKPTCONV_HEALTH_LISTEN", listen_addr, 1);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), NULL), EXIT_OK);
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
	ck_assert_str_eq(line, "GET /healthz HTTP/1.1");
	setenv("CKPTCONV_HEALTH_LISTEN", "127.0.0.1", 1);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), NULL), EXIT_USAGE);
	ck_assert_ptr_nonnull(strstr(err_text, "CKPTCONV_HEALTH_LISTEN=127.0.0.1"));
}
END_TEST

START_TEST(test_url_flag_wins_over_listen)
{
	char listen_addr[64], url[128], err_text[1024], line[256];

	responder_start(200);
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", closed_port());
	setenv("CKPTCONV_LISTEN", listen_addr, 1);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", server.port);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", url, NULL), EXIT_OK);
	ck_assert_int_eq(requests_seen(line, sizeof(line)), 1);
	ck_assert_str_eq(line, "GET /readyz HTTP/1.1");
}
END_TEST

START_TEST(test_usage_errors)
{
	char err_text[1024];

	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--bogus", NULL), EXIT_USAGE);
	ck_assert_ptr_nonnull(strstr(err_text, "ckptconv: usage_error: "));
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--timeout", "soon", NULL),
			 EXIT_USAGE);
	ck_assert_ptr_nonnull(strstr(err_text, "--timeout soon"));
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--timeout", "0", NULL),
			 EXIT_USAGE);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", "ftp://127.0.0.1/",
					 NULL),
			 EXIT_USAGE);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--url", NULL), EXIT_USAGE);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "extra", NULL), EXIT_USAGE);
	setenv("CKPTCONV_LISTEN", "127.0.0.1", 1);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), NULL), EXIT_USAGE);
	ck_assert_ptr_nonnull(
		strstr(err_text, "ckptconv: invalid_option: CKPTCONV_LISTEN=127.0.0.1"));
	setenv("CKPTCONV_LISTEN", "127.0.0.1:0", 1);
	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), NULL), EXIT_USAGE);
}
END_TEST

START_TEST(test_help)
{
	char err_text[1024];

	ck_assert_int_eq(run_healthcheck(err_text, sizeof(err_text), "--help", NULL), EXIT_OK);
	ck_assert_str_eq(err_text, "");
}
END_TEST

static Suite *healthcheck_suite(void)
{
	Suite *s = suite_create("healthcheck");
	TCase *tc = tcase_create("probe");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_ok_on_200);
	tcase_add_test(tc, test_fails_on_503_with_one_line);
	tcase_add_test(tc, test_fails_on_redirect);
	tcase_add_test(tc, test_fails_when_refused);
	tcase_add_test(tc, test_fails_on_timeout);
	tcase_add_test(tc, test_wildcard_listen_probes_loopback);
	tcase_add_test(tc, test_listen_address_is_used);
	tcase_add_test(tc, test_health_listen_wins_over_listen);
	tcase_add_test(tc, test_url_flag_wins_over_listen);
	tcase_add_test(tc, test_usage_errors);
	tcase_add_test(tc, test_help);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(healthcheck_suite());
}
