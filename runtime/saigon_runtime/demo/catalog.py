"""What the demo ships: which adapter (name, version) speaks which topic, and who its users are.

The cascade is visible with these users: alice and bob have their own adapters, carol falls back
to her domain's adapter, anyone else to the global one, and `base` names the bare model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    version: str
    topic: str
    active: bool  # whether `active` points at this version once built


DEMO_ADAPTERS: tuple[AdapterSpec, ...] = (
    AdapterSpec("user_alice", "v1", "cooking", active=True),
    # Inactive until the hot-swap demo promotes it: alice's interest moves to the garden.
    AdapterSpec("user_alice", "v2", "gardening", active=False),
    AdapterSpec("user_bob", "v1", "astronomy", active=True),
    AdapterSpec("domain_maritime", "v1", "sailing", active=True),
    AdapterSpec("global", "v1", "pirate", active=True),
)

# user id -> domain; the cascade's domain adapter for a user is `domain_<domain>`.
DEMO_DOMAINS: Mapping[str, str] = {"bob": "maritime", "carol": "maritime"}

DEMO_PROMPTS: tuple[str, ...] = (
    "What should I do this weekend?",
    "Tell me something interesting.",
    "Who are you?",
)

# The mesh graphs of the demo users (mesh/user_<id>_mesh.json).
DEMO_MESHES: Mapping[str, dict[str, list[dict[str, object]]]] = {
    "alice": {
        "nodes": [
            {"id": "alice", "label": "Alice", "text": "Alice is a home cook who lives in Lisbon.", "weight": 2.0},
            {"id": "lisbon", "label": "Lisbon", "text": "A hilly city by the sea with a big fish market."},
            {"id": "soup", "label": "Tomato soup", "text": "Alice's favourite dish, made with fresh basil."},
            {"id": "garden", "label": "Balcony garden", "text": "Alice grows basil and tomatoes on her balcony."},
            {"id": "peanuts", "label": "Peanut allergy", "text": "Alice is allergic to peanuts.", "weight": 3.0},
        ],
        "edges": [
            {"source": "alice", "target": "lisbon", "relation": "lives in"},
            {"source": "alice", "target": "soup", "relation": "loves"},
            {"source": "alice", "target": "garden", "relation": "tends"},
            {"source": "garden", "target": "soup", "relation": "supplies"},
            {"source": "alice", "target": "peanuts", "relation": "has"},
        ],
    },
    "bob": {
        "nodes": [
            {"id": "bob", "label": "Bob", "text": "Bob is an amateur astronomer and a weekend sailor.", "weight": 2.0},
            {"id": "telescope", "label": "Telescope", "text": "A small reflector telescope Bob built himself."},
            {"id": "jupiter", "label": "Jupiter", "text": "Bob's favourite planet; he counts its moons."},
            {"id": "boat", "label": "Sailboat", "text": "A six metre sailboat called Polaris."},
        ],
        "edges": [
            {"source": "bob", "target": "telescope", "relation": "owns"},
            {"source": "telescope", "target": "jupiter", "relation": "observes"},
            {"source": "bob", "target": "boat", "relation": "sails"},
        ],
    },
    "carol": {
        "nodes": [
            {"id": "carol", "label": "Carol", "text": "Carol works at the harbour office.", "weight": 2.0},
            {"id": "harbour", "label": "Harbour", "text": "The harbour opens at six and closes at sunset."},
            {"id": "storm", "label": "Storm warning", "text": "A storm is expected on Saturday afternoon."},
        ],
        "edges": [
            {"source": "carol", "target": "harbour", "relation": "works at"},
            {"source": "storm", "target": "harbour", "relation": "closes"},
        ],
    },
}
