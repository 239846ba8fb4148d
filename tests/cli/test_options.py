"""The options the commands share: counts, modality lists, --resume, and how commands and groups are added."""

from __future__ import annotations

import argparse

import pytest

from gramx.cli.app import build_parser
from gramx.cli.options import Commands, count, model_options, modalities, resume_option


def test_a_count_is_a_whole_number_of_at_least_its_minimum():
    assert count()("3") == 3 and count(0)("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 1, got 0"):
        count()("0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number, got '2.5'"):
        count(0)("2.5")


@pytest.mark.parametrize("args", [
    ["search", "M", "--index", "I", "--query", "q", "-k", "0"],
    ["search", "M", "--index", "I", "--query", "q", "-k", "-2"],
    ["eval", "M", "m.jsonl", "--batch-size", "0"],
    ["embed", "M", "m.jsonl", "-o", "out", "--batch-size", "-1"],
    ["eval", "M", "m.jsonl", "--workers", "-1"],
    ["shards", "m.jsonl", "-o", "out", "--shard-size", "0"],
    ["eval", "M", "m.jsonl", "--batch-size", "1.5"],
])
def test_count_options_take_whole_numbers_in_range(capsys, args):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least" in err or "expected a whole number" in err


def test_zero_workers_is_a_count_too():
    assert build_parser().parse_args(["eval", "M", "m.jsonl", "--workers", "0"]).workers == 0


def parser_with_commands() -> tuple[argparse.ArgumentParser, Commands]:
    parser = argparse.ArgumentParser(prog="gramx")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true")
    commands = Commands(parser.add_subparsers(dest="command", required=True), common)
    return parser, commands


def test_commands_and_groups_run_their_function_and_take_the_common_options(capsys):
    parser, commands = parser_with_commands()
    run = commands.add("run", "run a thing", lambda args: 7)
    run.add_argument("what")
    group = commands.group("tools", "tools of the trade")
    group.add("check", "check a thing", lambda args: 8)
    assert commands.names == ["run", "tools"] and group.names == ["check"]
    args = parser.parse_args(["run", "x", "--debug"])
    assert args.func(args) == 7 and args.what == "x" and args.debug
    args = parser.parse_args(["tools", "check"])
    assert args.func(args) == 8 and args.tools_command == "check" and not args.debug
    assert "Run a thing." in run.format_help()  # the help line, as the command's description
    with pytest.raises(SystemExit):
        parser.parse_args(["tools"])  # a group needs one of its commands
    assert "COMMAND" in capsys.readouterr().err


def test_modalities_resume_and_model_options():
    parser = argparse.ArgumentParser()
    resume_option(parser)
    model_options(parser)
    args = parser.parse_args(["M", "m.jsonl", "--modalities", "text, audio"])
    assert modalities(args) == ["text", "audio"] and args.resume is None
    assert (args.batch_size, args.workers, args.on_error, args.device) == (64, 0, "raise", None)
    assert modalities(parser.parse_args(["M", "m.jsonl"])) is None
    assert parser.parse_args(["M", "m.jsonl", "--resume"]).resume == "required"
    assert parser.parse_args(["M", "m.jsonl", "--resume", "latest"]).resume == "latest"
    searching = argparse.ArgumentParser()
    model_options(searching, loading=False)
    assert vars(searching.parse_args(["M"])) == {"model": "M", "device": None}
