"""Line diffs between two versions, built with diff-match-patch.

Every diff shown to a user is computed line by line (diff-match-patch's line
mode: each distinct line becomes one character, the diff runs on those, and
the result is mapped back to lines), so its cost grows with the number of
lines and only linearly with their length: a changed line of 10,000
characters costs little more than a changed line of 10.  ``DIFF_TIMEOUT`` bounds the one search that
remains, so no edit can keep the kernel busy; when it runs out the diff is
coarser (more lines marked changed), never wrong.  The store's deltas
(``engine.store.encode_delta``) are a different matter: they must be exact to the
character and are computed there.
"""

from __future__ import annotations

from dataclasses import dataclass

from diff_match_patch import diff_match_patch

OP_DELETE, OP_EQUAL, OP_INSERT = -1, 0, 1
#: Seconds a line diff may search before settling for a coarser (still correct) answer.
DIFF_TIMEOUT = 1.0


@dataclass(frozen=True)
class VersionDiff:
    """Line-level differences from ``old_version`` to ``new_version``."""

    module: str
    old_version: int
    new_version: int
    diffs: list[tuple[int, str]]  # diff-match-patch tuples: (-1|0|1, text of whole lines)
    patch_text: str               # diff-match-patch patch of whole lines (patch_toText),
                                  # appliable with patch_apply

    @property
    def lines_added(self) -> int:
        return sum(_count_lines(t) for op, t in self.diffs if op == OP_INSERT)

    @property
    def lines_removed(self) -> int:
        return sum(_count_lines(t) for op, t in self.diffs if op == OP_DELETE)

    def lines(self) -> list[tuple[str, str]]:
        """``[(" "|"+"|"-", line), ...]`` in order; equal lines included."""
        out: list[tuple[str, str]] = []
        for op, text in self.diffs:
            mark = {OP_EQUAL: " ", OP_INSERT: "+", OP_DELETE: "-"}[op]
            out.extend((mark, line) for line in text.splitlines())
        return out

    def __str__(self) -> str:
        head = [f"--- {self.module} v{self.old_version}", f"+++ {self.module} v{self.new_version}"]
        return "\n".join(head + [m + line for m, line in self.lines()])


def _count_lines(text: str) -> int:
    return len(text.splitlines())


def _dmp() -> diff_match_patch:
    dmp = diff_match_patch()
    dmp.Diff_Timeout = DIFF_TIMEOUT
    return dmp


def _lines_mode(dmp: diff_match_patch, old: str, new: str) -> list[tuple[int, str]]:
    a, b, line_array = dmp.diff_linesToChars(old, new)
    diffs = dmp.diff_main(a, b, False)
    dmp.diff_charsToLines(diffs, line_array)
    return [(op, text) for op, text in diffs]


def line_diff(old: str, new: str) -> list[tuple[int, str]]:
    """diff-match-patch in line mode: each tuple covers whole lines."""
    return _lines_mode(_dmp(), _terminated(old), _terminated(new))


def _terminated(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def diff_sources(module: str, old_version: int, old: str, new_version: int,
                 new: str) -> VersionDiff:
    """The diff from ``old`` to ``new``; its patch turns ``old`` into ``new`` exactly."""
    dmp = _dmp()
    # The patch is made from a line diff of the texts as they are (the display
    # diff ends every text with a newline), so that it reproduces ``new``.
    patch = dmp.patch_toText(dmp.patch_make(old, _lines_mode(dmp, old, new)))
    return VersionDiff(module, old_version, new_version, line_diff(old, new), patch)
