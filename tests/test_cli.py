"""The command line: `mmpc` on catalogs (the report a person reads, errors without tracebacks), and the
entry layer every front end shares (typed dataclass arguments, one parser, one error mapping)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest
from servers import REPO, user_env

from mmpc import arguments as a
from mmpc import cli
from mmpc.cli import main
from mmpc.demo_catalog import write_demo_catalog

PYTHON = sys.executable


def test_demo_catalog_then_check(tmp_path, capsys):
    assert main(["demo-catalog", str(tmp_path / "cat"), "--size", "300", "--seed", "3"]) == 0
    assert main(["check", str(tmp_path / "cat"), "--manifest", str(tmp_path / "manifest")]) == 0
    out = capsys.readouterr().out
    assert "300 products, 300 with an image" in out and "fingerprint " in out
    assert (tmp_path / "manifest" / "split_manifest.csv").is_file()


def test_check_reports_a_broken_catalog_without_a_traceback(tmp_path, capsys):
    cat = write_demo_catalog(tmp_path / "cat", size=100, seed=1)
    y = cat / "Y_train_CVw08PX.csv"
    lines = y.read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",999"
    y.write_text("\n".join(lines) + "\n")
    assert main(["check", str(cat)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "999" in err and "Traceback" not in err


# -- the entry layer: typed arguments, one parser, one error mapping ---------------------------------
def _flows_main(argv: list[str]) -> int:
    from flows.__main__ import main as flows_main

    return flows_main(argv)


@pytest.mark.parametrize(
    ("front", "command"),
    [*((main, c) for c in cli.COMMANDS), *((_flows_main, c) for c in ("retrain", "serve"))],
)
def test_every_command_has_a_help(front, command, capsys):
    with pytest.raises(SystemExit) as done:
        front([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and f" {command} " in out


@dataclass(kw_only=True)
class _Example(a.TrackingArgs):
    name: str = a.arg("a positional", positional=True)
    count: int = a.arg("a required int")
    rate: float = a.arg("a float", 0.5)
    mode: Literal["fast", "slow"] = a.arg("a choice", "fast")
    flag: bool = a.arg("a switch", False)
    tags: list[str] | None = field(default=None, metadata={"help": "repeatable", "append": True})
    refs: list[str] | None = field(default=None, metadata={"help": "several", "split": True})
    version: str | None = a.arg("one of", None, one_of="ref")
    alias: str | None = a.arg("or the other", None, one_of="ref")


def _parse(argv: list[str]) -> _Example:
    parser = a.Parser(prog="example")
    a.add_arguments(parser, _Example)
    return a.from_namespace(_Example, parser.parse_args(argv))


def test_dataclass_fields_become_typed_options(monkeypatch):
    monkeypatch.setenv("MMPC_WORKDIR", "/somewhere")  # a default computed when the parser is built
    args = _parse(["x", "--count", "3", "--alias", "champion"])
    assert (args.name, args.count, args.rate, args.mode, args.flag) == ("x", 3, 0.5, "fast", False)
    assert (args.tags, args.refs, args.version, args.alias) == (None, None, None, "champion")
    assert args.workdir == "/somewhere" and args.tracking_uri is None
    flags = ["--rate", "2", "--mode", "slow", "--flag", "--tags", "a", "--tags", "b c"]
    args = _parse(["y", "--count=1", *flags, "--refs", "p=1 q=@c", "r=2", "--version", "4"])
    assert (args.rate, args.mode, args.flag, args.tags) == (2.0, "slow", True, ["a", "b c"])
    assert args.refs == ["p=1", "q=@c", "r=2"] and args.version == "4"
    assert _parse(["z", "--count", "1", "--refs", "", "--version", "1"]).refs is None  # MLproject's ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--alias", "a"], "the following arguments are required: --count"),
        (["x", "--count", "two", "--alias", "a"], "argument --count: invalid int value: 'two'"),
        (["x", "--count", "1", "--mode", "quick", "--alias", "a"], "invalid choice: 'quick'"),
        (["x", "--count", "1"], "one of the arguments --version --alias is required"),
        (["x", "--count", "1", "--version", "1", "--alias", "a"], "not allowed with argument"),
        (["x", "--count", "1", "--alias", "a", "--refs", "'open"], "No closing quotation"),
    ],
)
def test_bad_arguments_are_one_argument_error(argv, message):
    with pytest.raises(a.ArgumentError, match=message):
        _parse(argv)


def test_groups_are_declared_once_and_listed_under_their_title(capsys):
    groups = {"catalog": "--catalog CATALOG", "recipe": "--set KEY=VALUE", "tracking": "--tracking-uri"}
    for command in ("check", "train", "stack", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for group, option in groups.items():
            if command == "check" and group == "catalog":  # `mmpc check CATALOG`: a positional
                assert "--catalog" not in out and "\n  catalog " in out
                continue
            assert f"\n{group}:\n" in out and option in out, (command, group)


def test_recipe_group_overrides_and_composition():
    args = a.TrainArgs(
        model="flaubert",
        catalog="c",
        recipe="demo+fast",
        set=["seed=3", "models.tfidf.C=2.0"],
        overrides="a.b=1 c='x y'",
        device="cpu",
        drop_invalid=True,
        epochs=2,
    )
    assert args.recipe_overrides() == {
        "a.b": 1,
        "c": "x y",
        "seed": 3,
        "models.tfidf.C": 2.0,
        "catalog.drop_invalid": True,
        "device": "cpu",
        "models.flaubert.train.epochs": 2,
    }
    args.set, args.overrides = ["seed=3"], ""
    assert args.load_recipe().name == "demo+fast" and args.load_recipe().seed == 3
    with pytest.raises(a.ArgumentError, match="whole number"):
        a.TrainArgs(model="flaubert", catalog="c", epochs=1.5).recipe_overrides()


def test_tracking_uri_holds_for_the_command_only(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with a.TrackingArgs(tracking_uri="http://127.0.0.1:5005").tracking_env():
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5005"
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_usage_errors_are_one_line_and_exit_2(capsys):
    assert main(["train", "tfidf"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: mmpc train: the following arguments are required: --catalog (see mmpc train --help)"
    ]
    assert main(["evaluate", "--model", "m", "--catalog", "c", "--version", "1", "--split", "dev"]) == 2
    assert "invalid choice: 'dev'" in capsys.readouterr().err


BAD_KEY = "models.seresnext.train.epoch=1"


def _one_error_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _shell(argv: list[str] | str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        shell=isinstance(argv, str),
        cwd=REPO,
        env=user_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_recipe_key_is_exit_2_and_one_line_for_mmpc_train(tmp_path, capsys):
    catalog = write_demo_catalog(tmp_path / "cat", size=60, seed=1)
    argv = [
        "train",
        "seresnext",
        "--catalog",
        str(catalog),
        "--workdir",
        str(tmp_path / "w"),
        "--set",
        BAD_KEY,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: models.seresnext.train: unknown key(s) ['epoch']")


def test_a_bad_recipe_key_is_exit_2_and_one_line_for_the_flows(tmp_path):
    proc = _shell([PYTHON, "-m", "flows", "retrain", "--catalog", str(tmp_path), "--set", BAD_KEY])
    _one_error_line(proc, 2, "models.seresnext.train", "'epoch'")


def test_a_bad_recipe_key_is_exit_2_and_one_line_for_an_mlproject_entry_point(tmp_path):
    from mlflow.projects import _project_spec

    entry = _project_spec.load_project(str(REPO)).get_entry_point("seresnext")
    params = {"catalog": str(tmp_path), "workdir": str(tmp_path / "w"), "overrides": BAD_KEY}
    command = entry.compute_command(params, str(tmp_path))
    assert command.startswith("python -m mmpc.cli train seresnext ")
    _one_error_line(_shell(command), 2, "models.seresnext.train", "'epoch'")


# A closed port on loopback: refused at once; no retries, so the failure comes in seconds.
CLOSED = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def test_an_unreachable_tracking_server_is_exit_3_and_one_line_for_mmpc(tmp_path):
    proc = _shell([PYTHON, "-m", "mmpc.cli", "promote", "1", "--workdir", str(tmp_path)], **CLOSED)
    _one_error_line(proc, 3, "http://127.0.0.1:9", "unreachable")
    flag = {k: v for k, v in CLOSED.items() if k != "MLFLOW_TRACKING_URI"}
    argv = [
        PYTHON,
        "-m",
        "mmpc.cli",
        "rollback",
        "--workdir",
        str(tmp_path),
        "--tracking-uri",
        CLOSED["MLFLOW_TRACKING_URI"],
    ]
    _one_error_line(_shell(argv, **flag), 3, "http://127.0.0.1:9", "unreachable")


def test_an_unreachable_tracking_server_is_exit_3_and_one_line_for_the_flows(tmp_path):
    proc = _shell(
        [PYTHON, "-m", "flows", "retrain", "--catalog", str(tmp_path), "--workdir", str(tmp_path)], **CLOSED
    )
    _one_error_line(proc, 3, "http://127.0.0.1:9", "unreachable")
