"""`hf-ssl --help`, `--version` and every command's `--help` print help and exit 0; every option has a help text;
`--method`'s help lists the methods (issue 12, "A normal install works")."""

import dataclasses

import pytest

import hf_ssl
from hf_ssl.cli import COMMANDS, main
from hf_ssl.evaluation.suite import EvaluationArguments
from hf_ssl.models.registry import METHODS
from hf_ssl.training.arguments import ARGUMENT_CLASSES


def test_top_level_help_and_version_exit_zero(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-ssl")
    assert all(command in out for command in COMMANDS)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hf-ssl {hf_ssl.__version__}"


def test_no_or_unknown_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["trian"]) == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_help_exits_zero(command, capsys):
    assert main([command, "--help"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: hf-ssl {command}")
    assert "error" not in captured.out + captured.err


def test_train_help_lists_the_methods_and_the_shipped_recipes(capsys):
    assert main(["train", "-h"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    method_help = out[out.index("--method METHOD") : out.index("--backbone_config")]
    assert all(name in method_help for name in METHODS)
    assert "quickstart" in out[out.index("shipped recipes:") :]


@pytest.mark.parametrize("cls", [*ARGUMENT_CLASSES, EvaluationArguments], ids=lambda cls: cls.__name__)
def test_every_option_has_a_help_text(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert missing == []
