#!/usr/bin/env python3
"""Fails when the workspace's rust-version is lower than what a locked dependency
declares it needs (then the claim would be false). Reads `cargo metadata --locked`."""
import json
import subprocess
import sys


def ver(s):
    parts = [int(p) for p in s.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members and p.get("rust_version")}
if len(ours) != 1:
    sys.exit(f"workspace members disagree on rust-version: {sorted(ours)}")
claimed = ours.pop()
needed = max(
    ((p["rust_version"], p["name"]) for p in meta["packages"] if p["id"] not in members and p.get("rust_version")),
    key=lambda x: ver(x[0]),
)
if ver(claimed) < ver(needed[0]):
    sys.exit(f"rust-version {claimed} is false: {needed[1]} needs {needed[0]}")
print(f"rust-version {claimed} (highest dependency need: {needed[1]} {needed[0]})")
