import re
from typing import Annotated

import pytest
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from saigon_contract import names


@pytest.mark.parametrize("value", ["alice\n", "a..b", ".hidden", "", "x" * 64, "a/b", "é"])
def test_unsafe_ids_are_refused_by_every_form_of_the_rule(value: str) -> None:
    assert not names.is_scope_id(value)
    assert not re.match(names.USER_ID_PATTERN, value)
    with pytest.raises(names.InvalidName):
        names.adapter_name({"user": value})
    with pytest.raises(names.InvalidName):
        names.check_version(value)


def test_a_trailing_newline_never_passes_the_pydantic_pattern() -> None:
    user_id = TypeAdapter(
        Annotated[str, Field(pattern=names.USER_ID_PATTERN)], config=ConfigDict(regex_engine="python-re")
    )
    assert user_id.validate_python("x" * 63) == "x" * 63
    for bad in ("alice\n", "x" * 64, "a..b"):
        with pytest.raises(ValidationError):
            user_id.validate_python(bad)


def test_adapter_names_and_versions_are_full_matches() -> None:
    assert names.check_adapter_name("user_alice") == "user_alice"
    with pytest.raises(names.InvalidName):
        names.check_adapter_name("user_alice\n")
    assert names.is_version("v1") and not names.is_version("active") and not names.is_version("v1\n")
    assert re.match(names.VERSION_PATTERN, "activex") and not re.match(names.VERSION_PATTERN, "active")
