"""The docstring examples of live modules, one pytest test per docstring.

Run by ``runner.py`` (never collected by the project's own suite: the name does not
start with ``test_``).  ``$CORPUS_DOCTEST_MODULES`` names the modules (comma separated,
dotted names as the library's users import them); they are imported when this file
is, so in a sandbox run the examples of the sandbox's current code are collected
(pytest's ``--doctest-modules`` would import the files from disk instead).  The option
flags are the library's own ``doctest_optionflags`` (pytest's ini setting, ELLIPSIS by
default), ``ALLOW_UNICODE`` included as pytest understands it.
"""

from __future__ import annotations

import doctest
import importlib
import os
import re

import pytest

ALLOW_UNICODE = doctest.register_optionflag("ALLOW_UNICODE")
_UNICODE_LITERAL = re.compile(r"(\W|^)[uU]([rR]?['\"])")


class _Checker(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if super().check_output(want, got, optionflags):
            return True
        if optionflags & ALLOW_UNICODE:
            want = _UNICODE_LITERAL.sub(r"\1\2", want)
            got = _UNICODE_LITERAL.sub(r"\1\2", got)
            return super().check_output(want, got, optionflags)
        return False


def _flags(config) -> int:
    flags = 0
    for name in config.getini("doctest_optionflags") or ["ELLIPSIS"]:
        flags |= doctest.OPTIONFLAGS_BY_NAME[name]
    return flags


def _docstrings() -> list:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in filter(None, os.environ.get("CORPUS_DOCTEST_MODULES", "").split(",")):
        module = importlib.import_module(name)
        for test in sorted(finder.find(module, name), key=lambda t: t.name):
            if test.examples:
                found.append(pytest.param(test, id=test.name))
    return found


@pytest.mark.parametrize("docstring", _docstrings())
def test_docstring(docstring, pytestconfig):
    runner = doctest.DocTestRunner(checker=_Checker(), verbose=False,
                                   optionflags=_flags(pytestconfig))
    report: list[str] = []
    result = runner.run(docstring, out=report.append, clear_globs=False)
    assert result.failed == 0, "".join(report)
