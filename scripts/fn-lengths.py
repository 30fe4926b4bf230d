#!/usr/bin/env python3
"""Lists Rust functions (outside tests) longer than a limit, longest first.

    python3 scripts/fn-lengths.py [LIMIT]     # default 80

A function is counted from its `fn` line to its closing brace. Test code
(`tests/` directories and `#[cfg(test)] mod tests` blocks) is skipped. A
function preceded by a comment containing `long:` says why it is longer, and
is listed apart. Exit code 1 when an unexplained function is over the limit.
"""
import os
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 80
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def strip(line):
    """The line without string contents and // comments (good enough for braces)."""
    out, i, in_str = [], 0, False
    while i < len(line):
        c = line[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif line.startswith("//", i):
            break
        elif c == "'" and i + 2 < len(line) and line[i + 2] == "'":
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if re.match(r"^\s*#\[cfg\(test\)\]", lines[i]):
            return
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        explained = any("long:" in lines[j] for j in range(max(0, i - 4), i))
        depth, opened, j = 0, False, i
        while j < len(lines):
            s = strip(lines[j])
            if not opened and ";" in s and "{" not in s:
                break  # a declaration without a body
            depth += s.count("{") - s.count("}")
            opened = opened or "{" in s
            if opened and depth <= 0:
                yield (j - i + 1, path, i + 1, m.group(6), explained)
                break
            j += 1
        i += 1


def main():
    found = []
    for root, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if d not in ("target", ".git", "tests")]
        for f in files:
            if f.endswith(".rs"):
                found.extend(functions(os.path.join(root, f)))
    found.sort(reverse=True)
    bad = [x for x in found if x[0] > LIMIT and not x[4]]
    for n, path, line, name, explained in found:
        if n > LIMIT:
            note = "  (says why)" if explained else ""
            print(f"{n:5} {path}:{line} {name}{note}")
    print(f"{len(bad)} function(s) over {LIMIT} lines without a `long:` comment")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
