"""Every error class derives from DereverbError and the built-in a caller expects; one_line is one line."""

import pytest

import dereverb.errors as errors
from dereverb.errors import DereverbError, one_line

BUILTIN = {
    "DataError": ValueError,
    "OutputExistsError": ValueError,
    "ConfigError": ValueError,
    "ModelFolderError": ValueError,
    "EvaluationError": ValueError,
    "EnhanceError": ValueError,
    "CheckpointError": RuntimeError,
    "TrainingError": RuntimeError,
}


def test_every_error_class_is_listed_and_has_its_builtin_base():
    classes = {name for name in errors.__all__ if name.endswith("Error") and name != "DereverbError"}
    assert classes == set(BUILTIN)
    for name, builtin in BUILTIN.items():
        cls = getattr(errors, name)
        assert issubclass(cls, DereverbError), name
        assert issubclass(cls, builtin), name


def test_no_other_module_defines_its_own_error_base():
    """The package raises the classes of dereverb.errors; no module defines another public error class."""
    import ast
    from pathlib import Path

    package = Path(errors.__file__).parent
    defined = []
    for path in package.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined.append(f"{path.relative_to(package)}:{node.name}")
    assert defined == []


def test_one_line_of_an_os_error_names_the_file():
    assert one_line(PermissionError(13, "Permission denied", "/out/a.wav")) == "/out/a.wav: Permission denied"
    assert one_line(OSError(28, "No space left on device")) == "No space left on device"


def test_one_line_joins_lines_and_adds_causes_that_say_more():
    try:
        try:
            raise KeyError("lrr")
        except KeyError as cause:
            raise ValueError("Could not override 'optim.lrr'.\n  Key is not in struct") from cause
    except ValueError as err:
        text = one_line(err)
    assert "\n" not in text
    assert text == "Could not override 'optim.lrr'. Key is not in struct: 'lrr'"


def test_one_line_drops_a_cause_it_already_says_and_names_an_empty_error():
    err = ValueError("a.wav: empty file")
    err.__cause__ = ValueError("empty file")
    assert one_line(err) == "a.wav: empty file"
    assert one_line(RuntimeError()) == "RuntimeError"
    assert one_line(MemoryError()) == "out of memory"


@pytest.mark.parametrize("hint", ["pass overwrite=True to replace it", "pass --overwrite to replace it"])
def test_output_exists_error_keeps_the_path_and_the_callers_hint(tmp_path, hint):
    err = errors.OutputExistsError(tmp_path / "a.wav", hint)
    assert err.path == tmp_path / "a.wav"
    assert str(err) == f"{tmp_path / 'a.wav'}: file exists ({hint})"
