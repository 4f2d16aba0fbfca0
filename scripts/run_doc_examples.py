#!/usr/bin/env python3
"""Runs the CLI examples of README.md and docs/cli.md against a built `ropex` and checks them.

    scripts/run_doc_examples.py --ropex build/bin/ropex [README.md docs/cli.md ...]

Which examples run (the convention the docs follow):
- Fenced blocks opened with ```console, ```sh, ```shell, ```bash or a bare ``` are read; others
  (cpp, cmake, python, json) never run.
- In a block with `$ ` prompts, each `$ ` line is a command (a trailing `\\` continues it) and the
  lines after it, up to the next command or `#` comment line, are its output as the doc shows it.
  In a ```sh / ```shell / ```bash block without prompts every line that is not a `#` comment is a
  command, and no output is shown; a ```console or bare block without prompts is output only.
- A block runs only if every command in it starts with `ropex `; blocks with any other command
  (installing, building, fetching) are steps for the reader, not examples, and are left alone.
- Each command must exit 0. Where output is shown, stdout must match it: `...` stands for any text
  (several lines too), and whitespace only has to be present where the doc has it on one line.
- Commands run through bash, in order, one scratch directory per document that links the
  repository's top-level entries (so `tests/fixtures/...` and `.models/...` resolve and files an
  example writes stay out of the tree), with the given binary first on PATH as `ropex`.
- A block naming a file under `.models/` that is absent (the fetch scripts put models and
  tokenizers there) is skipped with a message naming the script that fetches it.

A missing document is reported and skipped. Exit status: 1 if any example failed, else 77 (what
ctest's SKIP_RETURN_CODE takes) if a block was skipped for absent data, else 0.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

SKIP = 77
FETCHED = [(".models/tokenizers/", "scripts/fetch_tokenizers.sh"), (".models/", "scripts/fetch_models.sh")]


def blocks(text):
    """(first line number, language, lines) of each fenced block whose language may hold shell examples."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start, body = m.group(1), m.group(2).lower(), i + 1, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if lang in ("", "sh", "shell", "console", "bash"):
            out.append((start, lang, body))  # the fence line, 1-based
    return out


def examples(lang, body):
    """[(command, expected output lines)] of one block."""
    prompted = any(line.startswith("$ ") for line in body)
    if not prompted and lang in ("", "console"):
        return []  # output shown without its command
    cmds, open_output, i = [], False, 0
    while i < len(body):
        line, i = body[i], i + 1
        comment = line.lstrip().startswith("#")
        if (line.startswith("$ ") if prompted else line.strip() and not comment):
            cmd = line[2:] if prompted else line
            while cmd.rstrip().endswith("\\") and i < len(body):  # continued on the next line
                cmd, i = cmd.rstrip()[:-1] + " " + body[i].strip(), i + 1
            cmds.append((cmd.strip(), []))
            open_output = prompted
        elif comment:
            open_output = False  # a comment ends the output shown above it
        elif open_output:
            cmds[-1][1].append(line)
    return cmds


def pattern(expected):
    """A regex for the doc's output: `...` is any text, whitespace as the doc has it (a line break
    may be any whitespace or none)."""
    text = "\n".join(expected).strip()
    parts = []
    for piece in text.split("..."):
        tokens = re.split(r"(\s+)", piece.strip())  # `...` takes the whitespace around it
        parts.append("".join((r"\s*" if "\n" in t else r"\s+") if t.isspace() else re.escape(t) for t in tokens if t))
    return re.compile(r"\s*" + ".*?".join(parts) + r"\s*", re.S)


def absent_data(cmd, root):
    """The first path under a fetched folder that the command names and that does not exist."""
    try:
        words = shlex.split(cmd, comments=True)
    except ValueError:
        return None
    for w in words:
        w = w.split("=", 1)[1] if w.startswith("--") and "=" in w else w
        for prefix, script in FETCHED:
            if w.startswith(prefix) and not os.path.exists(os.path.join(root, w)):
                return w, script
    return None


def run_doc(path, root, bindir, timeout):
    """Runs one document's examples; returns (passed, failed, skipped) counts."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    passed = failed = skipped = 0
    with tempfile.TemporaryDirectory(prefix="ropex-doc-") as work:
        for entry in os.listdir(root):
            os.symlink(os.path.join(root, entry), os.path.join(work, entry))
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
        for line_no, lang, body in blocks(text):
            cmds = examples(lang, body)
            if not cmds or not all(re.match(r"ropex(\s|$)", c) for c, _ in cmds):
                continue
            where = f"{os.path.relpath(path, root)}:{line_no}"
            missing = next((m for m in (absent_data(c, root) for c, _ in cmds) if m), None)
            if missing:
                print(f"skipped {where}: {missing[0]} absent ({missing[1]} fetches it)")
                skipped += 1
                continue
            for cmd, expected in cmds:
                try:
                    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=work, env=env,
                                       capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired:
                    print(f"FAILED {where}: `{cmd}` ran past {timeout} s")
                    failed += 1
                    break
                problem = None
                if r.returncode != 0:
                    problem = f"exit {r.returncode}"
                elif any(line.strip() for line in expected) and not pattern(expected).fullmatch(r.stdout):
                    problem = "output differs from the doc's"
                if problem:
                    print(f"FAILED {where}: `{cmd}`: {problem}")
                    if expected:
                        print("  doc shows:\n    " + "\n    ".join(expected))
                    print("  stdout:\n    " + "\n    ".join(r.stdout.rstrip("\n").split("\n")))
                    if r.stderr.strip():
                        print("  stderr:\n    " + "\n    ".join(r.stderr.rstrip("\n").split("\n")))
                    failed += 1
                    break  # later commands of the block may need this one's output
                print(f"ok {where}: {cmd}")
                passed += 1
    return passed, failed, skipped


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ropex", required=True, help="the built CLI (build/bin/ropex)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds a command may take")
    ap.add_argument("docs", nargs="*", default=["README.md", "docs/cli.md"], help="relative to the repository")
    args = ap.parse_args()
    ropex = os.path.abspath(args.ropex)
    if not os.access(ropex, os.X_OK):
        print(f"run_doc_examples: --ropex {args.ropex}: not an executable file")
        return 2
    totals = [0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="ropex-bin-") as bindir:
        os.symlink(ropex, os.path.join(bindir, "ropex"))
        for doc in args.docs:
            path = os.path.join(root, doc)
            if not os.path.exists(path):
                print(f"skipped {doc}: no such document")
                continue
            for i, n in enumerate(run_doc(path, root, bindir, args.timeout)):
                totals[i] += n
    passed, failed, skipped = totals
    print(f"run_doc_examples: {passed} commands passed, {failed} failed, {skipped} blocks skipped for absent data")
    return 1 if failed else SKIP if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
