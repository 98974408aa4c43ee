#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_resume.sh: `convert --resume` after a SIGKILL.  A native -> HF
# conversion of the mini fixture into 100 MB shards, throttled with
# --max-rate, is killed with SIGKILL once a few shards are published;
# `--resume` then keeps those shards (the same inode and mtime: not
# written again; their identity as published unchanged, so not read again
# either: each logged "kept: unchanged since published"), removes the
# temporary files and finishes: the output equals a clean run's, records
# included (but for the identities as published).  A corrupted byte in a
# finished shard, its mtime set back with `touch -d`, is found by
# `verify --checksums` (exit 1 naming the file) and by `--resume` (its
# ctime changed: read again), which writes that shard again and keeps the
# others unread.  A copy of a destination (cp -a: new inodes) is resumed by
# reading each shard again, keeping those whose CRC-32C matches.  Another
# plan's destination is refused (manifest_mismatch); --resume on an empty
# destination is a normal run; without --resume the interrupted destination
# is refused as before (destination_not_empty).  `verify --checksums` refuses
# an unfinished destination (destination_incomplete naming the first
# planned file missing or unrecorded, partitions not finalized, no plan
# manifest or no checksum record).

. "$(dirname "$0")/lib.sh"
need_binary

HF=$TEST_TMP/hf
NAT=$TEST_TMP/native
REF=$TEST_TMP/ref
OUT=$TEST_TMP/out
CONVERT=("$CKPTCONV" convert --no-fsync --to hf --max-shard-size 100MB)

expect_ok "fixture mini" "$CKPTCONV" fixture --preset mini "$HF"
expect_ok "mini to native" "$CKPTCONV" convert --no-fsync --to native "$HF" "$NAT"
expect_ok "--resume on an empty destination is a normal run" "${CONVERT[@]}" --resume --json \
	"$NAT" "$REF"
if grep -q '"kept_files":0,"kept_bytes":0' "$TEST_TMP/run.out"; then
	pass "... which kept nothing"
else
	fail "... which kept nothing" "$(run_out)"
fi
expect_ok "the clean run verifies by its checksums" "$CKPTCONV" verify --checksums "$REF"

# ---- SIGKILL after a few shards, then --resume -------------------------------
"${CONVERT[@]}" --max-rate 40MB "$NAT" "$OUT" >/dev/null 2>&1 &
PID=$!
for i in $(seq 600); do
	[ "$(ls "$OUT" 2>/dev/null | grep -c '^model-.*\.safetensors$')" -ge 3 ] && break
	sleep 0.1
done
kill -9 "$PID" 2>/dev/null
wait "$PID" 2>/dev/null
PUBLISHED=$(ls "$OUT" | grep '^model-.*\.safetensors$' | grep -v index)
NPUB=$(echo "$PUBLISHED" | grep -c .)
if [ "$NPUB" -ge 3 ] && [ "$NPUB" -lt 19 ] && [ ! -e "$OUT/model.safetensors.index.json" ]; then
	pass "killed with $NPUB of 19 shards published, no index"
else
	fail "killed with a few shards published, no index" "$(ls -A "$OUT")"
fi
if ls -A "$OUT" | grep -q '^\.ckptconv-tmp\.'; then
	pass "the kill left temporary files"
else
	fail "the kill left temporary files" "$(ls -A "$OUT")"
fi
(cd "$OUT" && stat -c '%n %i %Y.%y' $PUBLISHED) >"$TEST_TMP/before"
FIRST_MISSING=$(for i in $(seq -f %05g 1 19); do
	f=model-$i-of-00019.safetensors
	[ -e "$OUT/$f" ] || { echo "$f"; break; }
done)
expect_fail "verify --checksums refuses the killed run's destination" destination_incomplete \
	"$OUT/$FIRST_MISSING: planned but missing ($NPUB of 20 planned files present)" \
	"$CKPTCONV" verify --checksums "$OUT"
expect_fail "without --resume the destination is refused, naming --resume" destination_not_empty \
	"; pass --overwrite to replace them, or --resume to keep the files an interrupted conversion of this plan finished" \
	"${CONVERT[@]}" "$NAT" "$OUT"
expect_fail "another plan's run without --resume is refused" destination_not_empty \
	"; pass --overwrite to replace them" \
	"$CKPTCONV" convert --no-fsync --to hf --max-shard-size 50MB "$NAT" "$OUT"
