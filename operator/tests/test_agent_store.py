"""The adapters directory: atomic versions, the active link, cleanup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agent_support import write_adapter
from saigon_agent.errors import VersionConflict
from saigon_agent.store import DIGEST_FILE, AdapterStore
from saigon_contract.names import InvalidName


def staged(store: AdapterStore, name: str, version: str, seed: int = 0) -> Path:
    staging = store.stage(name, version)
    write_adapter(staging, seed=seed)
    return staging


def test_commit_publishes_the_whole_version_at_once(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    staging = staged(store, "user_42", "v1")
    assert store.versions("user_42") == []  # staging is invisible to readers
    final = store.commit("user_42", "v1", staging, "d1")
    assert final == tmp_path / "user_42" / "v1"
    assert not staging.exists()
    assert sorted(p.name for p in final.iterdir()) == [DIGEST_FILE, "adapter_config.json", "adapter_model.safetensors"]
    assert store.installed_digest("user_42", "v1") == "d1"
    assert store.versions("user_42") == ["v1"]


def test_versions_are_immutable(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    store.commit("global", "v1", staged(store, "global", "v1"), "d1")
    # The same artifact again (another agent run): fine, and the staging copy is dropped.
    again = staged(store, "global", "v1")
    store.commit("global", "v1", again, "d1")
    assert not again.exists()
    other = staged(store, "global", "v1", seed=9)
    with pytest.raises(VersionConflict, match="already on disk with digest d1"):
        store.commit("global", "v1", other, "d2")
    assert store.installed_digest("global", "v1") == "d1"
    assert not other.exists()


def test_activate_flips_a_relative_symlink(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    for version in ("v1", "v2"):
        store.commit("domain_law", version, staged(store, "domain_law", version), version)
    store.activate("domain_law", "v1")
    link = tmp_path / "domain_law" / "active"
    inode_before = os.lstat(link).st_ino
    store.activate("domain_law", "v2")
    assert os.readlink(link) == "v2"
    assert os.lstat(link).st_ino != inode_before  # a new link renamed over the old one
    assert (link / "adapter_config.json").is_file()
    assert [p.name for p in link.parent.iterdir() if p.name.startswith(".active-")] == []
    store.deactivate("domain_law")
    assert store.active_version("domain_law") is None


def test_prune_keeps_the_active_and_the_listed_versions(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    for version in ("v1", "v2", "v3", "v4"):
        store.commit("user_7", version, staged(store, "user_7", version), version)
    store.activate("user_7", "v2")
    store.prune("user_7", keep={"v4"})
    assert store.versions("user_7") == ["v2", "v4"]


def test_clean_staging_removes_what_a_killed_agent_left(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    store.commit("user_1", "v1", staged(store, "user_1", "v1"), "d")
    leftover = staged(store, "user_1", "v2")
    os.symlink("v1", tmp_path / "user_1" / ".active-dead")
    assert store.clean_staging() == 2
    assert not leftover.exists()
    assert sorted(p.name for p in (tmp_path / "user_1").iterdir()) == ["v1"]


def test_remove_deletes_everything_of_one_adapter(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    store.commit("user_1", "v1", staged(store, "user_1", "v1"), "d")
    store.activate("user_1", "v1")
    store.commit("user_2", "v1", staged(store, "user_2", "v1"), "d")
    store.remove("user_1")
    assert store.names() == ["user_2"]


@pytest.mark.parametrize(
    ("name", "version"),
    [("../etc", "v1"), ("user_1", ".."), ("user_1", "active"), ("user_a/b", "v1"), ("bob", "v1"), ("user_1", "v1..2")],
)
def test_unsafe_names_never_reach_the_filesystem(tmp_path: Path, name: str, version: str) -> None:
    with pytest.raises(InvalidName):
        AdapterStore(tmp_path).version_dir(name, version)
