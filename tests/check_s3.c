/* SPDX-License-Identifier: MIT */
/*
 * check_s3: the S3 client and the s3:// store against a scripted server
 * running in the test on 127.0.0.1 (one request per connection).  Covers
 * what a real object store rarely shows on demand: a server that ignores
 * Range, a wrong Content-Range, a short object, 503s that pass and 503s that
 * do not, a refused connection, 403/404 errors, a 200 that carries an
 * error, a missing AbortMultipartUpload, listing pagination, parallel
 * chunked views, and multipart writes arriving out of order from several
 * threads, a kept connection reset under an upload.  Also the settings: precedence, validation, locations and
 * addressing; and the credentials: one provider shared by the clients,
 * session tokens sent, S3's ExpiredToken answered by a refresh.  And
 * where S3 may send a signed request: AuthorizationHeaderMalformed naming
 * the bucket's region, followed and remembered; the hosts a redirect may
 * take credentials to.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/crc32c.h"
#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "ckptconv/manifest.h"
#include "ckptconv/plan.h"
#include "ckptconv/s3.h"
#include "ckptconv/s3_job.h"
#include "ckptconv/sigv4.h"
#include "ckptconv/output.h"
#include "ckptconv/store.h"
#include "../src/s3_internal.h" /* s3_route_allowed */
#include "testutil.h"

#define SECRET "secret-that-must-not-leak"

/* ---- a scripted HTTP server ---- */

struct http_buf {
	char *s;
	size_t len, cap;
};

