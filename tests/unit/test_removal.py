"""remove(): whatever a path turned into goes, and nothing it points to."""

from __future__ import annotations

from pathlib import Path

from netdist.removal import remove


def test_a_tree_a_file_a_link_and_nothing_are_removed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "inside").write_text("must stay")
    link = tmp_path / "link"
    link.symlink_to(kept, target_is_directory=True)
    file = tmp_path / "file"
    file.write_text("x")
    for path in (tree, link, file, tmp_path / "never-there"):
        remove(path)
        assert not path.exists() and not path.is_symlink()
    assert (kept / "inside").read_text() == "must stay"  # a link to a tree: the link goes, not the tree
