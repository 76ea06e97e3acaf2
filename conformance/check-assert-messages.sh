#!/usr/bin/env bash
# Lists every assertion in conformance/src that carries no message, and exits 1 if there is one.
#
# A failing conformance case is read by someone who did not write it, often on another
# backend, so every `assert!`, `assert_eq!`, `assert_ne!` (and their `debug_` forms) must say
# which contract broke: `assert!(cond, "contract: ...")`, `assert_eq!(a, b, "contract: ...")`.
# Everywhere in src a message is required; in src/cases and src/kit it must also open with a
# string literal naming the contract in lowercase words followed by a colon.
# Doc comments (`//!`, `///`) and other comments are skipped, as are string literals.
#
# Usage: conformance/check-assert-messages.sh [DIR...]   (default: the src folder next to it)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$#" -eq 0 ]; then
    set -- "$here/src"
fi

exec python3 - "$@" <<'PY'
import os
import re
import sys

MACRO = re.compile(r"\b(debug_)?assert(_eq|_ne)?!\s*[(\[{]")
CLOSE = {"(": ")", "[": "]", "{": "}"}


def blank_comments_and_strings(src):
    """Returns src with comments and the insides of string/char literals replaced by spaces
    (newlines kept, so offsets and line numbers are unchanged). String literals are kept as
    a placeholder `"s"`-shaped run so that a message argument is still visible as non-empty."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif re.match(r'b?r#*"', src[i:i + 260]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            blank(i + m.end(), j - len(end))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'":
            # char literal ('x', '\n', '\u{1F600}') or a lifetime ('a)
            if i + 1 < n and src[i + 1] == "\\":
                j = src.find("'", i + 2)
                blank(i + 1, j)
                i = j + 1
            elif i + 2 < n and src[i + 2] == "'":
                blank(i + 1, i + 2)
                i += 3
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def top_level_args(text, start, opener):
    """Splits the macro body starting after `opener` at top-level commas. Returns (args, end)."""
    stack = [CLOSE[opener]]
    args, cur, i = [], [], start
    starts = [start]
    while i < len(text) and stack:
        c = text[i]
        if c in CLOSE:
            stack.append(CLOSE[c])
        elif c in ")]}":
            stack.pop()
            if not stack:
                break
        elif c == "|" and len(stack) == 1 and "".join(cur).strip() in ("", "move"):
            # a closure's parameter list `|a, b|` at the start of an argument
            j = text.find("|", i + 1)
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        elif c == "," and len(stack) == 1:
            args.append("".join(cur))
            cur = []
            i += 1
            starts.append(i)
            continue
        elif text.startswith("::<", i):
            # turbofish: commas inside `::<A, B>` are not argument separators
            depth, j = 0, i + 2
            while j < len(text):
                if text[j] == "<":
                    depth += 1
                elif text[j] == ">":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        cur.append(c)
        i += 1
    args.append("".join(cur))
    return [(s, a) for s, a in zip(starts, args) if a.strip()], i


# In the cases and the kit, a message must open with the contract it checks, in plain words
# followed by a colon: "incremental delivery: ...", "cancellation: ...".
CONTRACT = re.compile(r'(format!\s*\(\s*)?"[a-z][A-Za-z0-9 /_.,\'`()+-]*:')


def needs_contract(path):
    parts = os.path.normpath(path).split(os.sep)
    return "cases" in parts or "kit" in parts


def check(path):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    text = blank_comments_and_strings(src)
    found = []
    for m in MACRO.finditer(text):
        if text[:m.start()].endswith("$"):  # a macro_rules metavariable, not an assertion
            continue
        args, _ = top_level_args(text, m.end(), text[m.end() - 1])
        needed = 2 if m.group(2) is None else 3
        line = text.count("\n", 0, m.start()) + 1
        snippet = src.splitlines()[line - 1].strip()
        if len(args) < needed:
            found.append((line, "assertion without a message", snippet))
        elif needs_contract(path):
            start = args[needed - 1][0]
            message = src[start:start + 200].lstrip()
            if not CONTRACT.match(message):
                first = message.splitlines()[0] if message else ""
                found.append((line, "message does not open with its contract (`contract: ...`)", first))
    return found


def rust_files(roots):
    for root in roots:
        if os.path.isfile(root):
            yield root
            continue
        for d, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                if name.endswith(".rs"):
                    yield os.path.join(d, name)


total, files = 0, 0
for path in rust_files(sys.argv[1:]):
    files += 1
    for line, problem, snippet in check(path):
        total += 1
        print(f"{os.path.relpath(path)}:{line}: {problem}: {snippet}")

if total:
    print(f"{total} assertion(s) without a proper message in {files} file(s); "
          "give each a message whose first words name the broken contract", file=sys.stderr)
    sys.exit(1)
print(f"ok: every assertion in {files} file(s) under {', '.join(os.path.relpath(r) for r in sys.argv[1:])} carries a message")
PY