static void http_buf_add(struct http_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = realloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void http_buf_printf(struct http_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void http_buf_printf(struct http_buf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	http_buf_add(b, s, (size_t)n);
	free(s);
}

struct request {
	char method[16];
	char target[4096];
	char range[128];
	char authorization[512];
	char security_token[128];
	struct http_buf body;
};

struct fake;
typedef void (*handler_fn)(struct fake *f, struct request *r, struct http_buf *out);

struct fake {
	int fd;
	int port;
	pthread_t thread;
	handler_fn handler;
	atomic_bool stop;
	atomic_int requests;
	pthread_mutex_t lock; /* protects the handlers' state below */
	/* multipart state of the one object the writer tests upload */
	struct http_buf parts[8];
	bool part_seen[8];
	struct http_buf object;
	int completes, aborts;
	char complete_body[4096];
	/* keep the first connection open after its answer and reset it when
	 * the next request arrives on it, as a server closing an idle
	 * connection does */
	bool reset_reused;
	int resets;
};

static void respond(struct http_buf *out, int status, const char *headers, const void *body,
		    size_t len)
{
	http_buf_printf(out, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
			status, len, headers ? headers : "");
	if (len)
		http_buf_add(out, body, len);
}

static void respond_error(struct http_buf *out, int status, const char *code)
{
	char body[512];

	snprintf(body, sizeof(body),
		 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s "
		 "happened</Message><StringToSign>" SECRET "</StringToSign></Error>",
		 code, code);
	respond(out, status, "Content-Type: application/xml\r\n", body, strlen(body));
}

static bool read_request(int fd, struct request *r)
{
	struct http_buf in = {0};
	char chunk[65536], *end, *line, *next;
	size_t header_len, want = 0;
	ssize_t n;

	memset(r, 0, sizeof(*r));
	while (!in.s || !(end = strstr(in.s, "\r\n\r\n"))) {
		n = read(fd, chunk, sizeof(chunk));
		if (n <= 0)
			goto fail;
		http_buf_add(&in, chunk, (size_t)n);
	}
	header_len = (size_t)(end - in.s) + 4;
	*end = '\0';
	sscanf(in.s, "%15s %4095s", r->method, r->target);
	for (line = strstr(in.s, "\r\n"); line; line = next) {
		line += 2;
		next = strstr(line, "\r\n");
		if (next)
			*next = '\0';
		if (strncasecmp(line, "content-length:", 15) == 0)
			want = strtoul(line + 15, NULL, 10);
		else if (strncasecmp(line, "range:", 6) == 0)
			snprintf(r->range, sizeof(r->range), "%s",
				 line + 6 + strspn(line + 6, " "));
		else if (strncasecmp(line, "authorization:", 14) == 0)
			snprintf(r->authorization, sizeof(r->authorization), "%s",
				 line + 14 + strspn(line + 14, " "));
		else if (strncasecmp(line, "x-amz-security-token:", 21) == 0)
			snprintf(r->security_token, sizeof(r->security_token), "%s",
				 line + 21 + strspn(line + 21, " "));
	}
	if (in.len > header_len)
		http_buf_add(&r->body, in.s + header_len, in.len - header_len);
	while (r->body.len < want) {
		n = read(fd, chunk, sizeof(chunk));
		if (n <= 0)
			goto fail;
		http_buf_add(&r->body, chunk, (size_t)n);
	}
	free(in.s);
	return true;
fail:
	free(in.s);
	free(r->body.s);
	return false;
}

/* The answer without "Connection: close". */
static void keep_alive(struct http_buf *out)
{
	static const char close_header[] = "Connection: close\r\n";
	char *p = strstr(out->s, close_header);
	size_t n = sizeof(close_header) - 1;

	if (p) {
		memmove(p, p + n, out->len - (size_t)(p - out->s) - n + 1);
		out->len -= n;
	}
}

/* Reads the next request on the kept connection, then resets it unanswered
 * (SO_LINGER 0 sends RST on close). */
static void reset_next_request(struct fake *f, int c)
{
	struct linger off = {.l_onoff = 1, .l_linger = 0};
	struct request r;

	f->reset_reused = false;
	if (read_request(c, &r))
		free(r.body.s);
	setsockopt(c, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
	f->resets++;
}

static void *serve(void *arg)
{
	struct fake *f = arg;
	struct pollfd p = {.fd = f->fd, .events = POLLIN};
	struct request r;
	struct http_buf out;
	size_t done;
	ssize_t n;
	int c;

	while (!atomic_load(&f->stop)) {
		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		if (read_request(c, &r)) {
			atomic_fetch_add(&f->requests, 1);
			memset(&out, 0, sizeof(out));
			f->handler(f, &r, &out);
			if (f->reset_reused)
				keep_alive(&out);
			for (done = 0; done < out.len; done += (size_t)n) {
				n = write(c, out.s + done, out.len - done);
				if (n <= 0)
					break;
			}
			free(out.s);
			free(r.body.s);
			if (f->reset_reused)
				reset_next_request(f, c);
		}
		close(c);
	}
	return NULL;
}

static struct fake *fake_start(handler_fn handler)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	char url[64];
	int one = 1;

	f->handler = handler;
	pthread_mutex_init(&f->lock, NULL);
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(f->fd, 64), 0);
	getsockname(f->fd, (struct sockaddr *)&a, &len);
	f->port = ntohs(a.sin_port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	setenv("AWS_ENDPOINT_URL_S3", url, 1);
	pthread_create(&f->thread, NULL, serve, f);
	return f;
}

static void fake_stop(struct fake *f)
{
	size_t i;

	atomic_store(&f->stop, true);
	pthread_join(f->thread, NULL);
	close(f->fd);
	for (i = 0; i < 8; i++)
		free(f->parts[i].s);
	free(f->object.s);
	free(f);
}

static void setup_env(void)
{
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_ENDPOINT_URL");
	unsetenv("AWS_ENDPOINT_URL_S3");
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	unsetenv("CKPTCONV_S3_ADDRESSING_STYLE");
	unsetenv("CKPTCONV_S3_RANGE_SIZE");
	unsetenv("CKPTCONV_S3_PART_SIZE");
	unsetenv("CKPTCONV_S3_MAX_KEYS");
	setenv("CKPTCONV_S3_MAX_ATTEMPTS", "3", 1);
}

static struct s3_client *client_with(const struct s3_settings *settings,
				     struct aws_credentials *credentials)
{
	struct s3_client *c = NULL;
	struct err e = {0};

	ck_assert_msg(s3_client_new(settings, credentials, &c, &e) == 0, "%s", e.msg);
	return c;
}

static struct s3_client *client(void)
{
	return client_with(NULL, NULL);
}

/* Object bytes: a function of the offset. */
static unsigned char byte_at(uint64_t off)
{
	return (unsigned char)((off * 7 + 3) ^ (off >> 9));
}

static bool parse_range(const char *range, uint64_t *first, uint64_t *last)
{
	unsigned long long a, b;

	if (sscanf(range, "bytes=%llu-%llu", &a, &b) != 2)
		return false;
	*first = a;
	*last = b;
	return true;
}

#define OBJECT_SIZE 300000

/* A well-behaved GET of an OBJECT_SIZE-byte object. */
static void serve_range(const struct request *r, struct http_buf *out, uint64_t size)
{
	uint64_t first, last, i;
	struct http_buf body = {0};
	char headers[128];

	if (!parse_range(r->range, &first, &last)) {
		respond_error(out, 400, "InvalidRange");
		return;
	}
	if (first >= size) {
		respond_error(out, 416, "InvalidRange");
		return;
	}
	if (last >= size)
		last = size - 1;
	for (i = first; i <= last; i++) {
		unsigned char b = byte_at(i);

		http_buf_add(&body, &b, 1);
	}
	snprintf(headers, sizeof(headers), "Content-Range: bytes %llu-%llu/%llu\r\n",
		 (unsigned long long)first, (unsigned long long)last, (unsigned long long)size);
	respond(out, 206, headers, body.s, body.len);
	free(body.s);
}

static void good_get(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	serve_range(r, out, OBJECT_SIZE);
}

/* ---- credentials from the process's provider ---- */

static atomic_uint rotations;

/* Temporary credentials "ASIA<n>" / "TOKEN<n>", new at every fetch. */
static int rotating(void *arg, struct aws_credentials_answer *out, struct err *e)
{
	unsigned n = atomic_fetch_add(&rotations, 1) + 1;

	(void)arg;
	(void)e;
	if (asprintf(&out->access_key_id, "ASIA%u", n) < 0 ||
	    asprintf(&out->secret_access_key, SECRET "%u", n) < 0 ||
	    asprintf(&out->session_token, "TOKEN%u", n) < 0)
		abort();
	out->expiration = time(NULL) + 3600;
	return 0;
}

/* Takes the first credentials for expired; serves the second ones. */
static void expiring_get(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	if (strstr(r->authorization, "Credential=ASIA1/") &&
	    strcmp(r->security_token, "TOKEN1") == 0)
		respond_error(out, 400, "ExpiredToken");
	else if (strstr(r->authorization, "Credential=ASIA2/") &&
		 strcmp(r->security_token, "TOKEN2") == 0)
		serve_range(r, out, OBJECT_SIZE);
	else
		respond_error(out, 403, "InvalidToken");
}

/* Every client given one provider signs with it, session token included;
 * S3's ExpiredToken makes the provider refresh and the request go again. */
START_TEST(test_process_credentials)
{
	struct aws_credentials *p = aws_credentials_new_custom("rotating", rotating, NULL);
	struct s3_client *c, *c2;
	struct err e = {0};
	unsigned char buf[64];
	struct fake *f;
	size_t i;

	setup_env();
	unsetenv("AWS_ACCESS_KEY_ID"); /* not the environment's keys */
	atomic_store(&rotations, 0);
	ck_assert_ptr_null(aws_credentials_source(p));
	f = fake_start(expiring_get);
	c = client_with(NULL, p);
	c2 = client_with(NULL, p);
	ck_assert_uint_eq(atomic_load(&rotations), 1); /* one provider for both */
	ck_assert_str_eq(aws_credentials_source(p), "rotating");
	ck_assert_msg(s3_get_range(c, "bkt", "obj", 10, buf, 64, &e) == 0, "%s", e.msg);
	for (i = 0; i < 64; i++)
		ck_assert_uint_eq(buf[i], byte_at(10 + i));
	ck_assert_int_eq(atomic_load(&f->requests), 2);
	ck_assert_uint_eq(atomic_load(&rotations), 2);
	/* the other client signs with the refreshed credentials at once */
	ck_assert_msg(s3_get_range(c2, "bkt", "obj", 0, buf, 64, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	s3_client_free(c);
	s3_client_free(c2);
	fake_stop(f);
	aws_credentials_unref(p);
}
END_TEST

static void always_expired(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	(void)r;
	respond_error(out, 400, "ExpiredToken");
}

/* A token S3 holds expired however often it is refreshed: s3_credentials
 * once the attempts are spent, naming the source, not s3_unavailable. */
START_TEST(test_token_stays_expired)
{
	struct aws_credentials *p = aws_credentials_new_custom("rotating", rotating, NULL);
	struct s3_client *c;
	struct err e = {0};
	unsigned char buf[64];
	struct fake *f;

	setup_env();
	unsetenv("AWS_ACCESS_KEY_ID");
	atomic_store(&rotations, 0);
	f = fake_start(always_expired);
	c = client_with(NULL, p);
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 0, buf, sizeof(buf), &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_str_eq(e.msg, "s3://bkt/obj: GetObject answered 400 ExpiredToken (ExpiredToken "
				"happened): the session token of the credentials from rotating has "
				"expired; refreshed; gave up after 3 attempts");
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	ck_assert_uint_eq(atomic_load(&rotations), 3); /* refreshed before each retry */
	s3_client_free(c);
	fake_stop(f);
	aws_credentials_unref(p);
}
END_TEST

START_TEST(test_parallel_ranged_read)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	unsigned char *buf = malloc(200001 + 16);
	size_t i;

	setup_env();
	setenv("CKPTCONV_S3_RANGE_SIZE", "64KiB", 1);
	f = fake_start(good_get);
	c = client();
	memset(buf, 0xee, 200001 + 16);
	ck_assert_msg(s3_get_range(c, "bkt", "a/b", 1000, buf, 200001, &e) == 0, "%s", e.msg);
	for (i = 0; i < 200001; i++)
		ck_assert_msg(buf[i] == byte_at(1000 + i), "byte %zu", i);
	for (i = 200001; i < 200001 + 16; i++)
		ck_assert_uint_eq(buf[i], 0xee);
	/* 200001 bytes in 64 KiB ranges: four requests. */
	ck_assert_int_eq(atomic_load(&f->requests), 4);
	s3_client_free(c);
	fake_stop(f);
	free(buf);
}
END_TEST

START_TEST(test_read_past_end_is_truncated)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	unsigned char buf[200];

	setup_env();
	f = fake_start(good_get);
	c = client();
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", OBJECT_SIZE - 100, buf, 200, &e), -1);
	ck_assert_str_eq(err_name(e.code), "file_truncated");
	ck_assert_ptr_nonnull(strstr(e.msg, "s3://bkt/obj"));
	err_clear(&e);
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", OBJECT_SIZE + 5, buf, 10, &e), -1);
	ck_assert_str_eq(err_name(e.code), "file_truncated");
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

/* Answers every GET with the whole object and 200. */
static void ignores_range(struct fake *f, struct request *r, struct http_buf *out)
{
	struct http_buf body = {0};
	uint64_t i;

	(void)f;
	(void)r;
	for (i = 0; i < OBJECT_SIZE; i++) {
		unsigned char b = byte_at(i);

		http_buf_add(&body, &b, 1);
	}
	respond(out, 200, NULL, body.s, body.len);
	free(body.s);
}

START_TEST(test_server_ignoring_range)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	unsigned char buf[116];
	size_t i;

	setup_env();
	f = fake_start(ignores_range);
	c = client();
	memset(buf, 0xee, sizeof(buf));
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 50, buf, 100, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	ck_assert_ptr_nonnull(strstr(e.msg, "Range"));
	for (i = 100; i < sizeof(buf); i++)
		ck_assert_uint_eq(buf[i], 0xee);
	/* Not retried: the answer is wrong, not late. */
	ck_assert_int_eq(atomic_load(&f->requests), 1);
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

static void whole_small_object(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	(void)r;
	respond(out, 200, NULL, "0123456789", 10);
}

START_TEST(test_unranged_answer_of_exactly_the_range)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	char buf[11] = {0};

	setup_env();
	f = fake_start(whole_small_object);
	c = client();
	/* The whole object is what was asked for: usable. */
	ck_assert_msg(s3_get_range(c, "bkt", "obj", 0, buf, 10, &e) == 0, "%s", e.msg);
	ck_assert_str_eq(buf, "0123456789");
	/* A slice of it is not. */
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 2, buf, 4, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

static void wrong_content_range(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	(void)r;
	respond(out, 206, "Content-Range: bytes 1-10/100\r\n", "0123456789", 10);
}

START_TEST(test_wrong_content_range)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	char buf[10];

	setup_env();
	f = fake_start(wrong_content_range);
	c = client();
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 0, buf, 10, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	ck_assert_ptr_nonnull(strstr(e.msg, "Content-Range"));
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

static void flaky_get(struct fake *f, struct request *r, struct http_buf *out)
{
	/* The first two attempts fail differently, the third succeeds. */
	int n = atomic_load(&f->requests);

	if (n == 1)
		respond_error(out, 503, "SlowDown");
	else if (n == 2)
		respond_error(out, 500, "InternalError");
	else
		serve_range(r, out, OBJECT_SIZE);
}

START_TEST(test_retry_then_success)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	unsigned char buf[64];
	size_t i;

	setup_env();
	f = fake_start(flaky_get);
	c = client();
	ck_assert_msg(s3_get_range(c, "bkt", "obj", 10, buf, 64, &e) == 0, "%s", e.msg);
	for (i = 0; i < 64; i++)
		ck_assert_uint_eq(buf[i], byte_at(10 + i));
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

static void always_503(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	(void)r;
	respond_error(out, 503, "ServiceUnavailable");
}

START_TEST(test_retries_are_bounded)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	char buf[8];

	setup_env();
	f = fake_start(always_503);
	c = client();
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 0, buf, 8, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_unavailable");
	ck_assert_ptr_nonnull(strstr(e.msg, "3 attempts"));
	ck_assert_ptr_nonnull(strstr(e.msg, "503"));
	ck_assert_ptr_null(strstr(e.msg, SECRET));
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

START_TEST(test_connection_refused)
{
	struct fake *f;
	struct s3_client *c;
	struct err e = {0};
	char buf[8];

	setup_env();
	/* A port that was just free and is closed again. */
	f = fake_start(always_503);
	fake_stop(f);
	c = client();
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 0, buf, 8, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_unavailable");
	ck_assert_ptr_nonnull(strstr(e.msg, "3 attempts"));
	s3_client_free(c);
}
END_TEST

static void denied(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	if (strstr(r->target, "list-type"))
		respond_error(out, 404, "NoSuchBucket");
	else
		respond_error(out, 403, "InvalidAccessKeyId");
}

START_TEST(test_error_codes)
{
	struct fake *f;
	struct s3_client *c;
	struct s3_listing l;
	struct err e = {0};
	uint64_t size;
	char buf[8];

	setup_env();
	f = fake_start(denied);
	c = client();
	ck_assert_int_eq(s3_get_range(c, "bkt", "obj", 0, buf, 8, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_access_denied");
	ck_assert_ptr_nonnull(strstr(e.msg, "InvalidAccessKeyId"));
	/* The server's StringToSign echo is never repeated. */
	ck_assert_ptr_null(strstr(e.msg, SECRET));
	err_clear(&e);
	ck_assert_int_eq(s3_head(c, "bkt", "obj", &size, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_access_denied");
	err_clear(&e);
	ck_assert_int_eq(s3_list(c, "bkt", "p/", "/", 0, &l, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_no_such_bucket");
	ck_assert_ptr_nonnull(
		strstr(e.msg, "s3://bkt/p/: ListObjectsV2 answered 404 NoSuchBucket"));
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

/* CompleteMultipartUpload answered 200 with an <Error> body, as S3 does
 * when it fails after sending the status (white space first, as S3 sends
 * while it works).  complete_errors counts how many answers fail so. */
static int complete_errors;
static const char *complete_error_code;

static void complete_then_error(struct fake *f, struct request *r, struct http_buf *out)
{
	static const char done[] = "   \n  <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				   "<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag>"
				   "</CompleteMultipartUploadResult>";
	char body[512];

	(void)r;
	if (atomic_load(&f->requests) > complete_errors) {
		respond(out, 200, NULL, done, strlen(done));
		return;
	}
	snprintf(body, sizeof(body),
		 "  \n <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
		 "<Message>We encountered an internal error. Please try again.</Message></Error>",
		 complete_error_code);
	respond(out, 200, "Content-Type: application/xml\r\n", body, strlen(body));
}

static int complete_with(int errors, const char *code, struct fake **out, struct err *e)
{
	char etag1[] = "\"e1\"", etag2[] = "\"e2\"";
	char *etags[] = {etag1, etag2};
	struct s3_client *c;
	int rc;

	complete_errors = errors;
	complete_error_code = code;
	*out = fake_start(complete_then_error);
	c = client();
	rc = s3_multipart_complete(c, "bkt", "out/model.safetensors", "up1", etags, NULL, 2, NULL, e);
	s3_client_free(c);
	return rc;
}

START_TEST(test_complete_error_with_200_is_retried)
{
	struct fake *f;
	struct err e = {0};

	setup_env();
	/* The first answer is 200 with InternalError: retried, then done. */
	ck_assert_msg(complete_with(1, "InternalError", &f, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(atomic_load(&f->requests), 2);
	fake_stop(f);
	/* SlowDown too, twice. */
	ck_assert_msg(complete_with(2, "SlowDown", &f, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	fake_stop(f);
	/* Every attempt so: s3_unavailable after CKPTCONV_S3_MAX_ATTEMPTS (3). */
	ck_assert_int_eq(complete_with(1000, "InternalError", &f, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_unavailable");
	ck_assert_ptr_nonnull(strstr(e.msg, "CompleteMultipartUpload answered 200 InternalError"));
	ck_assert_ptr_nonnull(strstr(e.msg, "gave up after 3 attempts"));
	ck_assert_ptr_nonnull(strstr(e.msg, "s3://bkt/out/model.safetensors"));
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	fake_stop(f);
	/* A permanent error in a 200 answer fails at once, with its code. */
	err_clear(&e);
	ck_assert_int_eq(complete_with(1000, "InvalidPart", &f, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_error");
	ck_assert_ptr_nonnull(strstr(e.msg, "answered 200 InvalidPart"));
	ck_assert_int_eq(atomic_load(&f->requests), 1);
	fake_stop(f);
	err_clear(&e);
	ck_assert_int_eq(complete_with(1000, "AccessDenied", &f, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_access_denied");
	ck_assert_int_eq(atomic_load(&f->requests), 1);
	fake_stop(f);
}
END_TEST

/* Three pages of two entries; checks the continuation tokens. */
static void paged_list(struct fake *f, struct request *r, struct http_buf *out)
{
	const char *page;

	(void)f;
	if (!strstr(r->target, "max-keys=2") || !strstr(r->target, "prefix=in%2F")) {
		respond_error(out, 400, "InvalidArgument");
		return;
	}
	if (!strstr(r->target, "continuation-token"))
		page = "<ListBucketResult><IsTruncated>true</IsTruncated>"
		       "<NextContinuationToken>t/1+x=</NextContinuationToken>"
		       "<Contents><Key>in/a.json</Key><Size>3</Size></Contents>"
		       "<Contents><Key>in/b &amp; c.safetensors</Key><Size>40</Size></Contents>"
		       "</ListBucketResult>";
	else if (strstr(r->target, "continuation-token=t%2F1%2Bx%3D"))
		page = "<ListBucketResult><IsTruncated>true</IsTruncated>"
		       "<NextContinuationToken>second</NextContinuationToken>"
		       "<CommonPrefixes><Prefix>in/sub/</Prefix></CommonPrefixes>"
		       "<Contents><Key>in/c.safetensors</Key><Size>5000000000</Size></Contents>"
		       "</ListBucketResult>";
	else if (strstr(r->target, "continuation-token=second"))
		page = "<ListBucketResult><IsTruncated>false</IsTruncated>"
		       "<Contents><Key>in/d.txt</Key><Size>0</Size></Contents>"
		       "</ListBucketResult>";
	else
		page = NULL;
	if (page)
		respond(out, 200, NULL, page, strlen(page));
	else
		respond_error(out, 400, "InvalidArgument");
}

START_TEST(test_list_pages)
{
	struct fake *f;
	struct s3_client *c;
	struct s3_listing l;
	struct err e = {0};

	setup_env();
	setenv("CKPTCONV_S3_MAX_KEYS", "2", 1);
	f = fake_start(paged_list);
	c = client();
	ck_assert_msg(s3_list(c, "bkt", "in/", "/", 0, &l, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(atomic_load(&f->requests), 3);
	ck_assert_uint_eq(l.nobjects, 4);
	ck_assert_str_eq(l.objects[1].key, "in/b & c.safetensors");
	ck_assert_uint_eq(l.objects[2].size, 5000000000ULL);
	ck_assert_uint_eq(l.nprefixes, 1);
	ck_assert_str_eq(l.prefixes[0], "in/sub/");
	s3_listing_fini(&l);
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

/* The answer parsers over bytes, without a server. */
/* ListMultipartUploads answers: uploads in order, pages with their
 * markers, a truncated page without NextKeyMarker refused. */
START_TEST(test_uploads_answer_parse)
{
	static const char page[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		"<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Bucket>b</Bucket><KeyMarker></KeyMarker><Prefix>out/</Prefix>"
		"<NextKeyMarker>out/b.safetensors</NextKeyMarker>"
		"<NextUploadIdMarker>u2</NextUploadIdMarker><IsTruncated>true</IsTruncated>"
		"<Upload><Key>out/a.safetensors</Key><UploadId>u1</UploadId></Upload>"
		"<Upload><Key>out/b.safetensors</Key><UploadId>u2</UploadId>"
		"<Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>"
		"</ListMultipartUploadsResult>";
	static const char last[] = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
				   "</ListMultipartUploadsResult>";
	static const char broken[] = "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>"
				     "</ListMultipartUploadsResult>";
	struct s3_uploads u = {0};
	char *next_key, *next_upload;
	struct err e = {0};
	bool more;

	ck_assert_int_eq(s3_uploads_answer_parse(page, strlen(page), "w", &u, &more, &next_key,
						 &next_upload, &e),
			 0);
	ck_assert(more);
	ck_assert_str_eq(next_key, "out/b.safetensors");
	ck_assert_str_eq(next_upload, "u2");
	ck_assert_uint_eq(u.n, 2);
	ck_assert_str_eq(u.uploads[0].key, "out/a.safetensors");
	ck_assert_str_eq(u.uploads[0].upload_id, "u1");
	ck_assert_str_eq(u.uploads[1].upload_id, "u2");
	free(next_key);
	free(next_upload);
	ck_assert_int_eq(s3_uploads_answer_parse(last, strlen(last), "w", &u, &more, &next_key,
						 &next_upload, &e),
			 0);
	ck_assert(!more);
	ck_assert_uint_eq(u.n, 2);
	ck_assert_int_eq(s3_uploads_answer_parse(broken, strlen(broken), "w", &u, &more,
						 &next_key, &next_upload, &e),
			 -1);
	ck_assert_int_eq(e.code, ERR_S3_BAD_RESPONSE);
	err_clear(&e);
	ck_assert_int_eq(s3_uploads_answer_parse("<ListBucketResult/>", 19, "w", &u, &more,
						 &next_key, &next_upload, &e),
			 -1);
	ck_assert_int_eq(e.code, ERR_S3_BAD_RESPONSE);
	s3_uploads_fini(&u);
}
END_TEST

START_TEST(test_list_answer_parse)
{
	static const char page[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>"
		"<Contents><Size>7</Size></Contents>"
		"<Contents><Key>p/a &amp; b</Key><Size>3</Size></Contents>"
		"<CommonPrefixes><Prefix>p/sub/</Prefix></CommonPrefixes></ListBucketResult>";
	static const char no_token[] =
		"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
	static const char not_listing[] = "<Error><Code>x</Code></Error>";
	struct s3_listing l = {0};
	struct err e = {0};
	char *token = NULL;
	bool truncated = false;

	ck_assert_int_eq(s3_list_answer_parse(page, strlen(page), "s3://b/p/", &l, &truncated,
					      &token, &e),
			 0);
	ck_assert(truncated);
	ck_assert_str_eq(token, "t1");
	free(token);
	/* The Contents without a Key is skipped. */
	ck_assert_uint_eq(l.nobjects, 1);
	ck_assert_str_eq(l.objects[0].key, "p/a & b");
	ck_assert_uint_eq(l.objects[0].size, 3);
	ck_assert_uint_eq(l.nprefixes, 1);
	ck_assert_str_eq(l.prefixes[0], "p/sub/");
	s3_listing_fini(&l);

	ck_assert_int_eq(s3_list_answer_parse(no_token, strlen(no_token), "s3://b/p/", &l,
					      &truncated, &token, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	ck_assert_str_eq(e.msg, "s3://b/p/: a truncated listing has no continuation token");
	ck_assert_ptr_null(token);
	ck_assert(!truncated);
	s3_listing_fini(&l);

	err_clear(&e);
	ck_assert_int_eq(s3_list_answer_parse(not_listing, strlen(not_listing), "s3://b/p/", &l,
					      &truncated, &token, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	ck_assert_str_eq(e.msg, "s3://b/p/: the listing is not a ListBucketResult");
	s3_listing_fini(&l);

	/* Bytes past `len` are not read: the page cut short is malformed. */
	err_clear(&e);
	ck_assert_int_eq(s3_list_answer_parse(page, strlen(page) - 1, "s3://b/p/", &l, &truncated,
					      &token, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	s3_listing_fini(&l);
}
END_TEST

START_TEST(test_error_answer_parse)
{
	static const char answer[] = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>"
				     "<Message>The specified key does not exist.</Message></Error>";
	struct s3_error_answer x;

	ck_assert(s3_error_answer_parse(answer, strlen(answer), &x));
	ck_assert(x.is_error);
	ck_assert_str_eq(x.code, "NoSuchKey");
	ck_assert_str_eq(x.message, "The specified key does not exist.");
	ck_assert(!s3_error_answer_parse("Service Unavailable", strlen("Service Unavailable"), &x));
	ck_assert(!x.is_error);
	ck_assert_str_eq(x.code, "");
	ck_assert_str_eq(x.message, "");
}
END_TEST

START_TEST(test_multipart_answer_parse)
{
	static const char created[] =
		"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
		"<UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>";
	static const char no_id[] =
		"<InitiateMultipartUploadResult><UploadId></UploadId></InitiateMultipartUploadResult>";
	static const char completed[] = "<CompleteMultipartUploadResult><ETag>\"3858f6-9\"</ETag>"
					"</CompleteMultipartUploadResult>";
	static const char failed[] = "<Error><Code>InternalError</Code><Message>We encountered an "
				     "internal error.</Message></Error>";
	char etag[S3_ETAG_MAX];
	struct err e = {0};
	char *upload_id = NULL;

	ck_assert_int_eq(s3_create_multipart_answer_parse(created, strlen(created), "s3://b/k",
							  &upload_id, &e),
			 0);
	ck_assert_str_eq(upload_id, "VXBsb2FkIElE");
	free(upload_id);
	ck_assert_int_eq(s3_create_multipart_answer_parse(no_id, strlen(no_id), "s3://b/k",
							  &upload_id, &e),
			 -1);
	ck_assert_ptr_null(upload_id);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
	ck_assert_str_eq(e.msg, "s3://b/k: CreateMultipartUpload answered no UploadId");

	err_clear(&e);
	ck_assert_int_eq(s3_complete_multipart_answer_parse(completed, strlen(completed),
							    "s3://b/k", etag, &e),
			 0);
	ck_assert_int_eq(e.code, ERR_NONE);
	ck_assert_str_eq(etag, "\"3858f6-9\"");
	ck_assert_int_eq(s3_complete_multipart_answer_parse(failed, strlen(failed), "s3://b/k",
							    etag, &e),
			 -1);
	ck_assert_str_eq(etag, "");
	ck_assert_str_eq(err_name(e.code), "s3_error");
	ck_assert_str_eq(e.msg, "s3://b/k: CompleteMultipartUpload failed: InternalError (We "
				"encountered an internal error.)");
	err_clear(&e);
	ck_assert_int_eq(s3_complete_multipart_answer_parse("<Complete", strlen("<Complete"),
							    "s3://b/k", NULL, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "s3_bad_response");
}
END_TEST

START_TEST(test_store_listing_and_view)
{
	struct store_entry *entries;
	struct store_view v;
	struct store *s;
	struct fake *f;
	struct err e = {0};
	size_t n, i;

	setup_env();
	setenv("CKPTCONV_S3_MAX_KEYS", "2", 1);
	f = fake_start(paged_list);
	ck_assert_msg(store_open("s3://bkt/in", &s, &e) == 0, "%s", e.msg);
	ck_assert_str_eq(s->location, "s3://bkt/in");
	ck_assert_msg(store_list(s, &entries, &n, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(n, 5);
	ck_assert_str_eq(entries[0].name, "a.json");
	ck_assert_str_eq(entries[1].name, "b & c.safetensors");
	ck_assert_str_eq(entries[4].name, "sub");
	ck_assert_int_eq(entries[4].kind, STORE_DIR);
	ck_assert_int_eq(entries[3].kind, STORE_FILE);
	store_entries_free(entries, n);
	store_free(s);
	fake_stop(f);

	setenv("CKPTCONV_S3_RANGE_SIZE", "64KiB", 1);
	f = fake_start(good_get);
	ck_assert_msg(store_open("s3://bkt/in/", &s, &e) == 0, "%s", e.msg);
	ck_assert_msg(store_view(s, "x.safetensors", 7, 250000, &v, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(v.len, 250000);
	ck_assert_str_eq(v.file, "x.safetensors");
	for (i = 0; i < v.len; i++)
		ck_assert_msg(v.data[i] == byte_at(7 + i), "byte %zu", i);
	store_view_release(&v);
	store_free(s);
	fake_stop(f);
}
END_TEST

static void empty_bucket(struct fake *f, struct request *r, struct http_buf *out)
{
	static const char empty[] = "<ListBucketResult><IsTruncated>false</IsTruncated>"
				    "</ListBucketResult>";

	(void)f;
	(void)r;
	respond(out, 200, NULL, empty, strlen(empty));
}

START_TEST(test_empty_prefix_is_not_found)
{
	struct store_entry *entries;
	struct store *s;
	struct fake *f;
	struct err e = {0};
	size_t n;

	setup_env();
	f = fake_start(empty_bucket);
	ck_assert_msg(store_open("s3://bkt/none/", &s, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	ck_assert_ptr_nonnull(strstr(e.msg, "s3://bkt/none"));
	store_free(s);
	fake_stop(f);
}
END_TEST

/* A one-object S3: multipart upload, PutObject, listing of nothing. */
static void mini_s3(struct fake *f, struct request *r, struct http_buf *out)
{
	static const char create[] = "<InitiateMultipartUploadResult><UploadId>up/1+=</UploadId>"
				     "</InitiateMultipartUploadResult>";
	static const char done[] = "<CompleteMultipartUploadResult><ETag>\"x-3\"</ETag>"
				   "</CompleteMultipartUploadResult>";
	char etag[64], *pn;
	unsigned part, i;

	pthread_mutex_lock(&f->lock);
	if (strcmp(r->method, "GET") == 0 && strstr(r->target, "list-type")) {
		empty_bucket(f, r, out);
	} else if (strcmp(r->method, "POST") == 0 && strstr(r->target, "?uploads=")) {
		respond(out, 200, NULL, create, strlen(create));
	} else if (strcmp(r->method, "PUT") == 0 && (pn = strstr(r->target, "partNumber="))) {
		part = (unsigned)atoi(pn + 11);
		if (!strstr(r->target, "uploadId=up%2F1%2B%3D") || part < 1 || part > 8) {
			respond_error(out, 400, "InvalidPart");
			goto out_unlock;
		}
		free(f->parts[part - 1].s);
		f->parts[part - 1] = r->body;
		memset(&r->body, 0, sizeof(r->body));
		f->part_seen[part - 1] = true;
		snprintf(etag, sizeof(etag), "ETag: \"etag-%u\"\r\n", part);
		respond(out, 200, etag, NULL, 0);
	} else if (strcmp(r->method, "POST") == 0 && strstr(r->target, "uploadId=")) {
		f->completes++;
		snprintf(f->complete_body, sizeof(f->complete_body), "%s",
			 r->body.s ? r->body.s : "");
		for (i = 0; i < 8 && f->part_seen[i]; i++)
			http_buf_add(&f->object, f->parts[i].s, f->parts[i].len);
		respond(out, 200, "x-amz-version-id: v7\r\n", done, strlen(done));
	} else if (strcmp(r->method, "DELETE") == 0 && strstr(r->target, "uploadId=")) {
		f->aborts++;
		respond_error(out, 405, "MethodNotAllowed");
	} else if (strcmp(r->method, "PUT") == 0) {
		free(f->object.s);
		f->object = r->body;
		memset(&r->body, 0, sizeof(r->body));
		respond(out, 200, "ETag: \"single\"\r\n", NULL, 0);
	} else {
		respond_error(out, 400, "Unexpected");
	}
out_unlock:
	pthread_mutex_unlock(&f->lock);
}

#define PART (5u << 20)
#define OUT_SIZE (2 * PART + 12345)
#define PIECE 300000

struct writer_job {
	struct store_writer *w;
	const unsigned char *data;
	int parity;
};

/* Writes every other piece, last first, so parts complete out of order. */
static void *write_pieces(void *arg)
{
	struct writer_job *j = arg;
	struct err e = {0};
	long piece;
	uint64_t off;
	size_t len;

	for (piece = (OUT_SIZE + PIECE - 1) / PIECE - 1; piece >= 0; piece--) {
		if (piece % 2 != j->parity)
			continue;
		off = (uint64_t)piece * PIECE;
		len = OUT_SIZE - off < PIECE ? OUT_SIZE - off : PIECE;
		ck_assert_msg(store_writer_write(j->w, off, j->data + off, len, &e) == 0, "%s",
			      e.msg);
	}
	return NULL;
}

START_TEST(test_multipart_writer)
{
	struct store_output_options o = {.overwrite = false, .durable = true};
	struct writer_job jobs[2];
	struct store_identity id;
	struct store_writer *w;
	pthread_t t[2];
	unsigned char *data = malloc(OUT_SIZE);
	struct store *s;
	struct fake *f;
	struct err e = {0};
	size_t i;

	setup_env();
	setenv("CKPTCONV_S3_PART_SIZE", "5MiB", 1);
	for (i = 0; i < OUT_SIZE; i++)
		data[i] = byte_at(i * 13);
	f = fake_start(mini_s3);
	ck_assert_msg(store_open("s3://bkt/out/", &s, &e) == 0, "%s", e.msg);
	ck_assert_msg(output_prepare(s, &o, &e) == 0, "%s", e.msg);
	ck_assert_msg(store_writer_open(s, "model.safetensors", OUT_SIZE, &w, &e) == 0, "%s",
		      e.msg);
	for (i = 0; i < 2; i++) {
		jobs[i] = (struct writer_job){w, data, (int)i};
		pthread_create(&t[i], NULL, write_pieces, &jobs[i]);
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	/* Every part went up as soon as it was complete, before commit. */
	ck_assert(f->part_seen[0] && f->part_seen[1] && f->part_seen[2] && !f->part_seen[3]);
	ck_assert_int_eq(f->completes, 0);
	ck_assert_msg(store_writer_publish(w, &id, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(f->completes, 1);
	/* Its identity as published: the completion's ETag and VersionId. */
	ck_assert_int_eq(id.kind, STORE_ID_OBJECT);
	ck_assert_str_eq(id.etag, "\"x-3\"");
	ck_assert_str_eq(id.version_id, "v7");
	/* Each part listed with the CRC-32C it was sent with. */
	{
		char want[512], c1[9], c2[9], c3[9];
		size_t part = 5u << 20;

		crc32c_base64(crc32c(0, data, part), c1);
		crc32c_base64(crc32c(0, data + part, part), c2);
		crc32c_base64(crc32c(0, data + 2 * part, OUT_SIZE - 2 * part), c3);
		snprintf(want, sizeof(want),
			 "<Part><PartNumber>1</PartNumber><ETag>&quot;etag-1&quot;</ETag>"
			 "<ChecksumCRC32C>%s</ChecksumCRC32C></Part><Part><PartNumber>2</PartNumber>"
			 "<ETag>&quot;etag-2&quot;</ETag><ChecksumCRC32C>%s</ChecksumCRC32C></Part>"
			 "<Part><PartNumber>3</PartNumber><ETag>&quot;etag-3&quot;</ETag>"
			 "<ChecksumCRC32C>%s</ChecksumCRC32C></Part>",
			 c1, c2, c3);
		ck_assert_msg(strstr(f->complete_body, want), "%s", f->complete_body);
	}
	ck_assert_uint_eq(f->object.len, OUT_SIZE);
	ck_assert(memcmp(f->object.s, data, OUT_SIZE) == 0);
	ck_assert_uint_eq(f->parts[2].len, 12345);

	/* Abort on a server without AbortMultipartUpload: logged, no error. */
	ck_assert_msg(store_writer_open(s, "model-00001-of-00002.safetensors", OUT_SIZE, &w, &e) ==
			      0,
		      "%s", e.msg);
	ck_assert_int_eq(store_writer_write(w, 0, data, 1000, &e), 0);
	store_writer_abort(w);
	ck_assert_int_eq(f->aborts, 1);
	ck_assert_int_eq(f->completes, 1);

	/* A small file goes up by one PutObject at commit. */
	ck_assert_msg(store_writer_open(s, "config.json", 6, &w, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(store_writer_write(w, 3, "def", 3, &e), 0);
	ck_assert_int_eq(store_writer_write(w, 0, "abc", 3, &e), 0);
	ck_assert_msg(store_writer_publish(w, &id, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(f->object.len, 6);
	ck_assert_int_eq(id.kind, STORE_ID_OBJECT);
	ck_assert_str_eq(id.etag, "\"single\"");
	ck_assert_str_eq(id.version_id, "");
	ck_assert(memcmp(f->object.s, "abcdef", 6) == 0);
	store_free(s);
	fake_stop(f);
	free(data);
}
END_TEST

/* ---- resuming: a published object kept by its ETag ---- */

static atomic_int resume_heads, resume_gets;
static const char *resume_etag; /* the object's ETag now */

/* One OBJECT_SIZE-byte object of byte_at bytes, whose ETag is resume_etag. */
static void published_object(struct fake *f, struct request *r, struct http_buf *out)
{
	(void)f;
	if (strcmp(r->method, "HEAD") == 0) {
		atomic_fetch_add(&resume_heads, 1);
		http_buf_printf(out,
				"HTTP/1.1 200 X\r\nContent-Length: %d\r\nConnection: close\r\n"
				"ETag: %s\r\n\r\n",
				OBJECT_SIZE, resume_etag);
	} else if (strcmp(r->method, "GET") == 0) {
		atomic_fetch_add(&resume_gets, 1);
		serve_range(r, out, OBJECT_SIZE);
	} else {
		respond_error(out, 400, "Unexpected");
	}
}

/* manifest_keep_files over the object, recorded with ETag `recorded` and
 * CRC-32C `crc`: whether it was kept, and the ETag the new record holds. */
static bool keep_object(const char *recorded, uint32_t crc, char etag_out[S3_ETAG_MAX])
{
	unsigned char header[64];
	struct plan_file pf = {.name = "model.safetensors", .size = OBJECT_SIZE,
			       .header = (char *)header, .header_len = sizeof(header)};
	struct plan p = {.files = &pf, .nfiles = 1};
	struct store_entry entry = {.name = "model.safetensors", .size = OBJECT_SIZE,
				    .kind = STORE_FILE};
	struct manifest_sums *sums = manifest_sums_new("", NULL, NULL), *into;
	struct store_identity id = {.kind = STORE_ID_OBJECT};
	const struct manifest_sum *kept_sum;
	uint64_t files, bytes;
	bool kept = false;
	struct store *s;
	struct err e = {0};
	size_t i;

	for (i = 0; i < sizeof(header); i++)
		header[i] = byte_at(i);
	snprintf(id.etag, sizeof(id.etag), "%s", recorded);
	ck_assert_int_eq(manifest_sums_note(sums, pf.name, OBJECT_SIZE, crc, &id, &e), 0);
	into = manifest_sums_new("", NULL, NULL);
	ck_assert_msg(store_open("s3://bkt/out/", &s, &e) == 0, "%s", e.msg);
	ck_assert_msg(manifest_keep_files(s, &p, NULL, sums, &entry, 1, 2, into, &kept, &files,
					  &bytes, &e) == 0,
		      "%s", e.msg);
	ck_assert_uint_eq(files, kept ? 1 : 0);
	kept_sum = manifest_sums_find(into, pf.name);
	ck_assert(kept == (kept_sum != NULL));
	snprintf(etag_out, S3_ETAG_MAX, "%s", kept_sum ? kept_sum->id.etag : "");
	store_free(s);
	manifest_sums_free(sums);
	manifest_sums_free(into);
	return kept;
}

/* A published object whose ETag (HeadObject) is the one recorded when it
 * was published is kept without a GET; one with another ETag (written
 * again since) is read back whole and kept only when its CRC-32C is the
 * recorded one, else left to be written again. */
START_TEST(test_resume_keeps_by_etag)
{
	char etag[S3_ETAG_MAX];
	uint32_t crc = 0;
	unsigned char b;
	struct fake *f;
	uint64_t i;

	setup_env();
	for (i = 0; i < OBJECT_SIZE; i++) {
		b = byte_at(i);
		crc = crc32c(crc, &b, 1);
	}
	f = fake_start(published_object);

	resume_etag = "\"e1\"";
	atomic_store(&resume_heads, 0);
	atomic_store(&resume_gets, 0);
	ck_assert(keep_object("\"e1\"", crc, etag));
	ck_assert_int_eq(atomic_load(&resume_heads), 1);
	ck_assert_int_eq(atomic_load(&resume_gets), 0);
	ck_assert_str_eq(etag, "\"e1\"");

	/* Written again with the same bytes: read back, kept, its new ETag
	 * recorded. */
	resume_etag = "\"e2\"";
	atomic_store(&resume_gets, 0);
	ck_assert(keep_object("\"e1\"", crc, etag));
	ck_assert_int_gt(atomic_load(&resume_gets), 1); /* the header, then the whole */
	ck_assert_str_eq(etag, "\"e2\"");

	/* Written again with other bytes: read back, not kept. */
	atomic_store(&resume_gets, 0);
	ck_assert(!keep_object("\"e1\"", crc ^ 1, etag));
	ck_assert_int_gt(atomic_load(&resume_gets), 0);

	/* The ETag unchanged but the record's CRC-32C another: trusted, as
	 * S3 changes the ETag with every write (verify --checksums reads). */
	atomic_store(&resume_gets, 0);
	ck_assert(keep_object("\"e2\"", crc ^ 1, etag));
	ck_assert_int_eq(atomic_load(&resume_gets), 0);
	fake_stop(f);
}
END_TEST

/* A server closes a kept connection while curl sends the next UploadPart on
 * it: curl sends the part again on a new connection, rewinding the body. */
START_TEST(test_reused_connection_reset_on_upload)
{
	static const char body1[] = "first part", body2[] = "second part, sent twice";
	struct s3_client *c;
	struct fake *f;
	struct err e = {0};
	char *etag = NULL;

	setup_env();
	f = fake_start(mini_s3);
	f->reset_reused = true;
	c = client();
	ck_assert_msg(s3_multipart_upload_part(c, "bkt", "k", "up/1+=", 1, body1,
					       sizeof(body1) - 1, &etag, NULL, &e) == 0,
		      "%s", e.msg);
	free(etag);
	ck_assert_msg(s3_multipart_upload_part(c, "bkt", "k", "up/1+=", 2, body2,
					       sizeof(body2) - 1, &etag, NULL, &e) == 0,
		      "%s", e.msg);
	ck_assert_str_eq(etag, "\"etag-2\"");
	free(etag);
	ck_assert_int_eq(f->resets, 1);
	ck_assert_uint_eq(f->parts[1].len, sizeof(body2) - 1);
	ck_assert(memcmp(f->parts[1].s, body2, sizeof(body2) - 1) == 0);
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

static void one_object(struct fake *f, struct request *r, struct http_buf *out)
{
	static const char listing[] = "<ListBucketResult><IsTruncated>false</IsTruncated>"
				      "<Contents><Key>out/old.txt</Key><Size>3</Size></Contents>"
				      "</ListBucketResult>";

	(void)f;
	(void)r;
	respond(out, 200, NULL, listing, strlen(listing));
}

START_TEST(test_destination_not_empty)
{
	struct store_output_options o = {.overwrite = false};
	struct store *s;
	struct fake *f;
	struct err e = {0};

	setup_env();
	f = fake_start(one_object);
	ck_assert_msg(store_open("s3://bkt/out/", &s, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(output_prepare(s, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	ck_assert_ptr_nonnull(strstr(e.msg, "old.txt"));
	store_free(s);
	fake_stop(f);
}
END_TEST

/* ---- settings, locations, addressing ---- */

START_TEST(test_locations)
{
	char *b, *p;
	struct err e = {0};

	ck_assert_int_eq(s3_location_parse("s3://bkt/a/b", &b, &p, &e), 0);
	ck_assert_str_eq(b, "bkt");
	ck_assert_str_eq(p, "a/b/");
	free(b);
	free(p);
	ck_assert_int_eq(s3_location_parse("s3://bkt", &b, &p, &e), 0);
	ck_assert_str_eq(p, "");
	free(b);
	free(p);
	ck_assert_int_eq(s3_location_parse("s3://bkt/", &b, &p, &e), 0);
	ck_assert_str_eq(p, "");
	free(b);
	free(p);
	ck_assert_int_eq(s3_location_parse("s3://bkt/a/../etc/", &b, &p, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_location");
	err_clear(&e);
	ck_assert_int_eq(s3_location_parse("s3://bkt/a//b/", &b, &p, &e), -1);
	err_clear(&e);
	ck_assert_int_eq(s3_location_parse("s3://b/x", &b, &p, &e), -1);
	err_clear(&e);
	ck_assert_int_eq(s3_location_parse("s3:///x", &b, &p, &e), -1);

	ck_assert(s3_location_within("s3://bkt/models/ling/", "s3://bkt/models/"));
	ck_assert(s3_location_within("s3://bkt/models", "s3://bkt/models/"));
	ck_assert(s3_location_within("s3://bkt/anything/", "s3://bkt"));
	ck_assert(!s3_location_within("s3://bkt/models-evil/", "s3://bkt/models/"));
	ck_assert(!s3_location_within("s3://bkt2/models/", "s3://bkt/models/"));
	ck_assert(!s3_location_within("s3://bkt/", "s3://bkt/models/"));
	ck_assert(!s3_location_within("s3://bkt/models/../x/", "s3://bkt/models/"));
}
END_TEST

/* A bucket in eu-west-1: a request signed for another region is answered
 * AuthorizationHeaderMalformed naming eu-west-1, as S3 does. */
static void regional_get(struct fake *f, struct request *r, struct http_buf *out)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
		"AuthorizationHeaderMalformed</Code><Message>The authorization header is "
		"malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>"
		"<Region>eu-west-1</Region></Error>";

	(void)f;
	if (strstr(r->authorization, "/eu-west-1/s3/aws4_request"))
		serve_range(r, out, OBJECT_SIZE);
	else
		respond(out, 400, "Content-Type: application/xml\r\n", body, strlen(body));
}

/* The region S3 names is signed for, and kept for the bucket's later
 * requests. */
START_TEST(test_region_named_by_s3)
{
	unsigned char buf[100];
	struct s3_client *c;
	struct err e = {0};
	struct fake *f;

	setup_env();
	f = fake_start(regional_get);
	c = client();
	ck_assert_msg(s3_get_range(c, "bkt", "obj", 10, buf, sizeof(buf), &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(buf[0], byte_at(10));
	ck_assert_int_eq(atomic_load(&f->requests), 2);
	ck_assert_msg(s3_get_range(c, "bkt", "obj", 20, buf, sizeof(buf), &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(buf[0], byte_at(20));
	ck_assert_int_eq(atomic_load(&f->requests), 3); /* signed for eu-west-1 at once */
	s3_client_free(c);
	fake_stop(f);
}
END_TEST

/* Which hosts a redirect may take a request's credentials to. */
START_TEST(test_redirect_hosts)
{
	struct s3_settings custom = {.endpoint_url = "https://s3.example.com:9000"};
	struct s3_settings custom_default = {.endpoint_url = "https://s3.example.com:443"};
	struct s3_settings custom_http = {.endpoint_url = "http://127.0.0.1:18781"};
	struct s3_settings custom_v6 = {.endpoint_url = "http://[::1]:9000"};
	struct s3_client *aws, *c;
	char why[300];

	setup_env();
	aws = client_with(NULL, NULL);
	ck_assert(s3_route_allowed(aws, "bkt", "bkt.s3.eu-west-1.amazonaws.com", true, why,
				   sizeof(why)));
	ck_assert(
		s3_route_allowed(aws, "bkt", "s3.eu-west-1.amazonaws.com", true, why, sizeof(why)));
	ck_assert(s3_route_allowed(aws, "my.bkt", "my.bkt.s3-eu-west-1.amazonaws.com", true, why,
				   sizeof(why)));
	ck_assert(s3_route_allowed(aws, "bkt", "s3.cn-north-1.amazonaws.com.cn", true, why,
				   sizeof(why)));
	/* not S3, not AWS, a port, http, a name that only ends like AWS's */
	ck_assert(!s3_route_allowed(aws, "bkt", "ec2-1-2-3-4.compute-1.amazonaws.com", true, why,
				    sizeof(why)));
	ck_assert_str_eq(
		why, "'ec2-1-2-3-4.compute-1.amazonaws.com' is not an S3 host of amazonaws.com");
	ck_assert(!s3_route_allowed(aws, "bkt", "bkt.s3.evil.example", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(aws, "bkt", "s3.eu-west-1.amazonaws.com:8443", true, why,
				    sizeof(why)));
	ck_assert(!s3_route_allowed(aws, "bkt", "s3.notamazonaws.com", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(aws, "bkt", "s3.eu-west-1.amazonaws.com", false, why,
				    sizeof(why)));
	ck_assert_str_eq(why, "it leaves https for http");
	ck_assert(!s3_route_allowed(aws, "bkt", "user@s3.amazonaws.com", true, why, sizeof(why)));
	s3_client_free(aws);

	/* a custom endpoint: its host or a name under it, on its port */
	c = client_with(&custom, NULL);
	ck_assert(s3_route_allowed(c, "bkt", "s3.example.com:9000", true, why, sizeof(why)));
	ck_assert(s3_route_allowed(c, "bkt", "bkt.s3.example.com:9000", true, why, sizeof(why)));
	ck_assert(s3_route_allowed(c, "bkt", "BKT.S3.Example.COM:9000", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "s3.example.com:9001", true, why, sizeof(why)));
	ck_assert_str_eq(why,
			 "'s3.example.com:9001' is on port 9001, not the endpoint's port 9000");
	ck_assert(!s3_route_allowed(c, "bkt", "bkt.s3.example.com", true, why, sizeof(why)));
	ck_assert_str_eq(why, "'bkt.s3.example.com' is on port 443, not the endpoint's port 9000");
	ck_assert(!s3_route_allowed(c, "bkt", "s3.example.com:09000x", true, why, sizeof(why)));
	ck_assert_str_eq(why, "'s3.example.com:09000x' is not a host name");
	ck_assert(!s3_route_allowed(c, "bkt", "s3.example.com:", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "s3.example.com:99000", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "example.com:9000", true, why, sizeof(why)));
	ck_assert_str_eq(
		why, "'example.com' is neither the endpoint's host 's3.example.com' nor under it");
	ck_assert(!s3_route_allowed(c, "bkt", "evils3.example.com:9000", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "s3.example.com:9000", false, why, sizeof(why)));
	ck_assert_str_eq(why, "it leaves https for http");
	s3_client_free(c);

	/* no port on either side: the scheme's default */
	c = client_with(&custom_default, NULL);
	ck_assert(s3_route_allowed(c, "bkt", "s3.example.com", true, why, sizeof(why)));
	ck_assert(s3_route_allowed(c, "bkt", "bkt.s3.example.com:443", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "bkt.s3.example.com:8443", true, why, sizeof(why)));
	ck_assert_str_eq(why,
			 "'bkt.s3.example.com:8443' is on port 8443, not the endpoint's port 443");
	s3_client_free(c);
	c = client_with(&custom_http, NULL);
	ck_assert(s3_route_allowed(c, "bkt", "127.0.0.1:18781", false, why, sizeof(why)));
	ck_assert(s3_route_allowed(c, "bkt", "127.0.0.1:18781", true, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "127.0.0.1:18782", false, why, sizeof(why)));
	ck_assert_str_eq(why, "'127.0.0.1:18782' is on port 18782, not the endpoint's port 18781");
	ck_assert(!s3_route_allowed(c, "bkt", "127.0.0.1", false, why, sizeof(why)));
	ck_assert_str_eq(why, "'127.0.0.1' is on port 80, not the endpoint's port 18781");
	s3_client_free(c);
	c = client_with(&custom_v6, NULL);
	ck_assert(s3_route_allowed(c, "bkt", "[::1]:9000", false, why, sizeof(why)));
	ck_assert(!s3_route_allowed(c, "bkt", "[::1]:9001", false, why, sizeof(why)));
	ck_assert_str_eq(why, "'[::1]:9001' is on port 9001, not the endpoint's port 9000");
	ck_assert(!s3_route_allowed(c, "bkt", "[::1]", false, why, sizeof(why)));
	s3_client_free(c);
}
END_TEST

START_TEST(test_endpoints)
{
	struct err e = {0};
	char *n;

	n = s3_endpoint_normalize("HTTP://MinIO.Local:80/", &e);
	ck_assert_str_eq(n, "http://minio.local");
	free(n);
	n = s3_endpoint_normalize("https://s3.example.com:9443", &e);
	ck_assert_str_eq(n, "https://s3.example.com:9443");
	free(n);
	n = s3_endpoint_normalize("http://[::1]:9000", &e);
	ck_assert_str_eq(n, "http://[::1]:9000");
	free(n);
	ck_assert_ptr_null(s3_endpoint_normalize("http://user:pw@host", &e));
	ck_assert_str_eq(err_name(e.code), "s3_config");
	ck_assert_ptr_null(strstr(e.msg, "pw@"));
	ck_assert_ptr_null(s3_endpoint_normalize("ftp://host", NULL));
	ck_assert_ptr_null(s3_endpoint_normalize("http://host/path", NULL));
	ck_assert_ptr_null(s3_endpoint_normalize("http://host:99999", NULL));
	ck_assert_ptr_null(s3_endpoint_normalize("http://host?x=1", NULL));
}
END_TEST

static char *signed_url_with(const struct s3_settings *settings, const char *bucket)
{
	struct s3_signed_request r;
	struct s3_client *c = client_with(settings, NULL);
	struct err e = {0};
	char *url;

	ck_assert_msg(s3_sign_request(c, "GET", bucket, "k", NULL, 0, NULL, NULL, 0, 0, &r, &e) ==
			      0,
		      "%s", e.msg);
	url = strdup(r.url);
	s3_signed_request_fini(&r);
	s3_client_free(c);
	return url;
}

static char *signed_url(const char *bucket)
{
	return signed_url_with(NULL, bucket);
}

START_TEST(test_settings_precedence)
{
	struct s3_settings flags = {.endpoint_url = "http://flag.example:1", .region = "eu-west-1"};
	struct s3_settings job = {.endpoint_url = "http://job.example:2"};
	struct s3_settings bad = {.addressing_style = "sideways"};
	struct s3_settings layered;
	struct s3_client *c;
	struct err e = {0};
	char *url;

	setup_env();
	/* AWS itself: virtual-hosted unless the bucket has dots. */
	setenv("AWS_DEFAULT_REGION", "ap-south-1", 1);
	url = signed_url("bkt");
	ck_assert_str_eq(url, "https://bkt.s3.ap-south-1.amazonaws.com/k");
	free(url);
	url = signed_url("my.bkt");
	ck_assert_str_eq(url, "https://s3.ap-south-1.amazonaws.com/my.bkt/k");
	free(url);
	/* A custom endpoint: path-style, unless asked otherwise. */
	setenv("AWS_ENDPOINT_URL", "http://env.example:3", 1);
	url = signed_url("bkt");
	ck_assert_str_eq(url, "http://env.example:3/bkt/k");
	free(url);
	setenv("CKPTCONV_S3_ADDRESSING_STYLE", "virtual", 1);
	url = signed_url("bkt");
	ck_assert_str_eq(url, "http://bkt.env.example:3/k");
	free(url);
	unsetenv("CKPTCONV_S3_ADDRESSING_STYLE");
	setenv("AWS_ENDPOINT_URL_S3", "http://env-s3.example:4", 1);
	url = signed_url("bkt");
	ck_assert_str_eq(url, "http://env-s3.example:4/bkt/k");
	free(url);
	/* Flags beat the environment, a job's settings laid over them beat
	 * both. */
	layered = flags;
	url = signed_url_with(&layered, "bkt");
	ck_assert_str_eq(url, "http://flag.example:1/bkt/k");
	free(url);
	s3_settings_overlay(&layered, &job);
	url = signed_url_with(&layered, "bkt");
	ck_assert_str_eq(url, "http://job.example:2/bkt/k");
	free(url);
	/* what the job does not set stays the flags' */
	ck_assert_str_eq(layered.region, "eu-west-1");
	s3_settings_overlay(&layered, NULL);
	ck_assert_str_eq(layered.endpoint_url, "http://job.example:2");
	url = signed_url_with(&flags, "bkt");
	ck_assert_str_eq(url, "http://flag.example:1/bkt/k");
	free(url);
	ck_assert_int_eq(s3_client_new(&bad, NULL, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_config");
}
END_TEST

START_TEST(test_missing_credentials)
{
	struct s3_client *c;
	struct store *s;
	struct err e = {0};

	setup_env();
	unsetenv("AWS_SECRET_ACCESS_KEY");
	ck_assert_int_eq(s3_client_new(NULL, NULL, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_nonnull(strstr(e.msg, "AWS_SECRET_ACCESS_KEY is not"));
	err_clear(&e);
	ck_assert_int_eq(store_open("s3://bkt/x/", &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	setenv("AWS_SECRET_ACCESS_KEY", "x", 1);
	setenv("AWS_REGION", "Not A Region", 1);
	err_clear(&e);
	ck_assert_int_eq(s3_client_new(NULL, NULL, &c, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_config");
}
END_TEST

static void expect_job_error(const char *json, const struct job_policy *p, const char *code,
			     const char *field)
{
	struct job_error je = {0};
	json_t *s3 = json_loads(json, 0, NULL);

	ck_assert_ptr_nonnull(s3);
	ck_assert_int_eq(s3_job_options_check(s3, p, &je), -1);
	ck_assert_str_eq(err_name(je.err.code), code);
	ck_assert_str_eq(je.field, field);
	ck_assert_ptr_null(strstr(je.err.msg, SECRET));
	json_decref(s3);
}

START_TEST(test_job_options)
{
	struct strvec endpoints = {0};
	struct job_policy p = {.allow_s3_endpoints = &endpoints};
	struct s3_settings settings = {0};
	struct job_error je = {0};
	struct err e = {0};
	json_t *s3;
	char *url;

	setup_env();
	setenv("AWS_ENDPOINT_URL_S3", "http://operator.example:9000", 1);
	strvec_push(&endpoints, "HTTP://Allowed.Example:80/");
	expect_job_error("{\"endpoint_url\": \"http://elsewhere.example\"}", &p,
			 "forbidden_s3_endpoint", "options.s3.endpoint_url");
	expect_job_error("{\"secret_access_key\": \"" SECRET "\"}", &p, "unknown_field",
			 "options.s3.secret_access_key");
	expect_job_error("{\"region\": 5}", &p, "invalid_field", "options.s3.region");
	expect_job_error("{\"region\": \"Mars Base\"}", &p, "s3_config", "options.s3.region");
	expect_job_error("{\"addressing_style\": \"diagonal\"}", &p, "s3_config",
			 "options.s3.addressing_style");
	expect_job_error("{\"endpoint_url\": \"http://u:" SECRET "@allowed.example\"}", &p,
			 "s3_config", "options.s3.endpoint_url");
	expect_job_error("[1]", &p, "invalid_field", "options.s3");

	/* An allowed endpoint, written differently, with a region. */
	s3 = json_pack("{s:s, s:s, s:n}", "endpoint_url", "http://allowed.example", "region",
		       "eu-north-1", "addressing_style");
	ck_assert_msg(s3_job_options_check(s3, &p, &je) == 0, "%s", je.err.msg);
	ck_assert_int_eq(s3_job_options_check(NULL, &p, &je), 0);

	/* Applied: the job's stores use it; without options.s3, the
	 * service's settings (here the environment's) stay. */
	ck_assert_int_eq(s3_job_options_apply(s3, &settings, &e), 0);
	url = signed_url_with(&settings, "bkt");
	ck_assert_str_eq(url, "http://allowed.example/bkt/k");
	free(url);
	memset(&settings, 0, sizeof(settings));
	ck_assert_int_eq(s3_job_options_apply(NULL, &settings, &e), 0);
	url = signed_url_with(&settings, "bkt");
	ck_assert_str_eq(url, "http://operator.example:9000/bkt/k");
	free(url);
	json_decref(s3);
	strvec_fini(&endpoints);
}
END_TEST

static Suite *s3_suite(void)
{
	Suite *s = suite_create("s3");
	TCase *t = tcase_create("client");

	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_parallel_ranged_read);
	tcase_add_test(t, test_read_past_end_is_truncated);
	tcase_add_test(t, test_server_ignoring_range);
	tcase_add_test(t, test_unranged_answer_of_exactly_the_range);
	tcase_add_test(t, test_wrong_content_range);
	tcase_add_test(t, test_retry_then_success);
	tcase_add_test(t, test_retries_are_bounded);
	tcase_add_test(t, test_connection_refused);
	tcase_add_test(t, test_error_codes);
	tcase_add_test(t, test_process_credentials);
	tcase_add_test(t, test_complete_error_with_200_is_retried);
	tcase_add_test(t, test_list_pages);
	tcase_add_test(t, test_list_answer_parse);
	tcase_add_test(t, test_uploads_answer_parse);
	tcase_add_test(t, test_error_answer_parse);
	tcase_add_test(t, test_multipart_answer_parse);
	suite_add_tcase(s, t);
	t = tcase_create("store");
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_store_listing_and_view);
	tcase_add_test(t, test_empty_prefix_is_not_found);
	tcase_add_test(t, test_region_named_by_s3);
	tcase_add_test(t, test_token_stays_expired);
	tcase_add_test(t, test_multipart_writer);
	tcase_add_test(t, test_reused_connection_reset_on_upload);
	tcase_add_test(t, test_destination_not_empty);
	suite_add_tcase(s, t);
	t = tcase_create("settings");
	tcase_add_test(t, test_locations);
	tcase_add_test(t, test_endpoints);
	tcase_add_test(t, test_redirect_hosts);
	tcase_add_test(t, test_settings_precedence);
	tcase_add_test(t, test_missing_credentials);
	tcase_add_test(t, test_job_options);
	tcase_add_test(t, test_resume_keeps_by_etag);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return test_run_suite(s3_suite());
}
