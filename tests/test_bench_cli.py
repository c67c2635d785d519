"""Every benchmark parses its own options and refuses a flag it does not know, before it
starts anything (a misspelt ``--vfs`` used to run the default silently)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dispatch(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("bench.__main__").main


def names() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules([str(ROOT / "bench")]) if not m.name.startswith("_")
    )


def test_the_benchmarks_are_found() -> None:
    assert {"scheduler_place", "offload_parse", "offload_audit", "hostd_discovery"} <= set(names())


@pytest.mark.parametrize("name", names())
def test_an_unknown_flag_is_an_error_naming_it(
    name: str, dispatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        dispatch([name, "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"./stack bench {name}: error: unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit) as exit_:
        dispatch([name, "--help"])
    assert exit_.value.code == 0
    assert f"usage: ./stack bench {name}" in capsys.readouterr().out


def test_options_go_to_one_named_benchmark(
    dispatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dispatch(["--vfs=10"]) == 2
    assert "options --vfs=10 belong to one benchmark" in capsys.readouterr().err
    assert dispatch(["no_such_bench"]) == 2
    assert "unknown benchmark(s) ['no_such_bench']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        dispatch(["scheduler_place", "--vfs=many"])
    assert exit_.value.code == 2
    assert "argument --vfs: invalid int value: 'many'" in capsys.readouterr().err
