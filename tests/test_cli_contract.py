"""The CLI is a contract: each pipeline command's flags, spellings, defaults, help and errors as recorded.

``tests/data/cli_contract.json`` holds what the six pipeline commands (sync, export-table, export-orders,
``pipeline`` (snapshots), load-csv, transform) looked like when their parsers were written by hand: each
argument (options, dest, default, const, nargs, choices, required, metavar, help), the mutually exclusive
groups, the ``--help`` text, the namespace parsed from the fewest arguments, and what a bad value of each
typed or restricted option says (and its exit code). Their parsers are now built from the pipelines'
declared parameters; this test holds them to that record. Regenerate the record only for a change of the
CLI you mean to make: ``python -m tests.test_cli_contract > tests/data/cli_contract.json``.
"""
import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
from pathlib import Path

import pytest

from gigsterpg import cli, pipelines
from gigsterpg.pipelines.contract import INTEGER, Param

RECORD = Path(__file__).parent / "data" / "cli_contract.json"
# The fewest arguments each command parses with (its required ones).
MINIMAL = {"sync": [], "export-table": ["--table", "t"], "export-orders": [], "pipeline": ["run"],
           "load-csv": ["a.csv"], "transform": ["q.sql", "--into", "x"]}
BAD_VALUES = ("x", "-1", "0", "1e99", "")
COMMANDS = "(the list of commands)"  # the record's key of the top level's --help


def _subparsers(parser):
    return next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices


def _value(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_value(each) for each in value]
    return f"{type(value).__name__}({value})"


def _action(action) -> dict:
    return {"options": list(action.option_strings), "dest": action.dest, "kind": type(action).__name__,
            "default": _value(action.default), "const": _value(action.const), "nargs": action.nargs,
            "choices": _value(list(action.choices)) if action.choices else None, "required": action.required,
            "metavar": _value(action.metavar), "help": action.help,
            "type": getattr(action.type, "__name__", None) if action.type not in (None, str) else None}


def _parse(argv):
    """What ``cli.build_parser().parse_args(argv)`` gives: the namespace, or the error text and exit code."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parsed = vars(cli.build_parser().parse_args(argv))
        except SystemExit as exit_:
            return {"exit": exit_.code, "stderr": err.getvalue().splitlines()[-1:]}
    return {"exit": None, "namespace": {key: _value(value) for key, value in sorted(parsed.items())}}


def describe() -> dict:
    """Today's six pipeline commands, as the record holds them."""
    commands = _subparsers(cli.build_parser())
    described = {}
    for name, minimal in MINIMAL.items():
        parser = commands[name]
        actions = [_action(action) for action in parser._actions]
        groups = [sorted(action.dest + ":" + "/".join(action.option_strings) for action in group._group_actions)
                  for group in parser._mutually_exclusive_groups]
        help_text = io.StringIO()
        parser.print_help(help_text)
        bad = {}
        for action in parser._actions:
            if not action.option_strings or not (action.type or action.choices) or action.nargs == 0:
                continue
            flag = action.option_strings[-1]
            bad[flag] = {value: _parse([name, *minimal, flag + "=" + value]) for value in BAD_VALUES}
        described[name] = {"actions": actions, "groups": groups, "help": help_text.getvalue(),
                           "defaults": _parse([name, *minimal]), "bad": bad}
    listing = io.StringIO()
    cli.build_parser().print_help(listing)
    described[COMMANDS] = {"help": listing.getvalue()}
    return described


@pytest.fixture
def fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # argparse wraps the help to the terminal's width
    monkeypatch.setattr(sys, "argv", ["python -m gigsterpg.cli"])


@pytest.mark.parametrize("command", list(MINIMAL))
def test_each_pipeline_command_keeps_its_recorded_cli(command, fixed_width):
    recorded, now = json.loads(RECORD.read_text())[command], describe()[command]
    by_dest = {(each["dest"], tuple(each["options"])): each for each in now["actions"]}
    for before in recorded["actions"]:
        key = (before["dest"], tuple(before["options"]))
        assert key in by_dest, f"{command}: {before['options'] or before['dest']} is gone"
        assert by_dest[key] == before, f"{command}: {before['options'] or before['dest']} changed"
    assert len(now["actions"]) == len(recorded["actions"]), f"{command}: arguments were added"
    assert now["groups"] == recorded["groups"]
    assert now["defaults"] == recorded["defaults"]
    assert now["bad"] == recorded["bad"]
    assert now["help"] == recorded["help"]


def test_the_list_of_commands_keeps_its_recorded_help(fixed_width):
    assert describe()[COMMANDS] == json.loads(RECORD.read_text())[COMMANDS]


@pytest.mark.parametrize("name", list(pipelines.PIPELINES))
def test_a_pipeline_command_takes_what_its_pipeline_declares(name, monkeypatch):
    """The command's arguments are built from the declaration: a parameter declared is a flag of it."""
    pipeline = pipelines.get(name)
    extra = Param("brand_new", INTEGER, "a parameter declared in the pipeline alone", default=7, minimum=1)
    monkeypatch.setitem(pipelines.PIPELINES, name, dataclasses.replace(pipeline, params=pipeline.params + (extra,)))
    command = _subparsers(cli.build_parser())[pipeline.cli_command]
    found = {action.dest: action for action in command._actions}
    assert found["brand_new"].option_strings == ["--brand-new"] and found["brand_new"].default == 7
    parsed = vars(cli.build_parser().parse_args([pipeline.cli_command, *MINIMAL[pipeline.cli_command],
                                                 "--brand-new", "3"]))
    assert parsed["brand_new"] == 3


if __name__ == "__main__":
    os.environ["COLUMNS"] = "120"
    sys.argv = ["python -m gigsterpg.cli"]
    print(json.dumps(describe(), indent=1, sort_keys=True))
