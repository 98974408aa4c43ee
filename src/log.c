/* SPDX-License-Identifier: MIT */
/*
 * log: leveled messages on stderr, one JSON object per line for machines
 * (journald, log shippers) or a plain "ckptconv: level: message" line for a
 * person at a terminal.  A mutex keeps lines from different threads whole.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum log_level min_level = LOG_INFO;   /* protected by log_lock */
static int json_lines = -1;                    /* protected by log_lock; -1: decide on first use */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(enum log_level min, int json)
{
	pthread_mutex_lock(&log_lock);
	min_level = min;
	json_lines = json < 0 ? !isatty(STDERR_FILENO) : json != 0;
	pthread_mutex_unlock(&log_lock);
}

/* RFC 3339 UTC with milliseconds: 2024-05-01T12:00:00.123Z */
static void format_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	size_t used;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	used = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + used, len - used, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void write_json(enum log_level level, json_t *fields, const char *msg, const char *ts)
{
	json_t *line = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", level_names[level], "msg", msg);
	char *text;

	if (!line)
		return;
	if (fields && json_is_object(fields))
		json_object_update_missing(line, fields);
	text = json_dumps(line, JSON_PRESERVE_ORDER | JSON_COMPACT);
	if (text) {
		fprintf(stderr, "%s\n", text);
		free(text);
	}
	json_decref(line);
}

static void write_plain(enum log_level level, json_t *fields, const char *msg)
{
	const char *key;
	json_t *v;
	char *text;

	fprintf(stderr, "ckptconv: %s: %s", level_names[level], msg);
	if (fields && json_is_object(fields)) {
		json_object_foreach(fields, key, v) {
			text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			fprintf(stderr, " %s=%s", key, text ? text : "?");
			free(text);
		}
	}
	fputc('\n', stderr);
}

void log_msg(enum log_level level, struct json_t *fields, const char *fmt, ...)
{
	char msg[2048], ts[40];
	va_list ap;

	if (level < LOG_DEBUG || level > LOG_ERROR)
		level = LOG_ERROR;
	pthread_mutex_lock(&log_lock);
	if (level < min_level)
		goto out_unlock;
	if (json_lines < 0)
		json_lines = !isatty(STDERR_FILENO);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	format_timestamp(ts, sizeof(ts));
	if (json_lines)
		write_json(level, fields, msg, ts);
	else
		write_plain(level, fields, msg);
	fflush(stderr);
out_unlock:
	pthread_mutex_unlock(&log_lock);
}
