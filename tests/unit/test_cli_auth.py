"""The CLI side of auth: `evalstack keys new` and the refusal to serve an open API beyond loopback."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from evalstack.auth import Authenticator, hash_key
from evalstack.cli import app
from evalstack.config import AuthSettings

runner = CliRunner()


async def test_keys_new_prints_a_key_and_a_settings_entry_that_accepts_it() -> None:
    result = runner.invoke(app, ["keys", "new", "ci", "--scopes", "read,run"])
    assert result.exit_code == 0, result.output
    key = re.search(r"API key \(shown once; only its digest is stored\): (\S+)", result.output)
    assert key is not None
    entry = yaml.safe_load(result.output.split("auth.api_keys in the server settings:\n", 1)[1])
    assert entry == [{"name": "ci", "sha256": hash_key(key.group(1)), "scopes": ["read", "run"]}]
    principal = await Authenticator(AuthSettings.model_validate({"api_keys": entry})).authenticate(
        f"Bearer {key.group(1)}"
    )
    assert principal.name == "ci" and principal.scopes == {"read", "run"}
    again = runner.invoke(app, ["keys", "new", "ci", "--scopes", "read,run"])
    assert key.group(1) not in again.output


def test_keys_new_rejects_an_unknown_scope() -> None:
    result = runner.invoke(app, ["keys", "new", "ci", "--scopes", "read,write"])
    assert result.exit_code == 2
    assert "Unknown scope(s) write; accepted: read, run, admin" in result.output


def test_serve_refuses_an_open_api_beyond_loopback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'e.db'}"])
    assert result.exit_code == 2
    assert "Refusing to listen on 0.0.0.0 without authentication" in result.output
    assert "--insecure-no-auth" in result.output
    viewer = runner.invoke(app, ["view", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'e.db'}"])
    assert viewer.exit_code == 2
    assert "Refusing to listen on 0.0.0.0" in viewer.output
