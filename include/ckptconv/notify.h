/* SPDX-License-Identifier: MIT */
/*
 * notify: service-manager readiness notification (the sd_notify protocol:
 * one datagram to $NOTIFY_SOCKET).  A no-op when NOTIFY_SOCKET is unset.
 */
#ifndef CKPTCONV_NOTIFY_H
#define CKPTCONV_NOTIFY_H

/* Sends `state` ("READY=1", "STOPPING=1", "STATUS=...", several separated
 * by newlines).  Any thread may call.  Returns 0 when sent or not under a
 * service manager, -1 with errno set when $NOTIFY_SOCKET names no usable
 * socket or sending failed. */
int notify_send(const char *state);

#endif
