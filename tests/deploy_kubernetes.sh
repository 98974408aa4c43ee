#!/bin/bash
# SPDX-License-Identifier: MIT
#
# deploy_kubernetes: parses and checks every manifest of docker/kubernetes
# with tests/k8s_check.js (a real YAML parser and the Kubernetes API
# schemas), the static-keys/ variant included, then proves the checker
# catches each broken rule: a copy of the manifests with one rule broken
# must be rejected with the matching finding.
set -u

top=${TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
manifests=$top/docker/kubernetes
checker=$top/tests/k8s_check.js
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); echo "not ok: $1"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckptconv-k8s.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

if ! command -v node >/dev/null; then
	echo "deploy_kubernetes: node is not installed (scripts/install-deps.sh test)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

# Without its npm packages the checker can check nothing: one failure, not
# one per mutant.
if out=$(node "$checker" "$tmp/no-manifests" 2>&1) || ! grep -q 'no such file\|ENOENT' <<<"$out"; then
	fail "the checker cannot run:"
	echo "$out"
	echo "$passed passed, $failed failed"
	exit 1
fi

# The manifests as shipped must pass every check.
if out=$(node "$checker" "$manifests" 2>&1); then
	pass "manifests: $(tail -n 1 <<<"$out")"
else
	fail "manifests rejected:"
	echo "$out"
fi

# mutant NAME FILE SED_EXPRESSION EXPECTED_FINDING: breaks one rule in a
# copy and expects the checker to fail naming it.
mutant() {
	local name=$1 file=$2 expr=$3 expected=$4 dir=$tmp/$1 out
	rm -rf "$dir"
	cp -r "$manifests" "$dir"
	sed -i -e "$expr" "$dir/$file"
	if cmp -s "$manifests/$file" "$dir/$file"; then
		fail "$name: the edit '$expr' changed nothing in $file"
		return
	fi
	if out=$(node "$checker" "$dir" 2>&1); then
		fail "$name: the checker accepted it"
	elif grep -qF -- "$expected" <<<"$out"; then
		pass "$name: rejected"
	else
		fail "$name: rejected without the finding '$expected':"
		echo "$out"
	fi
}

mutant two-replicas deployment.yaml 's/replicas: 1$/replicas: 2/' 'replicas is 2, not 1'
mutant rolling-update deployment.yaml 's/type: Recreate/type: RollingUpdate/' 'strategy.type is not Recreate'
mutant no-readyz deployment.yaml 's|path: /readyz|path: /healthz|' 'readinessProbe is not GET /readyz'
mutant no-healthz deployment.yaml '/livenessProbe:/,/readinessProbe:/ s|path: /healthz|path: /status|' \
	'livenessProbe is not GET /healthz'
mutant short-grace deployment.yaml 's/terminationGracePeriodSeconds: 40/terminationGracePeriodSeconds: 20/' \
	'is not above the shutdown timeout'
mutant longer-shutdown configmap.yaml 's/CKPTCONV_SHUTDOWN_TIMEOUT: "25"/CKPTCONV_SHUTDOWN_TIMEOUT: "60"/' \
	'is not above the shutdown timeout 60'
mutant writable-root deployment.yaml 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' \
	'readOnlyRootFilesystem is not true'
mutant keeps-capabilities deployment.yaml 's/drop: \["ALL"\]/drop: ["NET_RAW"]/' 'capabilities.drop does not hold ALL'
mutant runs-as-root deployment.yaml 's/runAsNonRoot: true/runAsNonRoot: false/g' 'runAsNonRoot is not true'
mutant unconfined deployment.yaml 's/type: RuntimeDefault/type: Unconfined/g' 'seccompProfile.type is not RuntimeDefault'
mutant latest-image deployment.yaml 's|ckptconv:0.1.0|ckptconv:latest|' 'is not pinned to a version tag'
mutant no-limits deployment.yaml '/limits:/,/ephemeral-storage: 2Gi/d' 'resources.limits.memory missing'
mutant keys-secret-by-default deployment.yaml \
	's/^            - configMapRef:$/            - secretRef:\n                name: ckptconv-s3\n            - configMapRef:/' \
	'reads a Secret through envFrom by default'
