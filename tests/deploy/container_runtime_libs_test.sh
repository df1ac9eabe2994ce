#!/usr/bin/env bash
# Checks deploy/Dockerfile's runtime stage against the built binaries, without a Docker engine:
#   - ldd on logit-server, logit-worker, logit and liblogit_local.so; every resolved shared
#     library is mapped to its Debian package (dpkg -S, trying the /lib and /usr/lib spellings
#     of usrmerge paths and the symlink's target, e.g. libblas.so.3 -> openblas-openmp);
#   - every package of a library a binary names itself (ELF NEEDED) is in the runtime stage's
#     package list (between `# runtime-packages-begin` and `# runtime-packages-end`) or in
#     BASE_ESSENTIAL below (what debian:12 already has);
#   - every package of any library ldd loads (LibTorch's OpenCV, FFmpeg, ... included) is in that
#     list, in BASE_ESSENTIAL, or among the Depends/Pre-Depends that apt pulls in for them
#     (followed through this machine's dpkg database, the same Debian 12 packages);
#   - the runtime stage installs no -dev package and no compiler or build tool;
#   - the build stage (`# build-packages-begin` / `-end`) installs every -dev package and build
#     tool of .ci/install-deps.sh, so that the image builds what CI builds;
#   - the runtime stage's shape: FROM ${BASE_IMAGE}, user 10001, VOLUME /var/lib/logit,
#     EXPOSE 50051 9464 9465, HEALTHCHECK `logit --server 127.0.0.1:50051 health`,
#     ENTRYPOINT logit-server.
# Needs the built binaries (env LOGIT_BINARY_DIR, default ./build), ldd, readelf (binutils),
# dpkg and /usr/bin/python3.
#   bash tests/deploy/container_runtime_libs_test.sh
# Exits non-zero with "container_runtime_libs_test: FAIL: ..." lines naming what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BUILD="${LOGIT_BINARY_DIR:-$ROOT/build}"
DOCKERFILE="${LOGIT_DOCKERFILE:-$ROOT/deploy/Dockerfile}"
PY="${PYTHON:-/usr/bin/python3}"

fail() { echo "container_runtime_libs_test: FAIL: $*" >&2; exit 1; }

[[ -x "$PY" ]] || fail "$PY not found"
for tool in ldd readelf dpkg dpkg-query; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
[[ -f "$DOCKERFILE" ]] || fail "$DOCKERFILE not found"
BINARIES=("$BUILD/server/logit-server" "$BUILD/worker/logit-worker" "$BUILD/client/logit"
          "$BUILD/client/liblogit_local.so")
for b in "${BINARIES[@]}"; do
  [[ -f "$b" ]] || fail "$b not found (build the targets logit-server logit-worker logit logit_local, or set LOGIT_BINARY_DIR)"
done

"$PY" - "$DOCKERFILE" "$ROOT/.ci/install-deps.sh" "${BINARIES[@]}" <<'EOF'
import os, re, shlex, subprocess, sys

dockerfile, install_deps, *binaries = sys.argv[1:]
problems = []

# What the debian:12 image has before any apt-get install (Priority: required, and the libraries
# apt, dpkg, coreutils and util-linux need). Listed explicitly rather than "whatever the build
# machine has", so that a library only the build machine has is still reported.
BASE_ESSENTIAL = """
  libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libbz2-1.0 liblz4-1 libxxhash0
  libselinux1 libpcre2-8-0 libacl1 libattr1 libaudit1 libcap-ng0 libcap2 libcrypt1 libmd0
  libgmp10 libgcrypt20 libgpg-error0 libsystemd0 libudev1 libblkid1 libmount1 libuuid1
  libsmartcols1 libtinfo6 libgnutls30 libhogweed6 libnettle8 libidn2-0 libunistring2
  libp11-kit0 libffi8 libtasn1-6 libseccomp2 libdb5.3 libpam0g libsemanage2 libsepol2
""".split()

# Packages a runtime image must not contain: headers and toolchains.
TOOL_RE = re.compile(r"^(build-essential|gcc|g\+\+|cpp|clang|llvm|gfortran|binutils|make|cmake|"
                     r"ninja-build|pkg-config|pkgconf|protobuf-compiler|protobuf-compiler-grpc|"
                     r"libtool|autoconf|automake)(-[0-9.]+)?$")

def is_dev_or_tool(p):
    return p.endswith("-dev") or TOOL_RE.match(p) is not None

