#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write an upstream-ready git format-patch series.

wrapper/series lists the commits of the series in review order. Each block
starts with a "Subject:" line, then "Files:" (new files or directories of
this repository) and "Patches:" (files in patches/, squashed into the
commit), then a blank line and the commit body. Every new file and every
patch must be used exactly once, so nothing is left out of the series.

The commits are made in a scratch git worktree of the work tree, on top of
its pristine base (tag qemu-zc-base), and exported with a cover letter
taken from wrapper/cover-letter.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

IDENT = ["-c", "user.name=qemu-zc developers",
         "-c", "user.email=qemu-zc-devel@example.org",
         "-c", "commit.gpgsign=false"]
SOB = "Signed-off-by: qemu-zc developers <qemu-zc-devel@example.org>"
OVERLAY_DIRS = ["hw", "include", "docs", "tests", "system", "util"]


def die(msg):
    sys.exit(f"export-series: error: {msg}")


def git(cwd, *args, **kw):
    return subprocess.run(["git", *IDENT, *args], cwd=cwd, check=True,
                          text=True, **kw)


def parse_series(path):
    blocks = []
    cur = None
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith("#") and cur is None:
                continue
            if line.startswith("Subject: "):
                cur = {"subject": line[9:].strip(), "files": [],
                       "patches": [], "body": [], "in_body": False}
                blocks.append(cur)
            elif cur is None:
                if line.strip():
                    die(f"{path}: text before the first Subject: line")
            elif not cur["in_body"] and line.startswith("Files:"):
                cur["files"] += line[6:].split()
            elif not cur["in_body"] and line.startswith("Patches:"):
                cur["patches"] += line[8:].split()
            elif not cur["in_body"] and not line.strip():
                cur["in_body"] = True
            elif cur["in_body"]:
                cur["body"].append(line)
            else:
                die(f"{path}: unexpected header line '{line}'")
    return blocks


def overlay_files(top):
    out = subprocess.run(["git", "ls-files", "--cached", "--others",
                          "--exclude-standard", "--", *OVERLAY_DIRS],
                         cwd=top, check=True, text=True,
                         capture_output=True).stdout.split()
    return sorted(f for f in set(out) if os.path.isfile(os.path.join(top, f)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", required=True)
    ap.add_argument("--tree", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    blocks = parse_series(os.path.join(a.top, "wrapper", "series"))
    new_files = overlay_files(a.top)
    patches = sorted(p for p in os.listdir(os.path.join(a.top, "patches"))
                     if p.endswith(".patch"))

    used_files = {}
    used_patches = {}
    for b in blocks:
        files = []
        for entry in b["files"]:
            hit = [f for f in new_files
                   if f == entry or f.startswith(entry.rstrip("/") + "/")]
            if not hit:
                die(f"'{entry}' (in '{b['subject']}') matches no new file")
            files += hit
        b["paths"] = files
        for f in files:
            if f in used_files:
                die(f"{f} is in both '{used_files[f]}' and '{b['subject']}'")
            used_files[f] = b["subject"]
        for p in b["patches"]:
            if p not in patches:
                die(f"patches/{p} (in '{b['subject']}') does not exist")
            if p in used_patches:
                die(f"patches/{p} is used twice")
            used_patches[p] = b["subject"]
    missing = [f for f in new_files if f not in used_files]
    missing += [f"patches/{p}" for p in patches if p not in used_patches]
    if missing:
        die("not in wrapper/series: " + " ".join(missing))

    scratch = tempfile.mkdtemp(prefix="qemu-zc-export-")
    wt = os.path.join(scratch, "tree")
    try:
        git(a.tree, "worktree", "add", "-q", "--detach", wt, "qemu-zc-base")
        for b in blocks:
            for p in b["patches"]:
                r = subprocess.run(["git", "apply", "--index",
                                    os.path.join(a.top, "patches", p)],
                                   cwd=wt, text=True, capture_output=True)
                if r.returncode:
                    die(f"patches/{p} does not apply in series order:\n"
                        + r.stderr)
            for f in b["paths"]:
                dst = os.path.join(wt, f)
                if os.path.exists(dst):
                    die(f"{f} already exists upstream")
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(os.path.join(a.top, f), dst)
            git(wt, "add", "--", *b["paths"]) if b["paths"] else None
            body = "\n".join(b["body"]).strip("\n")
            msg = f"{b['subject']}\n\n{body}\n"
            if SOB not in msg:
                msg += f"\n{SOB}\n"
            git(wt, "commit", "-q", "-F", "-", input=msg)
        os.makedirs(a.out, exist_ok=True)
        for old in os.listdir(a.out):
            if old.endswith(".patch"):
                os.remove(os.path.join(a.out, old))
        git(wt, "format-patch", "-q", "--cover-letter", "-o", a.out,
            "qemu-zc-base..HEAD")
        cover_src = os.path.join(a.top, "wrapper", "cover-letter")
        cover = os.path.join(a.out, "0000-cover-letter.patch")
        with open(cover_src) as f:
            subject, _, blurb = f.read().partition("\n\n")
        with open(cover) as f:
            text = f.read()
        text = text.replace("*** SUBJECT HERE ***", subject.strip())
        text = text.replace("*** BLURB HERE ***", blurb.strip())
        with open(cover, "w") as f:
            f.write(text)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", wt],
                       cwd=a.tree, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    n = len([p for p in os.listdir(a.out) if p.endswith(".patch")])
    print(f"export-series: wrote {n} files (cover letter + {len(blocks)} "
          f"patches) to {a.out}")


if __name__ == "__main__":
    main()
