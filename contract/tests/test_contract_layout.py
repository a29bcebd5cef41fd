import os
from pathlib import Path

from saigon_contract import layout


def _adapter(tmp_path: Path, *versions: str) -> Path:
    adapter = tmp_path / "user_alice"
    for version in versions:
        (adapter / version).mkdir(parents=True)
    adapter.mkdir(exist_ok=True)
    return adapter


def test_the_writer_flips_active_and_the_reader_follows_it(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, "v1", "v2")
    assert layout.active_version(adapter) is None
    layout.set_active(adapter, "v1")
    assert layout.active_version(adapter) == "v1"
    layout.set_active(adapter, "v2")
    assert layout.active_version(adapter) == "v2"
    assert os.readlink(adapter / "active") == "v2"
    assert [p.name for p in adapter.iterdir() if p.name.startswith(".")] == []
    assert layout.versions(adapter) == ["v1", "v2"]


def test_the_reader_refuses_links_that_escape_or_name_no_version(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, "v1")
    (tmp_path / "elsewhere").mkdir()
    (adapter / "nested").mkdir()
    for target in ("../elsewhere", str(tmp_path / "elsewhere"), "nested/..", "v1/", ".", "missing", "active"):
        link = adapter / "active"
        link.unlink(missing_ok=True)
        os.symlink(target, link)
        assert layout.active_version(adapter) is None, target


def test_versions_skip_links_and_private_entries(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, "v1", ".staging-v2-abcd")
    os.symlink("v1", adapter / "alias")
    layout.set_active(adapter, "v1")
    assert layout.versions(adapter) == ["v1"]


def test_the_writer_refuses_a_non_version(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, "v1")
    for bad in ("../v1", "active", "v1\n"):
        try:
            layout.set_active(adapter, bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert not (adapter / "active").exists()
