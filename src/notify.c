/* SPDX-License-Identifier: MIT */
/*
 * notify: tells a service manager about the daemon's state through the
 * sd_notify protocol, written out here so the binary needs no libsystemd:
 * one datagram holding "KEY=VALUE" lines, sent to the AF_UNIX socket named
 * by $NOTIFY_SOCKET.  A name starting with '@' is a socket in the abstract
 * namespace.  Without NOTIFY_SOCKET (not started by systemd, or a container)
 * every call is a successful no-op.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckptconv/notify.h"

/* Fills `addr` from a $NOTIFY_SOCKET value; returns the address length, or
 * 0 when the value names no usable AF_UNIX socket. */
static socklen_t notify_address(const char *name, struct sockaddr_un *addr)
{
	size_t len = strlen(name);

	if (len < 2 || len > sizeof(addr->sun_path) || (name[0] != '/' && name[0] != '@'))
		return 0;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, name, len);
	if (name[0] == '@')
		addr->sun_path[0] = '\0'; /* abstract: length counts, no terminator */
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

int notify_send(const char *state)
{
	const char *name = getenv("NOTIFY_SOCKET");
	struct sockaddr_un addr;
	socklen_t addr_len;
	size_t len;
	ssize_t sent;
	int fd, saved_errno, rc = -1;

	if (!name || !*name)
		return 0;
	if (!state || !*state) {
		errno = EINVAL;
		goto out;
	}
	addr_len = notify_address(name, &addr);
	if (addr_len == 0) {
		errno = EAFNOSUPPORT;
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	len = strlen(state);
	do
		sent = sendto(fd, state, len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
	while (sent < 0 && errno == EINTR);
	if (sent >= 0 && (size_t)sent == len)
		rc = 0;
	else if (sent >= 0)
		errno = EMSGSIZE;
	saved_errno = errno;
	close(fd);
	errno = saved_errno;
out:
	return rc;
}