# ---- the Dockerfile: instructions per stage, with Docker's line continuation and comments ----
raw = open(dockerfile).read().splitlines()
instructions = []  # (keyword, text, [marker lines seen inside], line number)
cur, cur_line = None, 0
for n, line in enumerate(raw, 1):
    stripped = line.strip()
    if cur is None:
        if not stripped or stripped.startswith("#"):
            continue
        cur, cur_line = [], n
    elif stripped.startswith("#"):
        cur.append(("#", stripped, n))  # comment inside a continued instruction: Docker drops it
        continue
    if line.rstrip().endswith("\\"):
        cur.append(("", line.rstrip()[:-1], n))
        continue
    cur.append(("", line, n))
    text = " ".join(t for kind, t, _ in cur if kind == "")
    comments = [(t, ln) for kind, t, ln in cur if kind == "#"]
    keyword = text.split(None, 1)[0].upper()
    instructions.append((keyword, text.strip(), comments, cur_line))
    cur = None
if cur is not None:
    problems.append(f"{dockerfile}: ends inside a continued instruction")

stages = []  # dicts: name, from, instructions
global_args = {}
for ins in instructions:
    keyword, text = ins[0], ins[1]
    if keyword == "FROM":
        parts = text.split()
        stages.append({"from": parts[1], "name": parts[3] if len(parts) > 3 else None,
                       "ins": []})
    elif not stages:
        if keyword == "ARG":
            k, _, v = text.split(None, 1)[1].partition("=")
            global_args[k] = v.strip('"')
    else:
        stages[-1]["ins"].append(ins)
if len(stages) < 2:
    problems.append(f"{dockerfile}: expected a multi-stage build (build and runtime), found "
                    f"{len(stages)} stage(s)")
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
runtime, build_stages = stages[-1], stages[:-1]

def marked_packages(stage, begin, end):
    """Packages between the two marker comments of one RUN in the stage, and all that RUN
    installs (ARG defaults of the stage substituted)."""
    args = {}
    for keyword, text, comments, line in stage["ins"]:
        if keyword == "ARG":
            k, _, v = text.split(None, 1)[1].partition("=")
            args[k] = v.strip().strip('"')
    marked, installed = None, []
    for keyword, text, comments, line in stage["ins"]:
        if keyword != "RUN":
            continue
        inside, between, seen = False, [], False
        for kind, t, ln in _run_lines(line):
            if kind == "#" and t == f"# {begin}":
                inside = seen = True
            elif kind == "#" and t == f"# {end}":
                inside = False
            elif inside and kind == "":
                between.extend(t.split())
        if seen:
            marked = [w for w in between if not w.startswith("-")]
        expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""),
                          text)
        for segment in re.split(r"&&|;|\|\|", expanded):
            words = shlex.split(segment)
            if "apt-get" in words and "install" in words:
                for w in words[words.index("install") + 1:]:
                    if not w.startswith("-"):
                        installed.append(w)
    return marked, installed

def _run_lines(start_line):
    """The physical lines of the instruction starting at start_line: ("#", comment) or ("", text)."""
    out = []
    for n in range(start_line, len(raw) + 1):
        line = raw[n - 1]
        s = line.strip()
        if n > start_line and s.startswith("#"):
            out.append(("#", s, n))
            continue
        out.append(("", line.rstrip().rstrip("\\"), n))
        if not line.rstrip().endswith("\\"):
            break
    return out

runtime_list, runtime_installed = marked_packages(
    runtime, "runtime-packages-begin", "runtime-packages-end")
if runtime_list is None:
    problems.append(f"{dockerfile}: the runtime stage (last FROM) has no RUN with "
                    "# runtime-packages-begin / # runtime-packages-end markers")
    runtime_list = []
elif not runtime_list:
    problems.append(f"{dockerfile}: no packages between the runtime-packages markers")
for p in runtime_list:
    if p not in runtime_installed:
        problems.append(f"{dockerfile}: runtime package {p} is between the markers but not in an "
                        "apt-get install")
bad = sorted({p for p in runtime_installed if is_dev_or_tool(p)})
if bad:
    problems.append(f"{dockerfile}: the runtime stage installs -dev packages or build tools: "
                    + " ".join(bad))
if "ca-certificates" not in runtime_list:
    problems.append(f"{dockerfile}: the runtime stage should install ca-certificates")

build_list = None
for st in build_stages:
    marked, _ = marked_packages(st, "build-packages-begin", "build-packages-end")
    if marked is not None:
        build_list = marked
if build_list is None:
    problems.append(f"{dockerfile}: no build stage with # build-packages-begin / -end markers")
    build_list = []
# .ci/install-deps.sh's PKGS=( ... ): its -dev packages and build tools must be in the build stage.
deps_text = open(install_deps).read()
m = re.search(r"PKGS=\((.*?)\)", deps_text, re.S)
if not m:
    problems.append(f"{install_deps}: no PKGS=( ... ) list")
