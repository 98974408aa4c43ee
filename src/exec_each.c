/* SPDX-License-Identifier: MIT */
/*
 * exec_each: independent tasks (one per file checked, ...) spread over as
 * many threads as a pool has workers, for work that is not a plan's
 * pieces: the caller's thread takes part and short-lived threads, started
 * with signals blocked like the pool's workers, join it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/util.h"

struct each {
	int (*fn)(void *arg, size_t i, struct err *e);
	void *arg;
	size_t n;
	_Atomic size_t next;
	atomic_bool failed;
	pthread_mutex_t lock;
	size_t failed_at; /* lock: the lowest task that failed */
	struct err first; /* lock: its error */
};

static void *each_main(void *arg)
{
	struct each *t = arg;
	size_t i;

	pthread_setname_np(pthread_self(), "ckptconv-each");
	while (!atomic_load(&t->failed) && (i = atomic_fetch_add(&t->next, 1)) < t->n) {
		struct err e = {0};

		if (t->fn(t->arg, i, &e) == 0)
			continue;
		pthread_mutex_lock(&t->lock);
		if (i < t->failed_at) {
			t->failed_at = i;
			t->first = e;
		}
		pthread_mutex_unlock(&t->lock);
		atomic_store(&t->failed, true);
	}
	return NULL;
}

int exec_each(unsigned threads, size_t n, int (*fn)(void *arg, size_t i, struct err *e), void *arg,
	      struct err *e)
{
	struct each t = {.fn = fn, .arg = arg, .n = n, .failed_at = n};
	pthread_t *extra;
	size_t started = 0, k, want;
	sigset_t all, old;

	want = threads > 1 ? threads - 1 : 0;
	if (want > n)
		want = n ? n - 1 : 0;
	pthread_mutex_init(&t.lock, NULL);
	extra = xcalloc(want ? want : 1, sizeof(*extra));
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (k = 0; k < want; k++)
		if (pthread_create(&extra[started], NULL, each_main, &t) == 0)
			started++; /* fewer threads only make it slower */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	each_main(&t);
	for (k = 0; k < started; k++)
		pthread_join(extra[k], NULL);
	free(extra);
	pthread_mutex_destroy(&t.lock);
	if (!atomic_load(&t.failed))
		return 0;
	if (e && !e->code)
		*e = t.first;
	return -1;
}
