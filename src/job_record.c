/* SPDX-License-Identifier: MIT */
/*
 * job_record: a job's record, written as JSON and read back strictly (an
 * error code must be one of the catalogue's, ids and states must be
 * valid), and atomic file writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptconv/job_record.h"
#include "job_internal.h"

#define RECORD_FORMAT "ckptconv-job-1"

json_t *job_record_json(const struct job *j)
{
	struct exec_progress p;
	json_t *o = json_object();

	job_current_progress(j, &p);
	json_object_set_new(o, "format", json_string(RECORD_FORMAT));
	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "seq", json_integer((json_int_t)j->seq));
	json_object_set_new(o, "state", json_string(job_state_name(j->state)));
	json_object_set_new(o, "created_ms", json_integer(j->created_ms));
	json_object_set_new(o, "started_ms", json_integer(j->started_ms));
	json_object_set_new(o, "finished_ms", json_integer(j->finished_ms));
	json_object_set_new(o, "request", job_spec_json(&j->spec, true));
	json_object_set_new(o, "resolved_source",
			    j->resolved_source ? json_string(j->resolved_source) : json_null());
	json_object_set_new(o, "resolved_destination",
			    j->resolved_destination ? json_string(j->resolved_destination) :
						      json_null());
	json_object_set_new(o, "idempotency_key",
			    j->idempotency_key ? json_string(j->idempotency_key) : json_null());
	json_object_set_new(o, "request_sha256", json_string(j->request_sha256));
	json_object_set_new(o, "claimed", json_boolean(j->claimed));
	json_object_set_new(o, "restarts", json_integer(j->restarts));
	json_object_set_new(
		o, "progress",
		json_pack("{s:I, s:I, s:I, s:I, s:f}", "tensors_total", (json_int_t)p.tensors_total,
			  "tensors_done", (json_int_t)p.tensors_done, "bytes_total",
			  (json_int_t)p.bytes_total, "bytes_done", (json_int_t)p.bytes_done,
			  "elapsed_seconds", p.elapsed_seconds));
	json_object_set_new(o, "result", j->result ? json_incref(j->result) : json_null());
	json_object_set_new(o, "error", job_err_json(&j->error));
	json_object_set_new(o, "credentials_source", job_credentials_source_json(j));
	return o;
}

static bool id_valid(const char *id)
{
	size_t i;

	if (!id || strlen(id) != JOB_ID_LEN)
		return false;
	for (i = 0; i < JOB_ID_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	return true;
}

static int record_error(const json_t *v, struct err *out, struct err *e)
{
	const char *msg, *tensor;
	enum err_code code;

	if (!v || json_is_null(v))
		return 0;
	code = err_code_parse(json_string_value(json_object_get(v, "code")));
	msg = json_string_value(json_object_get(v, "message"));
	tensor = json_string_value(json_object_get(v, "tensor"));
	if (!code || !msg)
		return err_set(e, ERR_IO_ERROR, "the error has an unknown code or no message");
	err_set(out, code, "%s", msg);
	err_set_tensor(out, tensor);
	return 0;
}

static int record_progress(const json_t *v, struct exec_progress *p, struct err *e)
{
	if (!json_is_object(v))
		return err_set(e, ERR_IO_ERROR, "progress is missing");
	p->tensors_total = (uint64_t)json_integer_value(json_object_get(v, "tensors_total"));
	p->tensors_done = (uint64_t)json_integer_value(json_object_get(v, "tensors_done"));
	p->bytes_total = (uint64_t)json_integer_value(json_object_get(v, "bytes_total"));
	p->bytes_done = (uint64_t)json_integer_value(json_object_get(v, "bytes_done"));
	p->elapsed_seconds = json_number_value(json_object_get(v, "elapsed_seconds"));
	return 0;
}

static char *optional_string(const json_t *v)
{
	return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
}

int job_from_record(const json_t *r, struct job **out, struct err *e)
{
	struct job_error je = {0};
	struct job *j = job_alloc();
	const char *id = json_string_value(json_object_get(r, "id"));
	const char *sha = json_string_value(json_object_get(r, "request_sha256"));
	int state = job_state_parse(json_string_value(json_object_get(r, "state")));
	int rc = -1;

	*out = NULL;
	if (!json_is_object(r) || !json_is_string(json_object_get(r, "format")) ||
	    strcmp(json_string_value(json_object_get(r, "format")), RECORD_FORMAT) != 0) {
		err_set(e, ERR_IO_ERROR, "not a job record of format %s", RECORD_FORMAT);
		goto out;
	}
	if (!id_valid(id) || state < 0 || !json_is_integer(json_object_get(r, "seq"))) {
		err_set(e, ERR_IO_ERROR, "the record's id, state or seq is invalid");
		goto out;
	}
	if (job_spec_parse(json_object_get(r, "request"), &j->spec, &je) < 0) {
		err_set(e, ERR_IO_ERROR, "the record's request is invalid: %s", je.err.msg);
		goto out;
	}
	memcpy(j->id, id, JOB_ID_LEN + 1);
	j->seq = (uint64_t)json_integer_value(json_object_get(r, "seq"));
	j->state = (enum job_state)state;
	j->created_ms = json_integer_value(json_object_get(r, "created_ms"));
	j->started_ms = json_integer_value(json_object_get(r, "started_ms"));
	j->finished_ms = json_integer_value(json_object_get(r, "finished_ms"));
	j->resolved_source = optional_string(json_object_get(r, "resolved_source"));
	j->resolved_destination = optional_string(json_object_get(r, "resolved_destination"));
	j->idempotency_key = optional_string(json_object_get(r, "idempotency_key"));
	snprintf(j->request_sha256, sizeof(j->request_sha256), "%s", sha ? sha : "");
	j->claimed = json_is_true(json_object_get(r, "claimed"));
	j->restarts = (unsigned)json_integer_value(json_object_get(r, "restarts"));
	if (json_is_string(json_object_get(r, "credentials_source")))
		snprintf(j->credentials_source, sizeof(j->credentials_source), "%s",
			 json_string_value(json_object_get(r, "credentials_source")));
	if (record_progress(json_object_get(r, "progress"), &j->progress, e) < 0 ||
	    record_error(json_object_get(r, "error"), &j->error, e) < 0)
		goto out;
	if (json_is_object(json_object_get(r, "result")))
		j->result = json_deep_copy(json_object_get(r, "result"));
	*out = j;
	j = NULL;
	rc = 0;
out:
	job_unref(j);
	return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int job_write_atomic(const char *dir, const char *name, const char *data, size_t len, bool durable,
		     struct err *e)
{
	char tmp[PATH_MAX], final[PATH_MAX];
	int fd, dfd, rc = -1;

	if (snprintf(final, sizeof(final), "%s/%s", dir, name) >= (int)sizeof(final) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
		return err_set(e, ERR_IO_ERROR, "%s/%s: path too long", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s", tmp);
	if (write_all(fd, data, len) < 0 || (durable && fsync(fd) != 0)) {
		err_set_errno(e, ERR_IO_ERROR, errno, "%s", tmp);
		close(fd);
		goto out_unlink;
	}
	if (close(fd) != 0) {
		err_set_errno(e, ERR_IO_ERROR, errno, "%s", tmp);
		goto out_unlink;
	}
	if (rename(tmp, final) != 0) {
		err_set_errno(e, ERR_IO_ERROR, errno, "%s", final);
		goto out_unlink;
	}
	if (durable) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	return 0;
out_unlink:
	unlink(tmp);
	return rc;
}
