#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_confine.sh: every file the daemon opens for a job resolves inside
# its --allow-root when it is opened.  Symbolic links in a source that lead
# outside: a shard, the index and config.json are refused (403
# forbidden_path naming the file), an extra file (one pointing at the
# daemon's own --token-file) is skipped with a warning and never copied;
# links that stay inside the root work.  Files (a shard, config.json, an
# extra file) and directories swapped for such links after a job was
# accepted and before it runs (the job waits behind a throttled one) fail
# it, or skip the extra file, without touching anything outside.  A
# destination swapped for a link while its job runs: the cancelled job's
# cleanup happens in the directory it opened, never in the link's target.
# A source overlapping a running job's destination is refused (409), and
# a directory holding only unfinished output is no checkpoint (422).  The
# daemon stays healthy and converts correctly throughout.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

OUTSIDE="$TEST_TMP/outside"
mkdir -p "$OUTSIDE"
echo "t0k3n-$RANDOM$RANDOM" >"$TEST_TMP/token"
SECRET=$(cat "$TEST_TMP/token")
SLOW='{"max_bytes_per_second": "16KB"}'
SHARD=model-00002-of-00005.safetensors

expect_ok "fixture tiny" "$CKPTCONV" fixture --preset tiny "$DATA/slow-src"
expect_ok "reference conversion by the CLI" "$CKPTCONV" convert --to native \
	"$GOLDEN_DIR/tiny/hf" "$TEST_TMP/ref"

# hf_copy NAME: a writable copy of the golden tiny HF checkpoint in $DATA.
hf_copy() {
	copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/$1"
}

# outside_link DIR FILE: moves DIR/FILE out of the root, leaving a link.
outside_link() {
	mkdir -p "$OUTSIDE/$(basename "$1")"
	mv "$1/$2" "$OUTSIDE/$(basename "$1")/$2"
	ln -s "$OUTSIDE/$(basename "$1")/$2" "$1/$2"
}

# message_names NAME TEXT: the last answer's error message contains TEXT.
message_names() {
	local message
	message=$(jget error.message)
	if [[ "$message" == *"$2"* ]]; then
		pass "$1"
	else
		fail "$1" "message: $message"
	fi
}

# outside_unchanged NAME: nothing outside the root was written or removed.
snapshot_outside() {
	(cd "$OUTSIDE" && find . -type f -exec sha256sum {} + | sort) >"$TEST_TMP/outside.before"
}
outside_unchanged() {
	(cd "$OUTSIDE" && find . -type f -exec sha256sum {} + | sort) >"$TEST_TMP/outside.after"
	if cmp -s "$TEST_TMP/outside.before" "$TEST_TMP/outside.after"; then
		pass "$1"
	else
		fail "$1" "$(diff "$TEST_TMP/outside.before" "$TEST_TMP/outside.after" | head -5)"
	fi
}

# ---- sources with links that leave the root (refused at submission) ----------
hf_copy shard-out
outside_link "$DATA/shard-out" "$SHARD"
hf_copy index-out
outside_link "$DATA/index-out" model.safetensors.index.json
hf_copy config-out
outside_link "$DATA/config-out" config.json
snapshot_outside

daemon_start --token-file "$TEST_TMP/token" --max-running 1
TOKEN=$SECRET

post_job "$(job_json "$DATA/shard-out" "$DATA/o1" native)"
expect_error "shard linked outside the root" 403 forbidden_path source
message_names "the message names the shard" "$DATA/shard-out/$SHARD"
post_job "$(job_json "$DATA/index-out" "$DATA/o2" native)"
expect_error "index linked outside the root" 403 forbidden_path source
message_names "the message names the index" "$DATA/index-out/model.safetensors.index.json"
post_job "$(job_json "$DATA/config-out" "$DATA/o3" native)"
expect_error "config.json linked outside the root" 403 forbidden_path source
message_names "the message names config.json" "$DATA/config-out/config.json"
if [ ! -e "$DATA/o1" ] && [ ! -e "$DATA/o2" ] && [ ! -e "$DATA/o3" ]; then
	pass "refused jobs created no destination"
else
	fail "refused jobs created no destination" "$(ls "$DATA")"
fi

# ---- an extra file leading to the daemon's token: skipped, never copied --------
hf_copy leak
ln -s "$TEST_TMP/token" "$DATA/leak/tokenizer_config.json"
echo "readme" >"$OUTSIDE/README.md"
ln -s "$OUTSIDE/README.md" "$DATA/leak/README.md"
submit "source with extra files linked outside" "$DATA/leak" "$DATA/leak-out" native
expect_job "it succeeds" "$JOB" succeeded 60
api GET "/v1/jobs/$JOB"
if grep -q "skipped 'tokenizer_config.json': it resolves outside the allowed roots" "$BODY" &&
	grep -q "skipped 'README.md': it resolves outside the allowed roots" "$BODY"; then
	pass "the result warns about both skipped files"
else
	fail "the result warns about both skipped files" "$(jget result.warnings)"
fi
if [ ! -e "$DATA/leak-out/tokenizer_config.json" ] && [ ! -e "$DATA/leak-out/README.md" ] &&
	! grep -rqF "$SECRET" "$DATA/leak-out"; then
	pass "the token is not in the output"