if grep -q -- "--resume" "$TEST_TMP/run.err"; then
	fail "... without naming --resume" "$(run_err)"
else
	pass "... without naming --resume"
fi
expect_fail "another plan's destination is refused" manifest_mismatch \
	"$OUT: the destination holds a conversion of another plan (digest " \
	"$CKPTCONV" convert --no-fsync --to hf --max-shard-size 50MB --resume "$NAT" "$OUT"
if grep -q -- "other options or input); remove it or pass --overwrite (without --resume) to replace it$" \
	"$TEST_TMP/run.err"; then
	pass "... saying --overwrite replaces it"
else
	fail "... saying --overwrite replaces it" "$(run_err)"
fi
run "${CONVERT[@]}" --resume --overwrite "$NAT" "$OUT"
assert_eq "--resume with --overwrite is a usage error (exit 2)" 2 "$RUN_RC"
assert_eq "... saying why" \
	"ckptconv: usage_error: resume and overwrite exclude each other: resume keeps the files an interrupted run of the same plan finished, overwrite removes them (see 'ckptconv convert --help')" \
	"$(error_line "$TEST_TMP/run.err")"
expect_ok "--resume" "${CONVERT[@]}" --resume --json "$NAT" "$OUT"
# Which shards the resume kept unread, and which it read again.
kept_as() {
	python3 -c 'import json,sys
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("msg") == sys.argv[2]:
        print(r["file"])' "$TEST_TMP/run.err" "kept: $1" | sort | tr '\n' ' '
}
assert_eq "each shard published before the kill was kept unchanged since published, not read again" \
	"$(echo $PUBLISHED | tr ' ' '\n' | sort | tr '\n' ' ')" "$(kept_as "unchanged since published")"