else:
    ci_pkgs = [w for line in m.group(1).splitlines() for w in line.split("#", 1)[0].split()]
    needed = [p for p in ci_pkgs if is_dev_or_tool(p)]
    missing = [p for p in needed if p not in build_list]
    if missing:
        problems.append(f"{dockerfile}: the build stage lacks what .ci/install-deps.sh installs to "
                        "build: " + " ".join(missing))

# The runtime stage's shape.
rt = {}
for keyword, text, comments, line in runtime["ins"]:
    rt.setdefault(keyword, []).append(text.split(None, 1)[1] if " " in text else "")
if runtime["from"] not in ("${BASE_IMAGE}", "$BASE_IMAGE"):
    problems.append(f"{dockerfile}: the runtime stage should be FROM ${{BASE_IMAGE}}, is "
                    f"FROM {runtime['from']}")
if not global_args.get("BASE_IMAGE", "").startswith("debian:12"):
    problems.append(f"{dockerfile}: ARG BASE_IMAGE should default to debian:12")
if not global_args.get("BUILD_IMAGE", "").startswith("debian:12"):
    problems.append(f"{dockerfile}: ARG BUILD_IMAGE should default to debian:12")
if not any(s["from"] in ("${BUILD_IMAGE}", "$BUILD_IMAGE") for s in build_stages):
    problems.append(f"{dockerfile}: no build stage is FROM ${{BUILD_IMAGE}}")
users = rt.get("USER", [])
if not users or users[-1].split(":")[0] not in ("10001", "logit"):
    problems.append(f"{dockerfile}: the runtime stage should end as USER 10001 (logit), has {users}")
if not any("10001" in t for t in rt.get("RUN", [])):
    problems.append(f"{dockerfile}: the runtime stage creates no user with uid 10001")
if not any("/var/lib/logit" in t for t in rt.get("VOLUME", [])):
    problems.append(f"{dockerfile}: no VOLUME /var/lib/logit")
exposed = {p.split("/")[0] for t in rt.get("EXPOSE", []) for p in t.split()}
if not {"50051", "9464", "9465"} <= exposed:
    problems.append(f"{dockerfile}: EXPOSE should name 50051 9464 9465, names {sorted(exposed)}")
hc = " ".join(rt.get("HEALTHCHECK", []))
if not re.search(r'"?logit"?,?\s+"?--server"?,?\s+"?127\.0\.0\.1:50051"?,?\s+"?health"?', hc):
    problems.append(f"{dockerfile}: HEALTHCHECK should run `logit --server 127.0.0.1:50051 health`, "
                    f"is {hc!r}")
if "logit-server" not in " ".join(rt.get("ENTRYPOINT", [])):
    problems.append(f"{dockerfile}: ENTRYPOINT should be logit-server")

# ---- the binaries: ldd (everything loaded) and ELF NEEDED (what each names itself) ----
resolved = {}     # soname -> path (as ldd prints it)
needed_by = {}    # soname -> binaries that load it
direct = {}       # soname -> binaries that name it in NEEDED
for b in binaries:
    out = subprocess.run(["ldd", b], capture_output=True, text=True)
    if out.returncode != 0:
        problems.append(f"ldd {b} failed: {out.stderr.strip()}")
        continue
    for line in out.stdout.splitlines():
        line = line.strip()
        m = re.match(r"(\S+) => (not found|(\S+) \(0x[0-9a-f]+\))", line)
        if m:
            if m.group(2) == "not found":
                problems.append(f"{os.path.basename(b)}: {m.group(1)} not found by ldd")
                continue
            resolved[m.group(1)] = m.group(3)
            needed_by.setdefault(m.group(1), set()).add(os.path.basename(b))
        elif re.match(r"/\S+ \(0x", line):  # the dynamic loader
            path = line.split()[0]
            resolved[os.path.basename(path)] = path
            needed_by.setdefault(os.path.basename(path), set()).add(os.path.basename(b))
    out = subprocess.run(["readelf", "-d", b], capture_output=True, text=True, check=True)
    for so in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout):
        direct.setdefault(so, set()).add(os.path.basename(b))

def candidates(path):
    """The spellings dpkg may know a library by: as given, its real path, each with and without
    /usr (usrmerge: /lib -> usr/lib, but packages list one or the other)."""
    out = []
    for p in (path, os.path.realpath(path)):
        for q in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            if q not in out:
                out.append(q)
    return out

