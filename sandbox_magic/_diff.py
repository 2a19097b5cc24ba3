"""Line diffs between two versions, built with diff-match-patch."""

from __future__ import annotations

from dataclasses import dataclass

from diff_match_patch import diff_match_patch

OP_DELETE, OP_EQUAL, OP_INSERT = -1, 0, 1


@dataclass(frozen=True)
class VersionDiff:
    """Line-level differences from ``old_version`` to ``new_version``."""

    module: str
    old_version: int
    new_version: int
    diffs: list[tuple[int, str]]  # diff-match-patch tuples: (-1|0|1, text of whole lines)
    patch_text: str               # diff-match-patch patch (patch_toText), appliable with patch_apply

    @property
    def lines_added(self) -> int:
        return sum(_count_lines(t) for op, t in self.diffs if op == OP_INSERT)

    @property
    def lines_removed(self) -> int:
        return sum(_count_lines(t) for op, t in self.diffs if op == OP_DELETE)

    def lines(self) -> list[tuple[str, str]]:
        """``[(" "|"+"|"-", line), ...]`` in order; equal lines included."""
        out = []
        for op, text in self.diffs:
            mark = {OP_EQUAL: " ", OP_INSERT: "+", OP_DELETE: "-"}[op]
            out.extend((mark, line) for line in text.splitlines())
        return out

    def __str__(self) -> str:
        head = [f"--- {self.module} v{self.old_version}", f"+++ {self.module} v{self.new_version}"]
        return "\n".join(head + [m + line for m, line in self.lines()])


def _count_lines(text: str) -> int:
    return len(text.splitlines())


def line_diff(old: str, new: str) -> list[tuple[int, str]]:
    """diff-match-patch in line mode: each tuple covers whole lines."""
    dmp = diff_match_patch()
    a, b, line_array = dmp.diff_linesToChars(_terminated(old), _terminated(new))
    diffs = dmp.diff_main(a, b, False)
    dmp.diff_charsToLines(diffs, line_array)
    return [(op, text) for op, text in diffs]


def _terminated(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def diff_sources(module: str, old_version: int, old: str, new_version: int,
                 new: str) -> VersionDiff:
    dmp = diff_match_patch()
    patch = dmp.patch_toText(dmp.patch_make(old, new))
    return VersionDiff(module, old_version, new_version, line_diff(old, new), patch)
