"""The image's Dockerfile installs the locked dependencies and every workspace member."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/container/Dockerfile"


def instructions() -> list[tuple[str, list[str]]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), shlex.split(rest)))
    return out


def test_bases_are_pinned_and_every_copied_path_exists() -> None:
    for op, args in instructions():
        if op == "FROM":
            image = args[0]
            assert ":" in image and not image.endswith(":latest"), image
        if op == "COPY" and not any(a.startswith("--from") for a in args):
            for src in args[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such path"


def test_every_workspace_member_and_the_lock_are_installed() -> None:
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
        "members"
    ]
    runs = " ".join(" ".join(args) for op, args in instructions() if op == "RUN")
    copied = {args[0] for op, args in instructions() if op == "COPY" and len(args) == 2}
    assert "--require-hashes -r requirements.lock" in runs
    for member in members:
        assert member in copied, f"{member} is not copied into the image"
        assert f"./{member}" in runs, f"{member} is not installed in the image"
    user = [args for op, args in instructions() if op == "USER"]
    assert user and user[-1] != ["0"], "the image's default user is not root"