assert_eq "... and none was read again for its checksum" "" "$(kept_as "checksum re-read")"
KEPT=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["kept_files"], r["kept_bytes"])' "$TEST_TMP/run.out")
WANT_BYTES=$(cd "$OUT" && stat -c %s $PUBLISHED | awk '{s += $1} END {print s}')
assert_eq "the result counts the kept shards and their bytes" "$NPUB $WANT_BYTES" "$KEPT"
RATE=$(python3 -c 'import json,struct,sys
r = json.load(open(sys.argv[1]))
kept_data = 0
for f in sys.argv[3:]:
    with open(sys.argv[2] + "/" + f, "rb") as h:
        n = struct.unpack("<Q", h.read(8))[0]
        h.seek(0, 2)
        kept_data += h.tell() - 8 - n
written = r["bytes"] - kept_data
got = r["bytes_per_second"] * r["seconds"]
print("ok" if abs(got - written) <= 1e-6 * written else "rate %r x %r s = %r, wrote %d" % (r["bytes_per_second"], r["seconds"], got, written))' \
	"$TEST_TMP/run.out" "$OUT" $PUBLISHED)
assert_eq "bytes_per_second counts the bytes this run wrote, not the kept" ok "$RATE"
(cd "$OUT" && stat -c '%n %i %Y.%y' $PUBLISHED) >"$TEST_TMP/after"
if cmp -s "$TEST_TMP/before" "$TEST_TMP/after"; then
	pass "the $NPUB shards published before the kill keep their inode and mtime"
else
	fail "the shards published before the kill keep their inode and mtime" \
		"$(diff "$TEST_TMP/before" "$TEST_TMP/after" | head -4)"
fi
if ls -A "$OUT" | grep -q '^\.ckptconv-tmp\.'; then
	fail "no temporary file remains" "$(ls -A "$OUT" | grep tmp)"
else
	pass "no temporary file remains"
fi
if diff -r -q -x ckptconv-sums.json "$REF" "$OUT" >"$TEST_TMP/diff.out" &&
	[ "$(same_sums "$REF" "$OUT")" = same ]; then
	pass "the output equals the clean run's, records included"
else
	fail "the output equals the clean run's, records included" "$(head -5 "$TEST_TMP/diff.out")" \
		"$(same_sums "$REF" "$OUT")"
fi
RECORDED=$(python3 -c 'import json,os,sys
d = sys.argv[1]
r = json.load(open(d + "/ckptconv-sums.json"))
bad = []
for f in r["files"]:
    if not f["name"].endswith(".safetensors") or f["name"].endswith(".index.json"):
        continue
    st = os.stat(d + "/" + f["name"])
    if (f.get("ino"), f.get("dev"), f.get("mtime_ns"), f.get("ctime_ns")) != \
            (str(st.st_ino), str(st.st_dev), st.st_mtime_ns, st.st_ctime_ns):
        bad.append(f["name"])
print("every shard" if not bad else "not: " + " ".join(bad))' "$OUT")
assert_eq "the record holds each shard's inode, mtime and ctime as they are now" "every shard" \
	"$RECORDED"
expect_ok "the resumed output verifies by its checksums" "$CKPTCONV" verify --checksums "$OUT"

# ---- a corrupted byte ----------------------------------------------------------
# Written in place with its mtime set back: only its ctime (which userspace
# cannot set) and the bytes say it changed.
BAD=model-00002-of-00019.safetensors
MTIME=$(stat -c %y "$OUT/$BAD")
printf '\x5a' | dd of="$OUT/$BAD" bs=1 seek=50000000 conv=notrunc status=none
touch -d "$MTIME" "$OUT/$BAD"
cmp -s "$REF/$BAD" "$OUT/$BAD" && fail "the byte was changed" "$BAD equals the reference"
assert_eq "its size and mtime are as before" "$(stat -c '%s %y' "$REF/$BAD" | cut -d' ' -f1) $MTIME" \
	"$(stat -c '%s %y' "$OUT/$BAD")"
expect_fail "verify --checksums finds the corrupted shard" checksum_mismatch "$BAD" \
	"$CKPTCONV" verify --checksums "$OUT"
(cd "$OUT" && stat -c '%n %i %Y.%y' model-000*.safetensors) >"$TEST_TMP/before"
expect_ok "--resume over the corrupted shard" "${CONVERT[@]}" --resume --json "$NAT" "$OUT"
if grep -q '"kept_files":18,' "$TEST_TMP/run.out" &&
	grep -q "not kept: written again.*$BAD" "$TEST_TMP/run.err"; then
	pass "--resume kept 18 shards and named the one it writes again"
else
	fail "--resume kept 18 shards and named the one it writes again" "$(run_out)" "$(run_err)"
fi
assert_eq "... the 18 unchanged since published, none read again" "18 " \
	"$(kept_as "unchanged since published" | wc -w) $(kept_as "checksum re-read")"
(cd "$OUT" && stat -c '%n %i %Y.%y' model-000*.safetensors) >"$TEST_TMP/after"
assert_eq "only the corrupted shard was written again" "$BAD" \
	"$(diff "$TEST_TMP/before" "$TEST_TMP/after" | sed -n 's/^> \([^ ]*\) .*/\1/p')"
if diff -r -q -x ckptconv-sums.json "$REF" "$OUT" >"$TEST_TMP/diff.out" &&
	[ "$(same_sums "$REF" "$OUT")" = same ]; then
	pass "after --resume the output equals the clean run's again"
else
	fail "after --resume the output equals the clean run's again" "$(head -5 "$TEST_TMP/diff.out")"
fi
expect_ok "and verifies by its checksums" "$CKPTCONV" verify --checksums "$OUT"

# Published without fsync (--no-fsync), a shard's bytes may have lived only in
# the page cache of a machine that crashed since: the record names the boot
# that published each one, and a resume in another boot reads them again.
BOOT=$(cat /proc/sys/kernel/random/boot_id)
assert_eq "each shard published without fsync is recorded with this boot's id" 19 \
	"$(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
print(sum(1 for f in r["files"] if f["name"].startswith("model-") and f.get("boot_id") == sys.argv[2]))' \
		"$OUT/ckptconv-sums.json" "$BOOT")"
python3 - "$OUT/ckptconv-sums.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
for f in r["files"]:
    if "boot_id" in f:
        f["boot_id"] = "00000000-0000-4000-8000-000000000000"
json.dump(r, open(sys.argv[1], "w"), indent=2)
PYEOF
expect_ok "--resume after the machine booted again" "${CONVERT[@]}" --resume --json "$NAT" "$OUT"
assert_eq "... reads every shard again, none kept unread" "19 " \
	"$(kept_as "checksum re-read" | wc -w) $(kept_as "unchanged since published")"
expect_ok "a run with fsync" "$CKPTCONV" convert --to hf --max-shard-size 100MB "$NAT" \
	"$TEST_TMP/synced"
if grep -q '"boot_id"' "$TEST_TMP/synced/ckptconv-sums.json"; then
	fail "... records no boot id: its shards were on disk before they were published" \
		"$(head -c 600 "$TEST_TMP/synced/ckptconv-sums.json")"
else
	pass "... records no boot id: its shards were on disk before they were published"
fi
rm -rf "$TEST_TMP/synced"
expect_exit "verify --checksums with two locations is a usage error" 2 \
	"$CKPTCONV" verify --checksums "$REF" "$OUT"

# ---- verify --checksums on destinations that are not finished ------------------
CFG=$TEST_TMP/config-only
mkdir "$CFG"
cp "$REF/ckptconv-plan.json" "$REF/config.json" "$CFG/"
python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
r["files"] = [f for f in r["files"] if f["name"] == "config.json"]
json.dump(r, open(sys.argv[2], "w"))' "$REF/ckptconv-sums.json" "$CFG/ckptconv-sums.json"
expect_fail "verify --checksums with only config.json published" destination_incomplete \
	"$CFG/model-00001-of-00019.safetensors: planned but missing (0 of 20 planned files present)" \
	"$CKPTCONV" verify --checksums "$CFG"
cp "$REF/model.safetensors.index.json" "$CFG/"
for i in $(seq -f %05g 1 19); do ln "$REF/model-$i-of-00019.safetensors" "$CFG/"; done
expect_fail "verify --checksums: a planned file present but not recorded" destination_incomplete \
	"$CFG/model-00001-of-00019.safetensors: planned and present but not in the checksum record ckptconv-sums.json" \
	"$CKPTCONV" verify --checksums "$CFG"
rm "$CFG/ckptconv-sums.json"
expect_fail "verify --checksums: a plan manifest without a checksum record" destination_incomplete \
	"$CFG: holds a plan manifest (ckptconv-plan.json) but no checksum record (ckptconv-sums.json)" \
	"$CKPTCONV" verify --checksums "$CFG"
expect_fail "verify --checksums on a checkpoint no conversion wrote" destination_incomplete \
	"$HF: holds neither a plan manifest (ckptconv-plan.json) nor a checksum record (ckptconv-sums.json)" \
	"$CKPTCONV" verify --checksums "$HF"
expect_ok "fixture tiny" "$CKPTCONV" fixture --preset tiny "$TEST_TMP/tiny"
expect_ok "partition 0/2 of tiny" "$CKPTCONV" convert --no-fsync --to native --partition 0/2 \
	"$TEST_TMP/tiny" "$TEST_TMP/tiny-part"
expect_fail "verify --checksums on partitions not finalized" destination_incomplete \
	"$TEST_TMP/tiny-part: a conversion in 2 partitions, not finalized (ckptconv finalize)" \
	"$CKPTCONV" verify --checksums "$TEST_TMP/tiny-part"
# ---- a copied destination, with a file of the user's -------------------------
# cp -a gives every file a new inode and ctime: --resume reads each shard
# again and keeps those whose CRC-32C matches.  A file of the user's was
# there when the first run accepted the destination (or came since):
# --resume leaves it in place and says so.
FOREIGN=$TEST_TMP/foreign
cp -a "$REF" "$FOREIGN"
rm "$FOREIGN/model.safetensors.index.json" "$FOREIGN/model-00019-of-00019.safetensors"
COPIED_BAD=model-00007-of-00019.safetensors
printf '\x5a' | dd of="$FOREIGN/$COPIED_BAD" bs=1 seek=1000000 conv=notrunc status=none
echo keep >"$FOREIGN/notes.txt"
expect_ok "--resume with a file of the user's there" "${CONVERT[@]}" --resume --json "$NAT" "$FOREIGN"
assert_eq "a copied destination: its 17 intact shards kept after reading them again, none unread" \
	"17 " "$(kept_as "checksum re-read" | wc -w) $(kept_as "unchanged since published")"
if grep -q '"kept_files":17,' "$TEST_TMP/run.out" &&
	grep -q "not kept: written again.*$COPIED_BAD" "$TEST_TMP/run.err"; then
	pass "... and the copied shard with a changed byte written again"
else
	fail "... and the copied shard with a changed byte written again" "$(run_out)" "$(run_err)"
fi
if grep -qF "\"$FOREIGN: left 'notes.txt' in place, which no conversion of this plan writes\"" "$TEST_TMP/run.out"; then
	pass "... which it names in its warnings"
else
	fail "... which it names in its warnings" "$(run_out)"
fi
assert_eq "... and leaves as it was" keep "$(cat "$FOREIGN/notes.txt")"
rm "$FOREIGN/notes.txt"
same_files "... the output equals a clean run's" "$REF" "$FOREIGN"

# ---- two runs on one destination at once -------------------------------------
# While a conversion writes into a destination, another run of it (a
# --resume, or a partition) is refused before touching anything; the first
# one finishes whole.  (About 200 KB at 20 KB/s: ten seconds to try both,
# even in a sanitizer build on a busy machine.)
LOCKED=$TEST_TMP/locked
"$CKPTCONV" convert --no-fsync --to native --max-rate 20KB "$TEST_TMP/tiny" "$LOCKED" \
	>/dev/null 2>&1 &
PID=$!
for i in $(seq 300); do
	[ -e "$LOCKED/ckptconv-plan.json" ] && break
	sleep 0.1
done
expect_fail "a --resume while a run writes into the destination" destination_in_use \
	"$LOCKED: another ckptconv run is writing into this destination (a conversion or partition); wait for it to end or stop it, then run again" \
	"$CKPTCONV" convert --no-fsync --to native --resume "$TEST_TMP/tiny" "$LOCKED"
expect_fail "a partition while a run writes into the destination" destination_in_use \
	"$LOCKED: another ckptconv run is writing into this destination (a conversion that is not partitioned)" \
	"$CKPTCONV" convert --no-fsync --to native --partition 1/2 "$TEST_TMP/tiny" "$LOCKED"
if wait "$PID"; then
	pass "the first run finished"
else
	fail "the first run finished" "exit $?"
fi
expect_ok "... whole: it verifies by its checksums" "$CKPTCONV" verify --checksums "$LOCKED"
expect_ok "tiny to native, once" "$CKPTCONV" convert --no-fsync --to native "$TEST_TMP/tiny" \
	"$TEST_TMP/tiny-ref"
same_files "... and equals a run alone" "$TEST_TMP/tiny-ref" "$LOCKED"

# ---- a resume that is itself cancelled ------------------------------------------
# It keeps what the first run finished; what it published itself is removed
# with the entries naming it, so its record names only files that are there.
CUT=$TEST_TMP/cut
SMALL=("$CKPTCONV" convert --no-fsync --to native --max-shard-size 20KB --max-rate 20KB)
shards_in() { ls "$1" 2>/dev/null | grep -c '^model-.*-of-.*\.safetensors$' || true; }
# run_until N ARGS...: runs ARGS in the background until DST ($CUT) holds N
# shards, then sends SIG (default KILL).
run_until() {
	local n=$1 sig=$2 pid i
	shift 2
	"$@" >/dev/null 2>"$TEST_TMP/cut.err" &
	pid=$!
	for i in $(seq 600); do
		[ "$(shards_in "$CUT")" -ge "$n" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -"$sig" "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
run_until 2 KILL "${SMALL[@]}" "$TEST_TMP/tiny" "$CUT"
KEPT_BEFORE=$(shards_in "$CUT")
run_until $((KEPT_BEFORE + 2)) INT "${SMALL[@]}" --resume "$TEST_TMP/tiny" "$CUT"
assert_eq "the cancelled resume says so" "ckptconv: cancelled" \
	"$(grep -o '^ckptconv: cancelled' "$TEST_TMP/cut.err" | head -1)"
MISSING=$(python3 -c 'import json, os, sys
r = json.load(open(os.path.join(sys.argv[1], "ckptconv-sums.json")))
print(" ".join(f["name"] for f in r["files"] if not os.path.exists(os.path.join(sys.argv[1], f["name"]))))' "$CUT")
assert_eq "... and its record names no file it removed" "" "$MISSING"
expect_fail "... verify --checksums: destination_incomplete" destination_incomplete "" \
	"$CKPTCONV" verify --checksums "$CUT"
expect_ok "a last --resume finishes it" "$CKPTCONV" convert --no-fsync --to native \
	--max-shard-size 20KB --resume "$TEST_TMP/tiny" "$CUT"
expect_ok "... and it verifies" "$CKPTCONV" verify --checksums "$CUT"
finish
