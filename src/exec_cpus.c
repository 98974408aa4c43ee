/* SPDX-License-Identifier: MIT */
/*
 * exec_cpus: how many CPUs this process may use, which sizes the worker
 * pool by default: its affinity mask, limited by the tightest cgroup v2
 * CPU quota (cpu.max) on the way from its cgroup to the root.
 */
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/exec.h"

unsigned exec_cpu_quota_limit(const char *cpu_max)
{
	unsigned long long quota, period;

	if (sscanf(cpu_max, "%llu %llu", &quota, &period) != 2 || period == 0 || quota == 0)
		return 0;
	return (unsigned)((quota + period - 1) / period);
}

static unsigned quota_from_file(const char *path)
{
	char text[128];
	size_t n;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	return exec_cpu_quota_limit(text);
}

/* The cgroup v2 path of this process ("/" in a container's namespace). */
static int own_cgroup_path(char *out, size_t len)
{
	char line[4096];
	int found = -1;
	FILE *f = fopen("/proc/self/cgroup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, len, "%s", line + 3);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/* The tightest cpu.max quota on the way from our cgroup to the root. */
static unsigned cgroup_cpu_limit(void)
{
	char path[4096], file[4200];
	unsigned limit = quota_from_file("/sys/fs/cgroup/cpu.max");
	char *slash;

	if (own_cgroup_path(path, sizeof(path)) != 0)
		return limit;
	while (path[0] && strcmp(path, "/") != 0) {
		unsigned q;

		snprintf(file, sizeof(file), "/sys/fs/cgroup%s/cpu.max", path);
		q = quota_from_file(file);
		if (q && (!limit || q < limit))
			limit = q;
		slash = strrchr(path, '/');
		if (!slash)
			break;
		*slash = '\0';
	}
	return limit;
}

unsigned exec_cpus_available(void)
{
	cpu_set_t set;
	unsigned n = 1, limit;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		n = (unsigned)CPU_COUNT(&set);
	limit = cgroup_cpu_limit();
	if (limit && limit < n)
		n = limit;
	return n ? n : 1;
}
