/* SPDX-License-Identifier: MIT */
/*
 * check_notify: the sd_notify datagram.  Each test binds its own datagram
 * socket (a path in a temporary directory, or an abstract name), points
 * NOTIFY_SOCKET at it and checks what arrives; without NOTIFY_SOCKET nothing
 * may be sent and the call must succeed.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckptconv/notify.h"
#include "testutil.h"

static char *tmp_dir;

static void setup(void)
{
	tmp_dir = test_mkdtemp();
	unsetenv("NOTIFY_SOCKET");
}

static void teardown(void)
{
	unsetenv("NOTIFY_SOCKET");
	test_rmtree(tmp_dir);
	free(tmp_dir);
	tmp_dir = NULL;
}

/* Binds a datagram socket to `name` ('@' first = abstract namespace). */
static int bind_listener(const char *name)
{
	struct sockaddr_un addr;
	size_t len = strlen(name);
	int fd;

	ck_assert_uint_lt(len, sizeof(addr.sun_path));
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, name, len);
	if (name[0] == '@')
		addr.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)),
			 0);
	return fd;
}

/* The next datagram within `timeout_ms`, or -1 if none arrives. */
static ssize_t receive(int fd, char *buf, size_t size, int timeout_ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	ssize_t n;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return -1;
	n = recv(fd, buf, size - 1, MSG_DONTWAIT);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

START_TEST(test_ready_reaches_path_socket)
{
	char *path = test_path(tmp_dir, "notify.sock");
	char buf[256];
	int fd = bind_listener(path);

	setenv("NOTIFY_SOCKET", path, 1);
	ck_assert_int_eq(notify_send("READY=1"), 0);
	ck_assert_int_eq(receive(fd, buf, sizeof(buf), 2000), 7);
	ck_assert_str_eq(buf, "READY=1");
	close(fd);
	free(path);
}
END_TEST

START_TEST(test_ready_reaches_abstract_socket)
{
	char name[64], buf[256];
	int fd;

	snprintf(name, sizeof(name), "@ckptconv-check-notify-%ld", (long)getpid());
	fd = bind_listener(name);
	setenv("NOTIFY_SOCKET", name, 1);
	ck_assert_int_eq(notify_send("READY=1"), 0);
	ck_assert_int_eq(receive(fd, buf, sizeof(buf), 2000), 7);
	ck_assert_str_eq(buf, "READY=1");
	close(fd);
}
END_TEST

START_TEST(test_messages_arrive_whole_and_in_order)
{
	char *path = test_path(tmp_dir, "notify.sock");
	const char *status = "STATUS=listening on 127.0.0.1:8080\nMAINPID=1";
	char buf[256];
	int fd = bind_listener(path);

	setenv("NOTIFY_SOCKET", path, 1);
	ck_assert_int_eq(notify_send("READY=1"), 0);
	ck_assert_int_eq(notify_send(status), 0);
	ck_assert_int_eq(notify_send("STOPPING=1"), 0);
	ck_assert_int_eq(receive(fd, buf, sizeof(buf), 2000), 7);
	ck_assert_str_eq(buf, "READY=1");
	ck_assert_int_eq(receive(fd, buf, sizeof(buf), 2000), (ssize_t)strlen(status));
	ck_assert_str_eq(buf, status);
	ck_assert_int_eq(receive(fd, buf, sizeof(buf), 2000), 10);
	ck_assert_str_eq(buf, "STOPPING=1");
	close(fd);
	free(path);
}
END_TEST

START_TEST(test_unset_sends_nothing)
{
	char *path = test_path(tmp_dir, "notify.sock");
	char buf[256];
	int fd = bind_listener(path);

	/* The socket exists but is not named: nothing may find its way there. */
	ck_assert_int_eq(notify_send("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	ck_assert_int_eq(notify_send("READY=1"), 0);
	ck_assert_int_eq(receive(fd, buf, sizeof(buf), 300), -1);
	close(fd);
	free(path);
}
END_TEST

START_TEST(test_missing_socket_fails)
{
	char *path = test_path(tmp_dir, "nobody-listens.sock");

	setenv("NOTIFY_SOCKET", path, 1);
	errno = 0;
	ck_assert_int_eq(notify_send("READY=1"), -1);
	ck_assert_int_eq(errno, ENOENT);
	free(path);
}
END_TEST

START_TEST(test_unusable_name_fails)
{
	setenv("NOTIFY_SOCKET", "relative/notify.sock", 1);
	ck_assert_int_eq(notify_send("READY=1"), -1);
	setenv("NOTIFY_SOCKET", "@", 1);
	ck_assert_int_eq(notify_send("READY=1"), -1);
}
END_TEST

static Suite *notify_suite(void)
{
	Suite *s = suite_create("notify");
	TCase *tc = tcase_create("sd_notify");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_ready_reaches_path_socket);
	tcase_add_test(tc, test_ready_reaches_abstract_socket);
	tcase_add_test(tc, test_messages_arrive_whole_and_in_order);
	tcase_add_test(tc, test_unset_sends_nothing);
	tcase_add_test(tc, test_missing_socket_fails);
	tcase_add_test(tc, test_unusable_name_fails);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(notify_suite());
}
