#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_holes.sh: a source file with holes converts to the same bytes as the
# same file without them.  The local store does not read holes (SEEK_DATA,
# SEEK_HOLE) but zeroes them in the band it fills, so holes among data —
# at the start of a read, inside it, up to its end — must come out exactly
# as the zeros a read would have returned.  Holes are punched into the
# tensor data of every shard of a fixture (so the bytes differ from the
# fixture's), a dense copy of the punched files is made with
# `cp --sparse=never`, and both are converted in each direction and with
# both --io modes: every output file is identical.

. "$(dirname "$0")/lib.sh"
need_binary

T=$TEST_TMP

expect_ok "fixture: 3 shards" "$CKPTCONV" fixture --preset tiny --layers 3 \
	--max-shard-size 100KB "$T/src" || finish
cp -r "$T/src" "$T/holes"

# Holes of 4 KiB to 36 KiB at page-aligned offsets past the header, one
# ending at the file's last whole page.
for f in "$T"/holes/*.safetensors; do
	size=$(stat -c %s "$f")
	last=$(((size / 4096 - 1) * 4096))
	for range in "65536 4096" "81920 36864" "$((last - 8192)) 8192"; do
		set -- $range
		fallocate --punch-hole --offset "$1" --length "$2" "$f" ||
			fail "punch a hole at $1 in $(basename "$f")"
	done
done

# has_holes FILE: fewer blocks than its size.
has_holes() {
	[ $(($(stat -c '%b * %B' "$1"))) -lt "$(stat -c %s "$1")" ]
}

holed=0
for f in "$T"/holes/*.safetensors; do
	has_holes "$f" && holed=$((holed + 1))
done
assert_eq "every shard has holes" 3 "$holed"

cp -r --sparse=never "$T/holes" "$T/dense"
dense=0
for f in "$T"/dense/*.safetensors; do
	has_holes "$f" || dense=$((dense + 1))
done
assert_eq "the dense copy has none" 3 "$dense"

expect_ok "native, from the file with holes" "$CKPTCONV" convert --no-fsync --to native \
	"$T/holes" "$T/native-holes"
expect_ok "native, from the dense copy" "$CKPTCONV" convert --no-fsync --to native \
	"$T/dense" "$T/native-dense"
same_files "native: the same bytes" "$T/native-dense" "$T/native-holes"
expect_ok "native, from the file with holes, --io mmap" "$CKPTCONV" convert --no-fsync \
	--io mmap --to native "$T/holes" "$T/native-mmap"
same_files "native, --io mmap: the same bytes" "$T/native-dense" "$T/native-mmap"

expect_ok "native, from the unpunched fixture" "$CKPTCONV" convert --no-fsync --to native \
	"$T/src" "$T/native-src"
if diff -r -q -x ckptconv-plan.json -x "ckptconv-sums*.json" "$T/native-src" \
	"$T/native-holes" >/dev/null; then
	fail "the holes are in tensor data: the output differs from the fixture's"
else
	pass "the holes are in tensor data: the output differs from the fixture's"
fi

# The other direction reads files with holes too: the native output with
# the same holes punched.
cp -r "$T/native-dense" "$T/native-punched"
for f in "$T"/native-punched/*.safetensors; do
	fallocate --punch-hole --offset 65536 --length 20480 "$f"
done
cp -r --sparse=never "$T/native-punched" "$T/native-punched-dense"
expect_ok "hf, from the file with holes" "$CKPTCONV" convert --no-fsync --to hf \
	"$T/native-punched" "$T/hf-holes"
expect_ok "hf, from the dense copy" "$CKPTCONV" convert --no-fsync --to hf \
	"$T/native-punched-dense" "$T/hf-dense"
same_files "hf: the same bytes" "$T/hf-dense" "$T/hf-holes"

finish