else
	fail "the token is not in the output" "$(ls -a "$DATA/leak-out")"
fi
same_files "the weights are converted as usual" "$TEST_TMP/ref" "$DATA/leak-out"

# ---- links that stay inside the root keep working ------------------------------
hf_copy in-links
mkdir -p "$DATA/blobs"
for f in "$DATA"/in-links/model-*.safetensors; do
	mv "$f" "$DATA/blobs/$(basename "$f")"
	ln -s "../blobs/$(basename "$f")" "$f"
done
mv "$DATA/in-links/model.safetensors.index.json" "$DATA/blobs/index.json"
ln -s "$DATA/blobs/index.json" "$DATA/in-links/model.safetensors.index.json"
echo '{"shared": true}' >"$DATA/blobs/tokenizer.json"
ln -s ../blobs/tokenizer.json "$DATA/in-links/tokenizer.json"
ln -s blobs "$DATA/blob-alias"
ln -s ../blob-alias/tokenizer.json "$DATA/in-links/tokenizer_alias.json"
submit "source linked within the root (relative, absolute, via a linked dir)" \
	"$DATA/in-links" "$DATA/in-links-out" native
expect_job "it succeeds" "$JOB" succeeded 60
if cmp -s "$DATA/blobs/tokenizer.json" "$DATA/in-links-out/tokenizer.json" &&
	cmp -s "$DATA/blobs/tokenizer.json" "$DATA/in-links-out/tokenizer_alias.json"; then
	pass "in-root extra files are copied"
else
	fail "in-root extra files are copied" "$(ls -a "$DATA/in-links-out")"
fi
rm -f "$DATA/in-links-out/tokenizer.json" "$DATA/in-links-out/tokenizer_alias.json"
same_files "output equals the CLI's" "$TEST_TMP/ref" "$DATA/in-links-out"

# ---- swapped after the job was accepted, before it runs -------------------------
submit "throttled job holding the runner" "$DATA/slow-src" "$DATA/slow-out" native "$SLOW"
SLOW_JOB=$JOB
hf_copy swap-src
submit "queued: source directory to be swapped" "$DATA/swap-src" "$DATA/swap-src-out" native
J_SRC=$JOB
hf_copy swap-dst-src
mkdir -p "$DATA/swap-dst" "$OUTSIDE/dst-target"
submit "queued: destination directory to be swapped" "$DATA/swap-dst-src" "$DATA/swap-dst" native
J_DST=$JOB
hf_copy swap-shard
submit "queued: shard to be swapped" "$DATA/swap-shard" "$DATA/swap-shard-out" native
J_SHARD=$JOB
hf_copy swap-extra
echo "notes" >"$DATA/swap-extra/NOTES.md"
submit "queued: extra file to be swapped" "$DATA/swap-extra" "$DATA/swap-extra-out" native
J_EXTRA=$JOB
hf_copy swap-config
submit "queued: config.json to be swapped" "$DATA/swap-config" "$DATA/swap-config-out" native
J_CONFIG=$JOB
assert_eq "they wait behind the throttled job" "queued queued queued queued queued" \
	"$(job_state "$J_SRC") $(job_state "$J_DST") $(job_state "$J_SHARD") $(job_state "$J_EXTRA") $(job_state "$J_CONFIG")"

# The source: a checkpoint outside the root takes its place.
copy_dir "$GOLDEN_DIR/tiny/hf" "$OUTSIDE/ckpt"
mv "$DATA/swap-src" "$DATA/swap-src.orig"
ln -s "$OUTSIDE/ckpt" "$DATA/swap-src"
# The destination: a link to a directory outside.
rmdir "$DATA/swap-dst"
ln -s "$OUTSIDE/dst-target" "$DATA/swap-dst"
# One shard of an unchanged directory, and an extra file.
outside_link "$DATA/swap-shard" "$SHARD"
echo "secret notes" >"$OUTSIDE/NOTES.md"
rm "$DATA/swap-extra/NOTES.md"
ln -s "$OUTSIDE/NOTES.md" "$DATA/swap-extra/NOTES.md"
# config.json: one outside, marked so that a copy of it would show.
mkdir -p "$OUTSIDE/config"
sed 's/^{/{"outside_marker": "'"$SECRET"'",/' "$DATA/swap-config/config.json" >"$OUTSIDE/config/config.json"
rm "$DATA/swap-config/config.json"
ln -s "$OUTSIDE/config/config.json" "$DATA/swap-config/config.json"
snapshot_outside

