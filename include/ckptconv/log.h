/* SPDX-License-Identifier: MIT */
/*
 * log: leveled messages on stderr.  One JSON object per line
 * ({"ts","level","msg", extra fields}) when stderr is not a terminal or JSON
 * was asked for; plain text otherwise.  Thread-safe; never logs secrets
 * (callers pass none).
 */
#ifndef CKPTCONV_LOG_H
#define CKPTCONV_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_init(enum log_level min, int json);  /* json: 1 on, 0 off, -1 auto */
/* `fields`: NULL or a jansson object whose members are added to the line
 * (borrowed). */
struct json_t;
void log_msg(enum log_level level, struct json_t *fields, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_info(...) log_msg(LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, NULL, __VA_ARGS__)

#endif
