#!/usr/bin/env python3
"""Check that the dependency locks in requirements/ are up to date with their .in files (run by `make lint`).

Each lock (serve.txt, train.txt, dev.txt) records in its header the SHA-256 of every input it was compiled from: its
.in file and the files that .in pulls in with -c/-r (train.in and dev.in are constrained by serve.txt and train.txt).
`make lock` compiles the locks with pip-compile and then runs `scripts/check_locks.py --update` to write those
records. A check fails when:

* an input changed since its lock was compiled (a .in edited without `make lock`, or serve.txt recompiled without
  recompiling train.txt and dev.txt);
* a package is pinned to different versions in two locks (they must install together into one environment);
* a pin has no --hash (every lock is installed with `pip install --require-hashes`).

Standard library only, offline, fast: it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

REQ_DIR = Path(__file__).resolve().parent.parent / "requirements"
# Compile order: a lock may only depend on locks before it.
LOCKS = ("serve", "train", "dev")
RECORD_TITLE = "# Inputs (SHA-256; `make lint` checks them, `make lock` rewrites them):"
RECORD_LINE = re.compile(r"^#\s+sha256:([0-9a-f]{64})\s+(\S+)\s*$")
INCLUDE = re.compile(r"^\s*(?:-c|-r|--constraint|--requirement)(?:\s+|=)(\S+)")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs(in_file: Path, seen: set[Path] | None = None) -> list[Path]:
    """The .in file and every file it includes with -c/-r, recursively, in order."""
    seen = set() if seen is None else seen
    if in_file in seen:
        return []
    seen.add(in_file)
    found = [in_file]
    for line in in_file.read_text().splitlines():
        m = INCLUDE.match(line)
        if m:
            found += inputs((in_file.parent / m.group(1)).resolve(), seen)
    return found


def expected_records(name: str) -> dict[str, str]:
    return {p.relative_to(REQ_DIR).as_posix(): sha256(p) for p in inputs((REQ_DIR / f"{name}.in").resolve())}


def recorded(lock_text: str) -> dict[str, str]:
    records: dict[str, str] = {}
    in_block = False
    for line in lock_text.splitlines():
        if line == RECORD_TITLE:
            in_block = True
            continue
        if in_block:
            m = RECORD_LINE.match(line)
            if not m:
                break
            records[m.group(2)] = m.group(1)
    return records


def strip_records(lock_text: str) -> list[str]:
    out: list[str] = []
    skipping = False
    for line in lock_text.splitlines():
        if line == RECORD_TITLE:
            skipping = True
            continue
        if skipping:
            if RECORD_LINE.match(line):
                continue
            skipping = False
            if line == "#":
                continue
        out.append(line)
    return out


def update(name: str) -> None:
    lock = REQ_DIR / f"{name}.txt"
    lines = strip_records(lock.read_text())
    # After pip-compile's header comment block (the first line that is not a comment ends it).
    at = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    block = [RECORD_TITLE] + [f"#    sha256:{h}  {p}" for p, h in expected_records(name).items()] + ["#"]
    lock.write_text("\n".join(lines[:at] + block + lines[at:]) + "\n")


def pins(lock_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lock_text.splitlines():
        m = PIN.match(line)
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found


def unhashed(lock_text: str) -> list[str]:
    """Pinned requirements without a --hash option (pip-compile puts them on continuation lines)."""
    bad = []
    for req in re.sub(r"\\\n", " ", lock_text).splitlines():
        m = PIN.match(req)
        if m and "--hash=sha256:" not in req:
            bad.append(m.group(1))
    return bad


def check() -> list[str]:
    problems: list[str] = []
    all_pins: dict[str, tuple[str, str]] = {}
    for name in LOCKS:
        lock = REQ_DIR / f"{name}.txt"
        if not lock.exists():
            problems.append(f"{lock.name} is missing: run `make lock`")
            continue
        text = lock.read_text()
        have, want = recorded(text), expected_records(name)
        if not have:
            problems.append(f"{lock.name} records no input hashes: run `make lock`")
        else:
            for path in sorted(set(have) | set(want)):
                if have.get(path) != want.get(path):
                    what = "is new" if path not in have else "is gone" if path not in want else "changed"
                    problems.append(f"{lock.name} is stale: {path} {what} since it was compiled; run `make lock`")
        for pkg in unhashed(text):
            problems.append(f"{lock.name}: {pkg} is pinned without --hash")
        for pkg, version in pins(text).items():
            other = all_pins.setdefault(pkg, (version, lock.name))
            if other[0] != version:
                problems.append(f"{pkg} is {other[0]} in {other[1]} but {version} in {lock.name}: run `make lock`")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="record the current input hashes in every lock")
    args = parser.parse_args()
    if args.update:
        for name in LOCKS:
            update(name)
    problems = check()
    for problem in problems:
        print(f"check_locks: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_locks: {', '.join(f'{n}.txt' for n in LOCKS)} up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