api DELETE "/v1/jobs/$SLOW_JOB"
expect_job "the throttled job is cancelled" "$SLOW_JOB" cancelled 30
expect_job "swapped source: the job fails" "$J_SRC" failed 60
assert_eq "... with forbidden_path" forbidden_path "$(job_field "$J_SRC" error.code)"
message_names "... naming the source" "$DATA/swap-src"
expect_job "swapped destination: the job fails" "$J_DST" failed 60
assert_eq "... with forbidden_path" forbidden_path "$(job_field "$J_DST" error.code)"
message_names "... naming the destination" "$DATA/swap-dst"
expect_job "swapped shard: the job fails" "$J_SHARD" failed 60
assert_eq "... with forbidden_path" forbidden_path "$(job_field "$J_SHARD" error.code)"
message_names "... naming the shard" "$DATA/swap-shard/$SHARD"
expect_job "swapped extra file: the job succeeds" "$J_EXTRA" succeeded 60
api GET "/v1/jobs/$J_EXTRA"
if grep -q "skipped 'NOTES.md': it resolves outside the allowed roots" "$BODY" &&
	[ ! -e "$DATA/swap-extra-out/NOTES.md" ]; then
	pass "... skipping the file with a warning"
else
	fail "... skipping the file with a warning" "$(jget result.warnings)"
fi
expect_job "swapped config.json: the job fails" "$J_CONFIG" failed 60
assert_eq "... with forbidden_path" forbidden_path "$(job_field "$J_CONFIG" error.code)"
message_names "... naming config.json" "$DATA/swap-config/config.json"
outside_unchanged "nothing outside the root was touched"
if [ -z "$(ls -A "$OUTSIDE/dst-target")" ] && [ ! -e "$DATA/swap-src-out" ] &&
	[ ! -e "$DATA/swap-shard-out" ] && [ ! -e "$DATA/swap-config-out" ]; then
	pass "failed jobs wrote nothing"
else
	fail "failed jobs wrote nothing" "$(ls -A "$OUTSIDE/dst-target" "$DATA")"
fi

# ---- a destination swapped while its job runs ------------------------------------
submit "throttled job, sharded output" "$DATA/slow-src" "$DATA/run-out" native \
	'{"max_bytes_per_second": "16KB", "max_shard_size": "40KB"}'
RUN_JOB=$JOB
for i in $(seq 300); do
	ls "$DATA/run-out"/model-0000[0-9]-of-*.safetensors >/dev/null 2>&1 && break
	sleep 0.1
done
if ls "$DATA/run-out"/model-0000[0-9]-of-*.safetensors >/dev/null 2>&1 &&
	[ "$(job_state "$RUN_JOB")" = running ]; then
	pass "the job has published a shard and runs on"
else
	fail "the job has published a shard and runs on" "$(ls -a "$DATA/run-out")"
fi

# A job may not read what another job is writing.
post_job "$(job_json "$DATA/run-out" "$DATA/reader-out" hf)"
expect_error "source = a running job's destination" 409 destination_in_use source
message_names "... naming that job" "$RUN_JOB"
post_job "$(job_json "$DATA/run-out" "$DATA/reader-out" hf '{"dry_run": true}')"
expect_error "... also for a dry run" 409 destination_in_use source
post_job "$(job_json "$DATA/slow-src" "$DATA/run-out/inner" hf)"
expect_error "destination inside a running job's destination" 409 destination_in_use destination

# Files of the same names as the job's output wait in the link's target.
mkdir -p "$OUTSIDE/victim"
for f in "$DATA"/run-out/*; do
	echo "theirs" >"$OUTSIDE/victim/$(basename "$f")"
done
echo "theirs" >"$OUTSIDE/victim/model.safetensors.index.json"
snapshot_outside
mv "$DATA/run-out" "$DATA/run-out.moved"
ln -s "$OUTSIDE/victim" "$DATA/run-out"
api DELETE "/v1/jobs/$RUN_JOB"
expect_job "the job is cancelled" "$RUN_JOB" cancelled 30
outside_unchanged "its cleanup touched nothing in the link's target"
no_finished_output "the directory it opened holds nothing finished or temporary" \
	"$DATA/run-out.moved"
if [ ! -e "$DATA/run-out.moved/config.json" ]; then
	pass "... and not the copied config.json"
else
	fail "... and not the copied config.json" "$(ls -a "$DATA/run-out.moved")"
fi

# ---- unfinished output is no checkpoint ----------------------------------------------
mkdir -p "$DATA/killed"
cp "$TEST_TMP/ref/config.json" "$DATA/killed/"
cp "$TEST_TMP/ref/model.safetensors" "$DATA/killed/.ckptconv-tmp.model.safetensors.tmp"
cp "$TEST_TMP/ref/model.safetensors" "$DATA/killed/.ckptconv-tmp.model.safetensors"
post_job "$(job_json "$DATA/killed" "$DATA/killed-out" hf)"
expect_error "a directory holding only temporary files" 422 not_a_checkpoint source

# ---- the daemon is fine --------------------------------------------------------------
api GET /healthz
assert_eq "healthz" "200 ok" "$STATUS $(jget status)"
submit "a plain job afterwards" "$DATA/slow-src" "$DATA/after" native
expect_job "it succeeds" "$JOB" succeeded 60
expect_ok "reference of the fixture" "$CKPTCONV" convert --to native "$DATA/slow-src" \
	"$TEST_TMP/slow-ref"
same_files "its output equals the CLI's" "$TEST_TMP/slow-ref" "$DATA/after"
if ! grep -qF "$SECRET" "$DAEMON_LOG"; then
	pass "the token never appears in the log"
else
	fail "the token never appears in the log"
fi

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