mutant keys-in-default-secret secret.example.yaml 's/^  token: /  AWS_SECRET_ACCESS_KEY: "replace"\n  token: /' \
	'the default example has no access keys'
mutant no-service-account deployment.yaml '/serviceAccountName: ckptconv/d' 'serviceAccountName is not ckptconv'
mutant job-without-service-account partition-job.yaml '/serviceAccountName: ckptconv/d' \
	'serviceAccountName is not ckptconv'
mutant no-irsa-annotation serviceaccount.yaml 's|eks.amazonaws.com/role-arn|example.com/role-arn|' \
	'no eks.amazonaws.com/role-arn annotation'
mutant bad-role-arn serviceaccount.yaml 's|:role/ckptconv|:user/ckptconv|' 'naming an IAM role ARN'
mutant service-account-token serviceaccount.yaml 's/^automountServiceAccountToken: false/automountServiceAccountToken: true/' \
	'automountServiceAccountToken is not false'
mutant service-account-not-applied kustomization.yaml '/- serviceaccount.yaml/d' 'does not list serviceaccount.yaml'
mutant static-keys-other-secret static-keys/envfrom-secret.yaml 's/name: ckptconv-s3/name: other/' \
	'static-keys on deployment.yaml[0] Deployment/ckptconv: envFrom has no secretRef to ckptconv-s3'
mutant static-keys-wrong-path static-keys/envfrom-secret.yaml 's|/containers/0/envFrom/-|/containers/0/envFromm/-|' \
	'envFrom has no secretRef to ckptconv-s3'
mutant static-keys-real-key static-keys/secret.example.yaml 's/replace-with-secret-access-key/wJalrXUtnFEMI/' \
	'AWS_SECRET_ACCESS_KEY is not a placeholder'
mutant static-keys-not-over-base static-keys/kustomization.yaml 's|  - \.\./$|  - ../deployment.yaml|' \
	'does not build on ../'
mutant no-scratch deployment.yaml 's|mountPath: /tmp|mountPath: /scratch|' 'no emptyDir mounted at /tmp'
mutant state-not-on-pvc deployment.yaml 's/claimName: ckptconv-state/claimName: other-claim/' \
	'is not on the PersistentVolumeClaim'
mutant secret-in-configmap configmap.yaml 's/^data:$/data:\n  AWS_SECRET_ACCESS_KEY: "x"/' \
	'credentials never belong in the ConfigMap'
mutant loopback-listen configmap.yaml 's/"0.0.0.0:8080"/"127.0.0.1:8080"/' 'does not listen on 0.0.0.0'
mutant probes-on-main-port deployment.yaml 's/port: health$/port: http/' \
	'livenessProbe is not GET /healthz on port 8081'
mutant loopback-health-listen configmap.yaml 's/"0.0.0.0:8081"/"127.0.0.1:8081"/' \
	'CKPTCONV_HEALTH_LISTEN does not listen on 0.0.0.0'
mutant not-indexed partition-job.yaml 's/completionMode: Indexed/completionMode: NonIndexed/' \
	'no Job with completionMode: Indexed'
mutant half-parallel partition-job.yaml 's/parallelism: 16/parallelism: 8/' 'parallelism differs from completions'
mutant wrong-count partition-job.yaml 's|(JOB_COMPLETION_INDEX)/16|(JOB_COMPLETION_INDEX)/8|' \
	'differs from completions'
mutant fixed-index partition-job.yaml 's|$(JOB_COMPLETION_INDEX)/16|0/16|' \
	'no `--partition $(JOB_COMPLETION_INDEX)/N` argument'
mutant finalize-elsewhere finalize-job.yaml 's|s3://checkpoints/Ling-1T-native/|s3://checkpoints/other/|' \
	'does not run `ckptconv finalize'
mutant schema-violation service.yaml 's/port: 8080/port: "eighty"/' 'schema:'
mutant duplicate-key pvc.yaml 's/^  name: ckptconv-state$/  name: ckptconv-state\n  name: again/' 'YAML 1.1'
mutant yaml-1.1-boolean configmap.yaml 's/CKPTCONV_MAX_RUNNING: "1"/CKPTCONV_MAX_RUNNING: yes/' \
	'reads differently as YAML 1.1 and 1.2'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
