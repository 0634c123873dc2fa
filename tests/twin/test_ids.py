import pytest

from twin.ids import EntityId, EntityKind, InvalidEntityId


def test_parse_and_parts() -> None:
    eid = EntityId.parse("kiel:gaarden:building:123")
    assert (eid.region, eid.scope, eid.kind, eid.name) == ("kiel", "gaarden", EntityKind.BUILDING, "123")
    assert EntityId.of("kiel", "_", "coast", "holtenau-1") == "kiel:_:coast:holtenau-1"


@pytest.mark.parametrize(("raw", "hint"), [
    ("kiel:gaarden:building", "3 part(s)"),
    ("kiel:gaarden:castle:1", "unknown kind 'castle'"),
    ("Kiel:gaarden:sensor:1", "lower-case slugs"),
    ("kiel:gaarden:sensor:", "lower-case slugs"),
    (42, "must be a string"),
])
def test_invalid_ids_say_what_is_wrong(raw: object, hint: str) -> None:
    with pytest.raises(InvalidEntityId) as exc:
        EntityId.parse(raw)
    assert hint in str(exc.value)
