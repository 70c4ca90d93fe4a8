"""The shared command-line layer: one error line and exit 2 for what the user can fix, 130 for Ctrl-C."""

import argparse

import pytest

from dereverb.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, add_device, add_quiet, command, print_error
from dereverb.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (DataError("in.wav: empty file (0 bytes)"), "error: in.wav: empty file (0 bytes)"),
        (
            ConfigError("--device meta:\n not a device inference runs on"),
            "error: --device meta: not a device inference runs on",
        ),
        (PermissionError(13, "Permission denied", "out.wav"), "error: out.wav: Permission denied"),
    ],
)
def test_expected_errors_are_one_line_and_exit_2(capsys, raised, line):
    @command
    def main(argv=None):
        raise raised

    assert main([]) == EXIT_ERROR == 2
    assert capsys.readouterr().err == line + "\n"


def test_ctrl_c_is_one_line_and_130(capsys):
    @command
    def main(argv=None):
        raise KeyboardInterrupt

    assert main([]) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_a_bug_keeps_its_traceback_and_success_passes_through(capsys):
    @command
    def broken(argv=None):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        broken([])

    @command
    def fine(argv=None):
        return 0

    assert fine([]) == 0
    assert capsys.readouterr().err == ""


def test_print_error_takes_text_too(capsys):
    assert print_error("nothing written:\n 1 of 3 inputs") == 2
    assert capsys.readouterr().err == "error: nothing written: 1 of 3 inputs\n"


def test_common_options():
    parser = argparse.ArgumentParser()
    add_device(parser)
    add_quiet(parser)
    assert vars(parser.parse_args([])) == {"device": "cpu", "quiet": False}
    assert vars(parser.parse_args(["--device", "cuda:1", "--quiet"])) == {"device": "cuda:1", "quiet": True}
