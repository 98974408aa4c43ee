#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_golden.sh: the golden conversions through an object store (s3rver on
# 127.0.0.1): S3 -> S3 in both directions and with expert parallelism,
# local -> S3 and S3 -> local.  Every output is taken out with the AWS CLI
# and compared with the golden reference (`ckptconv verify`) and byte for
# byte with the same conversion between local directories.  Then a listing
# that needs several pages, the destination checks (not empty, --overwrite)
# and the clear errors: unknown access key, missing bucket (source and
# destination), missing prefix, a server that is not there.  The secret key
# never appears in any output.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver src-bkt dst-bkt

G=$GOLDEN_DIR/tiny
OUT_LOG=$TEST_TMP/all-output.log
: >"$OUT_LOG"

# keep_output: every command's output goes into OUT_LOG for the secret check.
keep_output() {
	cat "$TEST_TMP/run.out" "$TEST_TMP/run.err" >>"$OUT_LOG"
}

s3_upload "$G/hf" s3://src-bkt/tiny/hf/ || fail "upload the golden HF checkpoint"
s3_upload "$G/native" s3://src-bkt/tiny/native/ || fail "upload the golden native checkpoint"

# check_output NAME EXPECTED_GOLDEN S3URL LOCAL_TWIN: takes the output out
# of the store, compares it with the golden reference and with the same
# conversion done between local directories.
check_output() {
	local name=$1 expected=$2 url=$3 twin=$4 dir=$TEST_TMP/down/$1
	if ! s3_download "$url" "$dir"; then
		fail "$name: download $url"
		return 1
	fi
	expect_ok "$name: equals golden $(basename "$expected")" "$CKPTCONV" verify "$expected" "$dir"
	keep_output
	same_files "$name: byte-identical to the local conversion" "$twin" "$dir"
}

# local_twin NAME ARGS...: the conversion between local directories.
local_twin() {
	local name=$1
	shift
	rm -rf "$TEST_TMP/twin/$name"
	mkdir -p "$TEST_TMP/twin"
	"$CKPTCONV" convert "$@" "$TEST_TMP/twin/$name" >/dev/null 2>&1 ||
		fail "$name: local conversion"
	echo "$TEST_TMP/twin/$name"
}

# S3 -> S3, HF -> native.
twin=$(local_twin native --to native "$G/hf")
expect_ok "s3->s3 hf->native" "$CKPTCONV" convert --to native s3://src-bkt/tiny/hf/ \
	s3://dst-bkt/s3s3/native/ && keep_output
check_output s3s3-native "$G/native" s3://dst-bkt/s3s3/native/ "$twin"

# S3 -> S3, expert parallel rank 1 of 2.
twin=$(local_twin ep2r1 --to native --ep-size 2 --ep-rank 1 "$G/hf")
expect_ok "s3->s3 hf->native ep 2 rank 1" "$CKPTCONV" convert --to native --ep-size 2 \
	--ep-rank 1 s3://src-bkt/tiny/hf/ s3://dst-bkt/s3s3/ep2r1 && keep_output
check_output s3s3-ep2r1 "$G/native-ep2-rank1" s3://dst-bkt/s3s3/ep2r1/ "$twin"

# S3 -> S3, native -> HF.
twin=$(local_twin hf --to hf "$G/native")
expect_ok "s3->s3 native->hf" "$CKPTCONV" convert --to hf s3://src-bkt/tiny/native/ \
	s3://dst-bkt/s3s3/hf/ && keep_output
check_output s3s3-hf "$G/hf-from-native" s3://dst-bkt/s3s3/hf/ "$twin"

# local -> S3.
twin=$(local_twin native --to native "$G/hf")
expect_ok "local->s3 hf->native" "$CKPTCONV" convert --to native "$G/hf" s3://dst-bkt/l2s/ &&
	keep_output
check_output l2s-native "$G/native" s3://dst-bkt/l2s/ "$twin"

# S3 -> local.
twin=$(local_twin hf --to hf "$G/native")
expect_ok "s3->local native->hf" "$CKPTCONV" convert --to hf s3://src-bkt/tiny/native/ \
	"$TEST_TMP/s2l" && keep_output
expect_ok "s3->local equals golden hf-from-native" "$CKPTCONV" verify "$G/hf-from-native" \
	"$TEST_TMP/s2l"
same_files "s3->local byte-identical to the local conversion" "$twin" "$TEST_TMP/s2l"

# Reading straight from the store: inspect and verify accept s3:// too.
expect_ok "inspect s3://" "$CKPTCONV" inspect --json s3://src-bkt/tiny/hf/ && keep_output
if grep -q '"tensors"' "$TEST_TMP/run.out"; then
	pass "inspect s3:// reports the tensors"
else
	fail "inspect s3:// reports the tensors" "$(head -c 300 "$TEST_TMP/run.out")"
fi
expect_ok "verify s3:// against golden" "$CKPTCONV" verify "$G/native" s3://dst-bkt/s3s3/native/

