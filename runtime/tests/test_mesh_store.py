"""MeshStore and the mesh schema: validation of untrusted files, path safety, caching, atomic writes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from saigon_runtime.mesh import (
    InvalidUserId,
    MeshGraph,
    MeshStore,
    MeshTooLarge,
    MeshValidationError,
    parse_mesh,
    validate_user_id,
)
from saigon_runtime.mesh.schema import MAX_NODES

GRAPH = {
    "nodes": [
        {"id": "n1", "label": "Kubernetes", "text": "Container orchestration", "weight": 1.0},
        {"id": "n2", "label": "LoRA", "text": "Low-rank adapters", "weight": 2.5},
    ],
    "edges": [{"source": "n1", "target": "n2", "relation": "serves"}],
}


@pytest.fixture
def store(tmp_path: Path) -> MeshStore:
    return MeshStore(tmp_path / "mesh")


def write_raw(store: MeshStore, user_id: str, content: str | bytes) -> Path:
    store.mesh_dir.mkdir(parents=True, exist_ok=True)
    path = store.path_for(user_id)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_put_then_get_round_trips_and_fills_defaults(store: MeshStore) -> None:
    store.put("alice", {"nodes": [{"id": "a", "label": "A"}], "edges": []})
    graph = store.get("alice")
    assert graph is not None
    assert graph.nodes[0].text == ""
    assert graph.nodes[0].weight == 1.0
    on_disk = json.loads(store.path_for("alice").read_text())
    assert on_disk["nodes"][0] == {"id": "a", "label": "A", "text": "", "weight": 1.0}


def test_file_name_follows_the_design_layout(store: MeshStore) -> None:
    assert store.path_for("u-42.x") == store.mesh_dir / "user_u-42.x_mesh.json"


def test_missing_mesh_is_none_and_delete_reports_absence(store: MeshStore) -> None:
    assert store.get("nobody") is None
    assert store.delete("nobody") is False
    store.put("bob", GRAPH)
    assert store.delete("bob") is True
    assert store.get("bob") is None
    assert not store.path_for("bob").exists()


@pytest.mark.parametrize(
    "user_id",
    ["../etc", "a/b", "..", "a..b", ".hidden", "", "x" * 64, "a b", "a\x00b", "é", "/abs", "a\\b", "alice\n", None, 7],
)
def test_unsafe_user_ids_are_rejected(store: MeshStore, user_id: object) -> None:
    with pytest.raises(InvalidUserId, match="user id must match"):
        validate_user_id(user_id)
    for call in (store.get, store.delete, lambda uid: store.put(uid, GRAPH)):
        with pytest.raises(InvalidUserId):
            call(user_id)  # type: ignore[arg-type]
    assert not store.mesh_dir.exists() or list(store.mesh_dir.iterdir()) == []


# At most 63 characters: the SaigonAdapter CRD's scope.user limit, so every user id here can own an adapter.
@pytest.mark.parametrize("user_id", ["a", "A9", "user.name-1_x", "0" * 63])
def test_safe_user_ids_are_accepted(user_id: str) -> None:
    assert validate_user_id(user_id) == user_id


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Invalid JSON"),
        ("[]", "Input should be an object"),
        ('{"nodes": [{"id": "a"}]}', "nodes[0].label: Field required"),
        ('{"nodes": [{"id": 5, "label": "x"}]}', "nodes[0].id: Input should be a valid string"),
        ('{"nodes": [{"id": "a", "label": "x", "weight": "2"}]}', "nodes[0].weight"),
        ('{"nodes": [{"id": "a", "label": "x", "weight": -1}]}', "greater than or equal to 0"),
        ('{"nodes": [{"id": "a", "label": "x", "weight": 1e9}]}', "less than or equal to 100"),
        ('{"nodes": [{"id": "a", "label": "x", "weight": NaN}]}', "nodes[0].weight"),
        ('{"nodes": [{"id": "a", "label": "x", "weight": Infinity}]}', "nodes[0].weight"),
        ('{"nodes": [{"id": "", "label": "x"}]}', "nodes[0].id: String should have at least 1 character"),
        ('{"nodes": [{"id": "a", "label": "' + "L" * 300 + '"}]}', "nodes[0].label: String should have at most"),
        (
            '{"nodes": [{"id": "a", "label": "x"}, {"id": "a", "label": "y"}]}',
            "nodes[1].id: duplicate node id 'a'",
        ),
        (
            '{"nodes": [{"id": "a", "label": "x"}], "edges": [{"source": "a", "target": "ghost"}]}',
            "edges[0].target: unknown node id 'ghost'",
        ),
        ('{"nodes": [], "edges": [{"source": "a"}]}', "edges[0].target: Field required"),
    ],
)
def test_invalid_files_raise_an_error_naming_the_problem(store: MeshStore, content: str, message: str) -> None:
    write_raw(store, "carol", content)
    with pytest.raises(MeshValidationError, match=r"user_carol_mesh\.json") as info:
        store.get("carol")
    assert message in str(info.value)
    with pytest.raises(MeshValidationError) as put_info:
        store.put("carol", content)
    assert message in str(put_info.value)


def test_node_count_is_capped() -> None:
    nodes = [{"id": str(i), "label": "x"} for i in range(MAX_NODES + 1)]
    with pytest.raises(MeshValidationError, match="nodes: List should have at most 5000 items"):
        parse_mesh({"nodes": nodes})


def test_oversized_file_is_rejected_without_parsing(tmp_path: Path) -> None:
    store = MeshStore(tmp_path, max_bytes=1000)
    big = json.dumps({"nodes": [{"id": "a", "label": "x", "text": "y" * 2000}]})
    write_raw(store, "dave", big)
    with pytest.raises(MeshTooLarge, match=r"is 20[0-9]{2} bytes; the limit is 1000") as info:
        store.get("dave")
    assert info.value.status == 413
    with pytest.raises(MeshTooLarge):
        store.put("dave", big)


def test_non_regular_file_is_rejected(store: MeshStore) -> None:
    store.mesh_dir.mkdir(parents=True)
    os.mkfifo(store.path_for("fifo"))  # would block a plain open() for reading
    with pytest.raises(MeshValidationError, match="not a regular file"):
        store.get("fifo")


def test_unchanged_file_is_served_from_cache(store: MeshStore) -> None:
    store.put("erin", GRAPH)
    first = store.get("erin")
    assert store.get("erin") is first


def test_file_changed_on_disk_is_re_read(store: MeshStore) -> None:
    path = write_raw(store, "frank", json.dumps(GRAPH))
    assert store.get("frank") is not None
    changed = {"nodes": [{"id": "z", "label": "Zebra"}], "edges": []}
    path.write_text(json.dumps(changed))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse-mtime filesystems
    graph = store.get("frank")
    assert graph is not None
    assert [n.id for n in graph.nodes] == ["z"]


def test_file_replaced_by_another_process_is_re_read(store: MeshStore) -> None:
    store.put("gina", GRAPH)
    cached = store.get("gina")
    other = MeshStore(store.mesh_dir)  # a second writer, as another replica or the agent
    other.put("gina", {"nodes": [{"id": "q", "label": "Quokka"}]})
    fresh = store.get("gina")
    assert fresh is not cached
    assert fresh is not None and fresh.nodes[0].label == "Quokka"


def test_broken_file_error_is_cached_and_clears_when_fixed(store: MeshStore) -> None:
    path = write_raw(store, "hal", "{broken")
    for _ in range(2):
        with pytest.raises(MeshValidationError, match="Invalid JSON"):
            store.get("hal")
    store.put("hal", GRAPH)
    assert store.get("hal") is not None
    path.unlink()
    assert store.get("hal") is None


def test_failed_put_keeps_the_previous_file_and_leaves_no_temp_files(store: MeshStore) -> None:
    store.put("ivy", GRAPH)
    before = store.path_for("ivy").read_bytes()
    with pytest.raises(MeshValidationError):
        store.put("ivy", {"nodes": [{"id": "a", "label": "x"}], "edges": [{"source": "a", "target": "b"}]})
    assert store.path_for("ivy").read_bytes() == before
    assert sorted(p.name for p in store.mesh_dir.iterdir()) == ["user_ivy_mesh.json"]


def test_put_replaces_the_file_atomically(store: MeshStore) -> None:
    store.put("jay", GRAPH)
    inode_before = store.path_for("jay").stat().st_ino
    store.put("jay", {"nodes": [{"id": "b", "label": "B"}]})
    assert store.path_for("jay").stat().st_ino != inode_before  # a rename, never a rewrite in place
    assert (store.path_for("jay").stat().st_mode & 0o777) == 0o640


def test_readers_never_see_a_partial_file_during_concurrent_puts(store: MeshStore) -> None:
    graphs = [{"nodes": [{"id": f"n{i}", "label": f"L{k}", "text": "t" * 5000} for i in range(20)]} for k in range(4)]
    store.put("kim", graphs[0])
    reader = MeshStore(store.mesh_dir)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            try:
                graph = reader.get("kim")
                assert graph is not None and len(graph.nodes) == 20
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for k in range(40):
        store.put("kim", graphs[k % 4])
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_user_ids_lists_valid_mesh_files_only(store: MeshStore) -> None:
    store.put("b", GRAPH)
    store.put("a", GRAPH)
    (store.mesh_dir / "user_.bad_mesh.json").write_text("{}")
    (store.mesh_dir / "notes.txt").write_text("x")
    assert store.user_ids() == ["a", "b"]


def test_parse_mesh_accepts_a_graph_and_rejects_non_objects() -> None:
    graph = parse_mesh(GRAPH)
    assert isinstance(graph, MeshGraph)
    assert parse_mesh(graph) is graph
    with pytest.raises(MeshValidationError, match="must be a JSON object"):
        parse_mesh([1, 2])  # type: ignore[arg-type]


def test_mesh_and_audit_modules_do_not_import_torch_or_transformers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, saigon_runtime.mesh, saigon_runtime.audit; "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
