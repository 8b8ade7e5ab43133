"""The one redaction rule: which keys are secret, and how their values are hidden."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from evalstack.redaction import (
    REDACTED,
    drop_secrets,
    is_secret_key,
    redact,
    restore_redacted,
    scrub,
    secret_values,
)


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API_KEY",
        "apikey",
        "api-key",
        "X-Api-Key",
        "Authorization",
        "token",
        "hf_token",
        "HF_TOKEN",
        "access_token",
        "client_secret",
        "client-secret",
        "secret",
        "password",
    ],
)
def test_secret_keys_match_in_any_case_and_either_separator(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "tokenizer", "model_id", "url", "secretary_name", 3])
def test_ordinary_keys_are_not_secret(key: Any) -> None:
    assert not is_secret_key(key)


NESTED = {
    "model": {"api_endpoint": {"url": "http://h/v1", "API_KEY": "sk-one"}},
    "params": {
        "max_tokens": 5,
        "extra": {"hf_token": "hf-two", "headers": [{"Authorization": "Bearer three"}]},
    },
    "empty": {"api_key": ""},
}


def test_redact_masks_nested_values_and_keeps_the_shape() -> None:
    shown = redact(NESTED)
    assert shown["model"]["api_endpoint"] == {"url": "http://h/v1", "API_KEY": REDACTED}
    assert shown["params"]["extra"] == {"hf_token": REDACTED, "headers": [{"Authorization": REDACTED}]}
    assert shown["params"]["max_tokens"] == 5
    assert shown["empty"] == {"api_key": ""}  # nothing to hide: an empty key stays visibly empty
    assert NESTED["model"]["api_endpoint"]["API_KEY"] == "sk-one"  # the input is not changed


def test_drop_secrets_removes_nested_keys() -> None:
    shown = drop_secrets(NESTED)
    assert shown["model"]["api_endpoint"] == {"url": "http://h/v1"}
    assert shown["params"]["extra"] == {"headers": [{}]}
    assert shown["empty"] == {}


def test_scrub_masks_every_quoted_secret_of_a_spec_in_free_text() -> None:
    secrets = secret_values(NESTED)
    assert secrets == {"sk-one", "hf-two", "Bearer three"}
    text = ["401 from http://h/v1: key sk-one rejected", {"error": "token hf-two expired"}]
    assert scrub(text, secrets) == [
        f"401 from http://h/v1: key {REDACTED} rejected",
        {"error": f"token {REDACTED} expired"},
    ]


def test_scrub_leaves_very_short_secrets_alone_so_words_stay_readable() -> None:
    assert scrub("a kind of key", {"k"}) == "a kind of key"


def test_restore_redacted_puts_back_only_values_still_masked() -> None:
    sent_back = redact(NESTED)
    sent_back["params"]["extra"]["hf_token"] = "hf-new"
    restored = restore_redacted(sent_back, NESTED)
    assert restored["model"]["api_endpoint"]["API_KEY"] == "sk-one"
    assert restored["params"]["extra"]["headers"] == [{"Authorization": "Bearer three"}]
    assert restored["params"]["extra"]["hf_token"] == "hf-new"
    assert restore_redacted({"api_key": REDACTED}, {}) == {"api_key": REDACTED}  # nothing stored to restore


SECRET = "sk-live-0123456789"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # nested in objects and lists, at any depth
        (
            {"target": {"model": {"api_endpoint": {"url": "http://m", "API_KEY": SECRET}}}},
            {"target": {"model": {"api_endpoint": {"url": "http://m", "API_KEY": REDACTED}}}},
        ),
        (
            {"judges": [{"name": "a", "Api-Key": SECRET}, [{"token": SECRET}], "plain"]},
            {"judges": [{"name": "a", "Api-Key": REDACTED}, [{"token": REDACTED}], "plain"]},
        ),
        ([{"api_key": SECRET}], [{"api_key": REDACTED}]),
        ({"rows": ({"hf_token": SECRET},)}, {"rows": [{"hf_token": REDACTED}]}),
        # a secret key holding an object is replaced whole
        ({"secret": {"nested": SECRET}}, {"secret": REDACTED}),
        # what is not a secret is kept as is
        (
            {"max_tokens": 5, "tokenizer": "gpt2", "url": "http://m", "n": None, "ok": [1, 2.5, True]},
            {"max_tokens": 5, "tokenizer": "gpt2", "url": "http://m", "n": None, "ok": [1, 2.5, True]},
        ),
        # an empty secret has nothing to hide and stays visible as empty
        ({"api_key": "", "token": None}, {"api_key": "", "token": None}),
        ("plain text", "plain text"),
        (42, 42),
    ],
)
def test_redact_table(given: Any, expected: Any) -> None:
    original = copy.deepcopy(given)
    assert redact(given) == expected
    assert given == original  # the input is not changed


def test_scrub_replaces_a_longer_secret_before_one_it_contains() -> None:
    # Longest first: masking the short one inside the long one first would leave "aaaaaa-" visible.
    assert scrub("key=aaaaaa-zzzzzz", {"zzzzzz", "aaaaaa-zzzzzz"}) == f"key={REDACTED}"
    assert scrub("key=zzzzzz-aaaaaa", {"zzzzzz", "zzzzzz-aaaaaa"}) == f"key={REDACTED}"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ({"a": {"api_key": REDACTED}}, {"a": None}),  # nothing stored there: the value stays
        ("text", {"api_key": "sk"}),
        ([{"api_key": REDACTED}], None),
        ([{"api_key": REDACTED}], {"api_key": "sk"}),
        ([{"api_key": REDACTED}], [{"api_key": "a"}, {"api_key": "b"}]),  # lists of another length
    ],
)
def test_restore_redacted_leaves_a_value_with_no_matching_stored_shape(value: Any, stored: Any) -> None:
    assert restore_redacted(value, stored) == value