# A listing of several pages: max-keys 2 over the checkpoint plus extra
# files, which are copied like any non-weight file.
s3_upload "$G/hf" s3://src-bkt/paged/ || fail "upload the paged checkpoint"
for i in 1 2 3 4 5; do
	echo "note $i" >"$TEST_TMP/note-$i.txt"
	s3cli s3 cp --only-show-errors "$TEST_TMP/note-$i.txt" "s3://src-bkt/paged/note-$i.txt"
done
listed=$(s3_keys s3://src-bkt/paged/ | wc -l)
assert_eq "the paged prefix holds 12 objects" 12 "$listed"
twin=$(local_twin native --to native "$G/hf")
expect_ok "s3->s3 with max-keys 2 (6 pages)" env CKPTCONV_S3_MAX_KEYS=2 "$CKPTCONV" convert \
	--to native s3://src-bkt/paged/ s3://dst-bkt/paged-out/ && keep_output
if s3_download s3://dst-bkt/paged-out/ "$TEST_TMP/down/paged" &&
	"$CKPTCONV" verify "$G/native" "$TEST_TMP/down/paged" >/dev/null 2>&1 &&
	cmp -s "$twin/model.safetensors" "$TEST_TMP/down/paged/model.safetensors"; then
	pass "paged listing: output equals golden native"
else
	fail "paged listing: output equals golden native"
fi
if [ "$(cat "$TEST_TMP/down/paged/note-5.txt" 2>/dev/null)" = "note 5" ]; then
	pass "paged listing: a file from the last page was copied"
else
	fail "paged listing: a file from the last page was copied" \
		"$(s3_keys s3://dst-bkt/paged-out/ | tr '\n' ' ')"
fi

# The destination must be empty unless --overwrite.
expect_fail "s3 destination not empty" destination_not_empty "s3://dst-bkt/s3s3/native" \
	"$CKPTCONV" convert --to native s3://src-bkt/tiny/hf/ s3://dst-bkt/s3s3/native/
keep_output
expect_ok "s3 destination with --overwrite" "$CKPTCONV" convert --overwrite --to native \
	s3://src-bkt/tiny/hf/ s3://dst-bkt/s3s3/native/ && keep_output
check_output s3s3-overwrite "$G/native" s3://dst-bkt/s3s3/native/ "$(local_twin native --to native "$G/hf")"

# The --s3-* flags override the environment.
twin=$(local_twin native --to native "$G/hf")
expect_ok "--s3-endpoint-url wins over AWS_ENDPOINT_URL_S3" env AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 \
	"$CKPTCONV" convert --to native --s3-endpoint-url "http://127.0.0.1:$S3_PORT" \
	--s3-region us-east-1 --s3-addressing-style path s3://src-bkt/tiny/hf/ s3://dst-bkt/flags/ &&
	keep_output
check_output flags "$G/native" s3://dst-bkt/flags/ "$twin"
expect_exit "--s3-addressing-style sideways is a usage error" 2 "$CKPTCONV" convert --to native \
	--s3-addressing-style sideways s3://src-bkt/tiny/hf/ "$TEST_TMP/x"
keep_output

# Clear errors.
expect_fail "unknown access key" s3_access_denied "s3://src-bkt/" \
	env AWS_ACCESS_KEY_ID=AKIDUNKNOWN "$CKPTCONV" convert --to native s3://src-bkt/tiny/hf/ \
	"$TEST_TMP/denied"
keep_output
if grep -q "InvalidAccessKeyId" "$TEST_TMP/run.err"; then
	pass "unknown access key: the message gives the server's reason"
else
	fail "unknown access key: the message gives the server's reason" "$(run_err)"
fi
expect_empty "unknown access key: nothing written" "$TEST_TMP/denied"
expect_fail "missing source bucket" s3_no_such_bucket "s3://no-such-bucket/" \
	"$CKPTCONV" convert --to native s3://no-such-bucket/tiny/hf/ "$TEST_TMP/nobucket"
keep_output
expect_fail "missing destination bucket" s3_no_such_bucket "s3://no-such-bucket/" \
	"$CKPTCONV" convert --to native "$G/hf" s3://no-such-bucket/out/
keep_output
expect_fail "missing source prefix" source_not_found "s3://src-bkt/nothing" \
	"$CKPTCONV" convert --to native s3://src-bkt/nothing/ "$TEST_TMP/nothing"
keep_output
expect_fail "keys in part in the environment" s3_credentials "AWS_ACCESS_KEY_ID" \
	env -u AWS_ACCESS_KEY_ID "$CKPTCONV" convert --to native s3://src-bkt/tiny/hf/ "$TEST_TMP/x"
keep_output
expect_fail "a server that is not there" s3_unavailable "attempts" \
	env AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 CKPTCONV_S3_MAX_ATTEMPTS=2 "$CKPTCONV" convert \
	--to native s3://src-bkt/tiny/hf/ "$TEST_TMP/x"
keep_output
expect_fail "an invalid location" invalid_location "s3://src-bkt/a/../b" \
	"$CKPTCONV" convert --to native s3://src-bkt/a/../b/ "$TEST_TMP/x"
keep_output

no_secret_in "the secret key never appears in any output" "$OUT_LOG"

finish
