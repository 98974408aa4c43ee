/* SPDX-License-Identifier: MIT */
/*
 * progress: shows a running conversion to a person.  On a terminal one line
 * is redrawn in place (tensors done/total, bytes done/total and the rate in
 * GB, MB or KB as the amounts suit, ETA), at most five times a second;
 * otherwise a plain line every few seconds, so logs stay readable (a run
 * too short for one line prints none).  The final update always completes
 * the display.
 */
#include <stdio.h>
#include <unistd.h>

#include "ckptconv/progress.h"
#include "ckptconv/util.h"

#define TTY_INTERVAL 0.2
#define PLAIN_INTERVAL 5.0
#define BAR_WIDTH 24

void progress_init(struct progress_display *d, FILE *out)
{
	d->out = out;
	d->tty = isatty(fileno(out)) == 1;
	d->last_print = 0;
	d->lines = 0;
	d->complete_shown = false;
}

double progress_rate(const struct exec_progress *p)
{
	if (p->elapsed_seconds <= 0)
		return 0;
	/* The bytes this run wrote: a resumed run's kept files are done
	 * before it starts. */
	return (double)(p->bytes_done - p->bytes_kept) / p->elapsed_seconds;
}

double progress_eta(const struct exec_progress *p)
{
	double rate = progress_rate(p);

	if (p->bytes_done >= p->bytes_total)
		return 0;
	if (rate <= 0)
		return -1;
	return (double)(p->bytes_total - p->bytes_done) / rate;
}

static void format_eta(double seconds, char *buf, size_t len)
{
	unsigned long s;

	if (seconds < 0) {
		snprintf(buf, len, "--:--");
		return;
	}
	s = (unsigned long)(seconds + 0.5);
	if (s >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%02lu:%02lu", s / 60, s % 60);
}

static double fraction_done(const struct exec_progress *p)
{
	if (p->bytes_total == 0)
		return p->tensors_total ? (double)p->tensors_done / (double)p->tensors_total : 1.0;
	return (double)p->bytes_done / (double)p->bytes_total;
}

/* Amounts in the unit that suits the total: GB for checkpoints, smaller
 * units for small test files. */
struct unit {
	const char *name;
	double size;
};

static struct unit unit_for(uint64_t bytes)
{
	if (bytes >= 1000000000ULL)
		return (struct unit){"GB", 1e9};
	if (bytes >= 1000000ULL)
		return (struct unit){"MB", 1e6};
	return (struct unit){"KB", 1e3};
}

static void print_bar(struct progress_display *d, const struct exec_progress *p, bool final)
{
	struct unit amount = unit_for(p->bytes_total), speed = unit_for((uint64_t)progress_rate(p));
	char bar[BAR_WIDTH + 1], eta[32];
	double fraction = fraction_done(p);
	int filled = (int)(fraction * BAR_WIDTH), i;

	for (i = 0; i < BAR_WIDTH; i++)
		bar[i] = i < filled ? '#' : '.';
	bar[BAR_WIDTH] = '\0';
	format_eta(progress_eta(p), eta, sizeof(eta));
	fprintf(d->out, "\r\033[K[%s] %3.0f%%  %llu/%llu tensors  %.2f/%.2f %s  %.2f %s/s  ETA %s",
		bar, fraction * 100.0, (unsigned long long)p->tensors_done,
		(unsigned long long)p->tensors_total, (double)p->bytes_done / amount.size,
		(double)p->bytes_total / amount.size, amount.name, progress_rate(p) / speed.size,
		speed.name, eta);
	if (final)
		fputc('\n', d->out);
	fflush(d->out);
}

static void print_line(struct progress_display *d, const struct exec_progress *p)
{
	struct unit amount = unit_for(p->bytes_total), speed = unit_for((uint64_t)progress_rate(p));
	char eta[32];

	format_eta(progress_eta(p), eta, sizeof(eta));
	fprintf(d->out,
		"ckptconv: progress: %.0f%%, %llu/%llu tensors, %.2f/%.2f %s, %.2f %s/s, ETA %s\n",
		fraction_done(p) * 100.0, (unsigned long long)p->tensors_done,
		(unsigned long long)p->tensors_total, (double)p->bytes_done / amount.size,
		(double)p->bytes_total / amount.size, amount.name, progress_rate(p) / speed.size,
		speed.name, eta);
	fflush(d->out);
}

void progress_update(struct progress_display *d, const struct exec_progress *p, bool final)
{
	double now = now_seconds();
	double interval = d->tty ? TTY_INTERVAL : PLAIN_INTERVAL;

	if (d->last_print == 0 && !d->tty) {
		/* Plain lines start after one interval: short runs stay quiet. */
		d->last_print = now;
		if (!final)
			return;
	}
	if (final && !d->tty && (d->lines == 0 || d->complete_shown))
		return;
	if (!final && d->last_print > 0 && now - d->last_print < interval)
		return;
	d->last_print = now;
	d->lines++;
	if (d->tty)
		print_bar(d, p, final);
	else
		print_line(d, p);
	d->complete_shown = p->tensors_done >= p->tensors_total && p->bytes_done >= p->bytes_total;
}