all_paths = sorted({c for p in resolved.values() for c in candidates(p)})
owner = {}
out = subprocess.run(["dpkg", "-S", *all_paths], capture_output=True, text=True)
for line in out.stdout.splitlines():
    if line.startswith("diversion "):
        continue
    pkgs, _, path = line.partition(": ")
    owner[path.strip()] = [p.strip().split(":")[0] for p in pkgs.split(",")]
package_of = {}   # soname -> package
for so, path in resolved.items():
    for c in candidates(path):
        if c in owner:
            package_of[so] = owner[c][0]
            break
    else:
        problems.append(f"{so} ({path}, loaded by {', '.join(sorted(needed_by[so]))}): "
                        "no Debian package owns it (dpkg -S)")

# ---- what apt installs for the runtime list: Depends/Pre-Depends, through dpkg's database ----
status = subprocess.run(
    ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Provides}\t${Pre-Depends}\t"
     "${Depends}\n"], capture_output=True, text=True, check=True).stdout
depends, providers = {}, {}
def names(field):
    groups = []
    for group in field.split(","):
        alts = [re.sub(r"\(.*?\)|\[.*?\]|:\w+", "", a).strip() for a in group.split("|")]
        alts = [a for a in alts if a]
        if alts:
            groups.append(alts)
    return groups
for line in status.splitlines():
    pkg, abbrev, provides, pre, dep = (line.split("\t") + [""] * 5)[:5]
    if not abbrev.startswith("ii"):
        continue
    depends[pkg] = names(pre) + names(dep)
    for alts in names(provides):
        providers.setdefault(alts[0], []).append(pkg)

def dependency_closure(roots):
    closure = set(p for p in roots if p in depends)
    queue = list(closure)
    def satisfied(alt):
        return alt in closure or any(p in closure for p in providers.get(alt, []))
    while queue:
        pkg = queue.pop()
        for alts in depends.get(pkg, []):
            if any(satisfied(a) for a in alts):
                continue
            # apt takes the first alternative it can install (a virtual one through a provider).
            for a in alts:
                pick = a if a in depends else next(iter(providers.get(a, [])), None)
                if pick:
                    closure.add(pick)
                    queue.append(pick)
                    break
    return closure
closure = dependency_closure(list(dict.fromkeys(runtime_list + BASE_ESSENTIAL)))
for p in runtime_list:
    if p not in depends:
        problems.append(f"runtime package {p} is not installed on this machine, so what it pulls "
                        "in cannot be followed (apt-get install it, or fix its name)")
bad = sorted(p for p in closure if is_dev_or_tool(p))
if bad:
    problems.append("the runtime packages pull in -dev packages or build tools: " + " ".join(bad))

# ---- the checks ----
missing_direct = {}
for so, bins in direct.items():
    pkg = package_of.get(so)
    if pkg and pkg not in runtime_list and pkg not in BASE_ESSENTIAL:
        missing_direct.setdefault(pkg, set()).add(f"{so} ({', '.join(sorted(bins))})")
for pkg, libs in sorted(missing_direct.items()):
    problems.append(f"missing runtime package {pkg}: linked directly, add it between the "
                    f"runtime-packages markers: {'; '.join(sorted(libs))}")
# What the missing direct packages would pull in is reported with them, not one by one.
with_missing = dependency_closure(list(dict.fromkeys(runtime_list + BASE_ESSENTIAL
                                                     + sorted(missing_direct))))
missing_any, pulled = {}, set()
for so, pkg in package_of.items():
    if pkg in closure or pkg in runtime_list or pkg in BASE_ESSENTIAL or pkg in missing_direct:
        continue
    if pkg in with_missing:
        pulled.add(pkg)
    else:
        missing_any.setdefault(pkg, set()).add(so)
if pulled:
    problems.append(f"(with those, {len(pulled)} more packages of loaded libraries would come in "
                    "as their dependencies)")
for pkg, libs in sorted(missing_any.items()):
    problems.append(f"missing runtime package {pkg}: loaded through another library, and no "
                    f"runtime package depends on it: {' '.join(sorted(libs))}")
unused = [p for p in runtime_list if p != "ca-certificates"
          and p not in set(package_of.values())]
for p in unused:
    print(f"  note: runtime package {p} provides no library the binaries load", file=sys.stderr)

if problems:
    print("\n".join(f"container_runtime_libs_test: FAIL: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"  {len(resolved)} shared libraries from {len(set(package_of.values()))} packages; "
      f"{len({package_of[s] for s in direct if s in package_of})} linked directly, each in the "
      f"runtime list or the base image ({len(runtime_list)} packages, {len(closure)} with dependencies and base)")
print(f"  runtime stage: no -dev package or compiler; build stage has the {len(build_list)} "
      "build packages of .ci/install-deps.sh")
EOF
echo "container_runtime_libs_test: OK"
