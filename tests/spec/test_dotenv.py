"""Env files (`.env`, `env_file:`), checked against Docker Compose v2.

Each expected mapping is what compose produced for the same file, read as a
service's `env_file` with A=os in the environment it looks variables up in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.spec.dotenv import parse_dotenv, read_dotenv
from orchestrator.spec.errors import StackError, Warnings

LOOKUP = {"A": "os"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=2\n", {"A": "1", "B": "2"}),
        ("export A=1\n", {"A": "1"}),
        ('export  A="q"\n', {"A": "q"}),
        ("export\nA=1\n", {"A": "1"}),
        ("A: x\n", {"A": "x"}),
        ("A: b: c\n", {"A": "b: c"}),
        ("A = x \n", {"A": "x"}),
        ("A==b\n", {"A": "=b"}),
        ("A=b=c\n", {"A": "b=c"}),
        ("A=\n", {"A": ""}),
        ("B=\nC=1", {"B": "", "C": "1"}),
        # comments
        ("#x\n\n  \n A=1\n", {"A": "1"}),
        ("A=x # c\n", {"A": "x"}),
        ("A=x#c\n", {"A": "x#c"}),
        ("A=x\t# c\n", {"A": "x\t# c"}),
        ("A=   # comment\n", {"A": "# comment"}),
        ('A="x # y"\n', {"A": "x # y"}),
        ('A="x" # y\n', {"A": "x"}),
        # single quotes are literal but for an escaped quote
        ("A='$HOME'\n", {"A": "$HOME"}),
        ("C='$$e'\n", {"C": "$$e"}),
        ("A='a\\nb\\\\'\n", {"A": "a\\nb\\\\"}),
        ("A='it\\'s'\n", {"A": "it's"}),
        # double quotes understand escapes
        ('A="a\\nb\\tc\\\\d\\"e\\$f"\n', {"A": 'a\nb\tc\\d"e$f'}),
        ('A="\\x41\\0101\\a"\n', {"A": "\\x41A\x07"}),
        ('A="\\0\\01\\0999\\0777\\01234"\n', {"A": "\\\\1\\999\\777S4"}),
        ('A="a$$b\\$c"\nB=$$d\n', {"A": "a$b$c", "B": "$d"}),
        # quoted values may span lines; parsing goes on after the closing quote
        ('A="multi\nline"\nB=2\n', {"A": "multi\nline", "B": "2"}),
        ("A='multi\nline'\n", {"A": "multi\nline"}),
        ('A="x"B=2\n', {"A": "x", "B": "2"}),
        ('A="x" junk\n', {"A": "x"}),
        # keys
        ("A-b.c[1]=x\n", {"A-b.c[1]": "x"}),
        ("\u00e91=x\n", {"\u00e91": "x"}),
        ("1A=x\n", {"1A": "x"}),
        ("A\tB=1\n", {"A\tB": "1"}),
        ("=x\n", {"": "x"}),
        (":x\n", {"": "x"}),
        # a last line with no `=` and no line end is the value of an empty key
        ("A=1\nB", {"": "B", "A": "1"}),
        # line endings and byte order mark
        ("A=x\r\nB=y\r\n", {"A": "x", "B": "y"}),
        ("\ufeffA=1\n", {"A": "1"}),
    ],
)
def test_parses_like_compose(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text, "e.env", LOOKUP) == expected


def test_bare_key_takes_its_value_from_lookup_or_is_left_out() -> None:
    assert parse_dotenv("A\nB\nC=\n", "e.env", LOOKUP) == {"A": "os", "C": ""}


def test_bare_key_keeps_a_value_set_earlier_in_the_file() -> None:
    assert parse_dotenv("B=1\nB\n", "e.env", {}) == {"B": "1"}


def test_lookup_wins_over_earlier_keys_of_the_same_file() -> None:
    # Compose resolves ${A} from the environment before the file's own A.
    assert parse_dotenv("A=a\nB=${A}\nC=$A-x\n", "e.env", LOOKUP) == {
        "A": "a",
        "B": "os",
        "C": "os-x",
    }


def test_earlier_keys_answer_references_lookup_does_not() -> None:
    text = "X=1\nY=${X}2\nZ=\"${Y:-no}3\"\nW='${X}'\n"
    assert parse_dotenv(text, "e.env") == {"X": "1", "Y": "12", "Z": "123", "W": "${X}"}


def test_earlier_files_answer_until_this_file_redefines_a_key() -> None:
    # compose --env-file a.env --env-file b.env, with a.env holding A=1
    result = parse_dotenv("B=$A\nA=2\nC=$A\n", "b.env", {}, earlier={"A": "1"})
    assert result == {"B": "1", "A": "2", "C": "2"}


def test_lookup_wins_over_earlier_files() -> None:
    result = parse_dotenv("B=$A\n", "b.env", {"A": "os"}, earlier={"A": "1"})
    assert result == {"B": "os"}


def test_later_keys_are_not_yet_known() -> None:
    warnings = Warnings()
    result = parse_dotenv("A=${B:-${C}}\nB=1\n", "e.env", {}, warnings)
    assert result == {"A": "", "B": "1"}
    assert warnings.messages == ['The "C" variable is not set. Defaulting to a blank string.']


@pytest.mark.parametrize(
    ("text", "location", "message"),
    [
        ("A B=1\n", "e.env:1", "a key cannot contain a space"),
        ("A=1\nbad line\nC=3\n", "e.env:2", "a key cannot contain a space"),
        (
            "A!=1\n",
            "e.env:1",
            'unexpected character "!" in variable name "A!=1"',
        ),
        (
            'A="x""y"\n',
            "e.env:1",
            'unexpected character "\\"" in variable name "\\"y\\""',
        ),
        ('A=1\nB="unterminated\nC=1\n', "e.env:4", 'unterminated quoted value "unterminated'),
        ("A=1\nB=${\n", "e.env:2", 'invalid interpolation format: "${"'),
        ("B=${U:?need}\n", "e.env:1", "required variable U is missing a value: need"),
    ],
)
def test_bad_line_is_an_error_with_file_and_line(text: str, location: str, message: str) -> None:
    with pytest.raises(StackError) as caught:
        parse_dotenv(text, "e.env", LOOKUP)
    assert caught.value.location == location
    assert caught.value.message == message


def test_read_dotenv_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfTAG=1.2\nexport NAME='web'\r\n")
    assert read_dotenv(str(path)) == {"TAG": "1.2", "NAME": "web"}


def test_read_dotenv_names_a_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.env")
    with pytest.raises(StackError) as caught:
        read_dotenv(path)
    assert str(caught.value).startswith(path)
    assert "not found" in str(caught.value)


def test_read_dotenv_names_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StackError) as caught:
        read_dotenv(str(tmp_path))
    assert str(caught.value).startswith(str(tmp_path))


def test_read_dotenv_errors_carry_the_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text("OK=1\n\nnot valid!\n")
    with pytest.raises(StackError) as caught:
        read_dotenv(str(path))
    assert caught.value.location == f"{path}:3"


def test_undecodable_bytes_become_replacement_characters(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=caf\xe9\n")
    assert read_dotenv(str(path)) == {"A": "caf\ufffd"}


_ENV_TEXT = st.lists(
    st.sampled_from(
        list("AB=: \n#'\"\\${}x\t\r-!") + ["export ", "${A", "\\0101", "\\n", "A=", "\r\n"]
    ),
    max_size=30,
).map("".join) | st.text(max_size=40)


@settings(max_examples=400, deadline=None)
@given(_ENV_TEXT)
def test_any_text_parses_or_raises_stack_error(text: str) -> None:
    try:
        result = parse_dotenv(text, "e.env", LOOKUP, Warnings())
    except StackError as error:
        assert str(error).startswith("e.env")
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())


def test_raw_env_files_are_taken_literally() -> None:
    from orchestrator.spec.dotenv import parse_raw_env

    text = "# comment\nA=1\nB= \"two\" \nD=$HOME\n\nE\nF=x # y\nG='q'\n"
    assert parse_raw_env(text, "raw.env") == {
        "A": "1", "B": ' "two" ', "D": "$HOME", "F": "x # y", "G": "'q'",
    }


def test_raw_env_file_key_with_whitespace_is_located() -> None:
    from orchestrator.spec.dotenv import parse_raw_env

    with pytest.raises(StackError, match=r"raw.env:2:1: variable 'B C' contains whitespace"):
        parse_raw_env("A=1\nB C=2\n", "raw.env")
