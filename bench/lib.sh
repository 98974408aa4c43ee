# SPDX-License-Identifier: MIT
#
# bench/lib.sh: what the benchmarks share.  Sourced, not run.

# calc EXPRESSION: floating-point arithmetic.
calc() {
	awk "BEGIN { print $* }"
}

# median: the median of the numbers on standard input, one per line (the
# mean of the middle two when there is an even number of them).
median() {
	sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# BENCH_DROP (0: never; default 1): whether drop_page_cache drops the
# page cache, which needs /proc/sys/vm/drop_caches writable (root, outside
# most containers); without it drop_page_cache only writes back.
BENCH_DROP=${BENCH_DROP:-1}
if [ "$BENCH_DROP" = 1 ] && ! [ -w /proc/sys/vm/drop_caches ]; then
	BENCH_DROP=0
fi

# drop_page_cache: write back every dirty page, then (with BENCH_DROP)
# drop the whole page cache, so a timed run starts from the same state of
# memory as every other: on a VM the cost of a write depends on whether the
# page cache recycles memory the run before used or must get it back from
# the host.
drop_page_cache() {
	sync
	if [ "$BENCH_DROP" = 1 ]; then
		echo 3 >/proc/sys/vm/drop_caches
	fi
}
