# SPDX-License-Identifier: MIT
#
# deploy_dockerfile: reads docker/Dockerfile for tests/deploy_docker.sh.
# `check FILE` prints one line per rule the image breaks (multi-stage from a
# pinned Debian 12 tag, non-root user, HEALTHCHECK through `ckptconv
# healthcheck`, EXPOSE 8080, STOPSIGNAL SIGTERM, a VOLUME for the state dir,
# no secrets, no curl) and exits 1 if any; `show FILE WHAT` prints what the
# test needs to replay the build steps and run the image's commands;
# `context SRC DST` copies the build context Docker would send (SRC less
# what .dockerignore leaves out).
import json
import re
import shlex
import sys

SECRET_WORDS = re.compile(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)|SECRET|PASSWORD|TOKEN\b", re.I)
STATE_DIR = "/var/lib/ckptconv"


class Instruction:
    def __init__(self, line, keyword, args):
        self.line, self.keyword, self.args = line, keyword.upper(), args.strip()

    def exec_form(self):
        """The JSON array of an exec-form argument, or None."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(x, str) for x in value) else None


def parse(path):
    """Instructions grouped by stage: [{'from': Instruction, 'body': [...]}]."""
    stages, pending, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text, pending = pending + raw, ""
        keyword, _, args = text.strip().partition(" ")
        ins = Instruction(start, keyword, args)
        if ins.keyword == "FROM":
            stages.append({"from": ins, "body": []})
        elif stages:
            stages[-1]["body"].append(ins)
        else:
            stages.append({"from": None, "body": [ins]})  # ARG before FROM
    return stages


def stage_image(stage):
    words = [w for w in stage["from"].args.split() if not w.startswith("--")]
    image = words[0]
    name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
    return image, name


def env_of(ins):
    """ENV KEY=VALUE ... (or the legacy ENV KEY VALUE) as a dict."""
    words = shlex.split(ins.args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def find(stage, keyword):
    return [i for i in stage["body"] if i.keyword == keyword]


def install_deps_modes(stage):
    modes = []
    for run in find(stage, "RUN"):
        modes += re.findall(r"install-deps\.sh\s+(\w+)", run.args)
    return modes


def findings(path):
    out = []
    stages = [s for s in parse(path) if s["from"] is not None]
    if len(stages) < 2:
        return ["not a multi-stage build (fewer than two FROM)"]
    names = set()
    for stage in stages:
        image, name = stage_image(stage)
        names.add(name)
        if image in names:
            continue  # FROM an earlier stage
        repo, _, tag = image.partition(":")
        if "@" in image:
            continue  # a digest pins even better
        if repo not in ("debian", "docker.io/library/debian"):
            out.append(f"line {stage['from'].line}: FROM {image} is not Debian")
        if not tag or tag == "latest" or not re.match(r"^12\.\d+(-slim)?$", tag):
            out.append(f"line {stage['from'].line}: FROM {image} is not pinned to a Debian 12 version tag (12.N or 12.N-slim)")
    build, final = stages[0], stages[-1]
    if "build" not in install_deps_modes(build):
        out.append("the build stage does not run scripts/install-deps.sh build")
    if not any("scripts/build.sh" in r.args for r in find(build, "RUN")):
        out.append("the build stage does not run scripts/build.sh")
    if install_deps_modes(final) != ["runtime"]:
        out.append("the runtime stage does not run scripts/install-deps.sh runtime (and only that mode)")
    for run in find(final, "RUN"):
        if re.search(r"\b(curl|wget)\b", run.args):
            out.append(f"line {run.line}: the runtime stage installs or runs curl/wget")
    users = find(final, "USER")
    if not users:
        out.append("the runtime stage sets no USER")
    else:
        user = users[-1].args.split(":")[0]
        if user in ("root", "0", ""):
            out.append(f"line {users[-1].line}: USER {users[-1].args} is root")
    health = find(final, "HEALTHCHECK")
    if len(health) != 1:
        out.append("the runtime stage has no single HEALTHCHECK")
    else:
        args = health[0].args
        cmd = re.split(r"\bCMD\b", args, maxsplit=1)
        argv = Instruction(0, "CMD", cmd[1]).exec_form() if len(cmd) == 2 else None
        if not argv or argv[:2] != ["ckptconv", "healthcheck"]:
            out.append(f"line {health[0].line}: HEALTHCHECK is not CMD [\"ckptconv\", \"healthcheck\", ...]")
    exposed = " ".join(i.args for i in find(final, "EXPOSE")).split()
    if "8080" not in exposed and "8080/tcp" not in exposed:
        out.append("the runtime stage does not EXPOSE 8080")
    signals = find(final, "STOPSIGNAL")
    if not signals or signals[-1].args not in ("SIGTERM", "15"):
        out.append("STOPSIGNAL is not SIGTERM")
    volumes = []
    for v in find(final, "VOLUME"):
        volumes += v.exec_form() or v.args.split()
    if STATE_DIR not in volumes:
        out.append(f"no VOLUME for the state dir {STATE_DIR}")
    env = {}
    for e in find(final, "ENV"):
        env.update(env_of(e))
    if env.get("CKPTCONV_LISTEN") != "0.0.0.0:8080":
        out.append("ENV CKPTCONV_LISTEN is not 0.0.0.0:8080")
    if env.get("CKPTCONV_STATE_DIR", STATE_DIR) != STATE_DIR:
        out.append(f"ENV CKPTCONV_STATE_DIR is not the volume {STATE_DIR}")
    entry = find(final, "ENTRYPOINT")
    if not entry or entry[-1].exec_form() != ["ckptconv"]:
        out.append('ENTRYPOINT is not ["ckptconv"]')
    cmd = find(final, "CMD")
    if not cmd or cmd[-1].exec_form() != ["serve"]:
        out.append('CMD is not ["serve"]')
    for stage in stages:
        for ins in stage["body"]:
            if ins.keyword in ("ENV", "ARG", "LABEL") and SECRET_WORDS.search(ins.args):
                out.append(f"line {ins.line}: {ins.keyword} names a secret")
            if ins.keyword in ("COPY", "ADD") and re.search(r"\.env\b|secret|credentials|\.aws", ins.args, re.I):
                out.append(f"line {ins.line}: {ins.keyword} copies a secret or environment file")
    return out


def show(path, what):
    stages = [s for s in parse(path) if s["from"] is not None]
    build, final = stages[0], stages[-1]
    if what == "build-runs":  # build-stage RUN commands, NUL-separated, package installs left out
        runs = [r.args for r in find(build, "RUN") if "install-deps.sh" not in r.args]
        sys.stdout.write("\0".join(runs))
    elif what == "build-args":
        for a in find(build, "ARG"):
            print(a.args)
    elif what == "install-deps-modes":
        print(" ".join(install_deps_modes(build) + install_deps_modes(final)))
    elif what == "binary-copy":
        for c in find(final, "COPY"):
            words = c.args.split()
            if any(w.startswith("--from=") for w in words) and words[-1].endswith("/ckptconv"):
                print(words[-2], words[-1])
    elif what == "env":
        for e in find(final, "ENV"):
            for key, value in env_of(e).items():
                print(f"{key}={value}")
    elif what == "healthcheck":
        args = find(final, "HEALTHCHECK")[0].args
        argv = Instruction(0, "CMD", re.split(r"\bCMD\b", args, maxsplit=1)[1]).exec_form()
        print("\n".join(argv))
    else:
        raise SystemExit(f"unknown: {what}")


def ignore_rules(path):
    """.dockerignore as (regex, excluded) pairs; the last match wins."""
    rules = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return rules
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excluded = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + "$"), excluded))
    return rules


def context_excludes(rules, relative):
    """Whether Docker leaves `relative` out of the build context: a path is
    out when it, or a directory above it, matches an exclusion that no
    later exception overrides."""
    parts = relative.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        verdict = None
        for regex, excluded in rules:
            if regex.match(prefix):
                verdict = excluded
        if verdict:
            return True
    return False


def copy_context(source, destination):
    """Copies the build context Docker would send: `source` less .dockerignore."""
    import os
    import shutil
    rules = ignore_rules(os.path.join(source, ".dockerignore"))
    for root, dirs, files in os.walk(source):
        relative_root = os.path.relpath(root, source)
        relative_root = "" if relative_root == "." else relative_root + "/"
        dirs[:] = [d for d in dirs if not context_excludes(rules, relative_root + d)]
        os.makedirs(os.path.join(destination, relative_root), exist_ok=True)
        for name in files:
            if not context_excludes(rules, relative_root + name):
                shutil.copy2(os.path.join(root, name), os.path.join(destination, relative_root, name),
                             follow_symlinks=False)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "context":
        copy_context(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        problems = findings(sys.argv[2])
        for p in problems:
            print(p)
        sys.exit(1 if problems else 0)
    if len(sys.argv) == 4 and sys.argv[1] == "show":
        show(sys.argv[2], sys.argv[3])
        return
    raise SystemExit("usage: deploy_dockerfile.py check FILE | show FILE WHAT | context SRC DST")


if __name__ == "__main__":
    main()
