"""Settings: defaults, config files, environment variables and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalstack.config import (
    LocalExecutorSettings,
    ModelEntry,
    ProviderEntry,
    RayExecutorSettings,
    Settings,
    load_settings,
)
from evalstack.errors import InvalidInputError

ENV_VARS = ("EVALSTACK_DB_URL", "EVALSTACK_DATA_HOME", "NVIDIA_EVALUATOR_URL", "HF_ENDPOINT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_put_the_database_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.db_url == f"sqlite:///{tmp_path / 'data' / 'evalstack.db'}"
    assert settings.data_roots == [Path.cwd().resolve(), (tmp_path / "data").resolve()]
    assert (settings.host, settings.port, settings.default_parallelism) == ("127.0.0.1", 8321, 16)
    assert [(p.provider_id, p.provider_type) for p in settings.providers] == [("local", "inline::local")]
    assert settings.embedded_model is True
    assert settings.models == []
    assert settings.hf_endpoint is None


def test_default_data_dir_is_under_the_home_folder() -> None:
    assert Settings().data_dir == (Path.home() / ".local" / "share" / "evalstack").resolve()


def test_yaml_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        "port: 9000\n"
        "default_parallelism: 4\n"
        "embedded_model: false\n"
        "models:\n"
        "  - model_id: my-model\n"
        "    base_url: http://localhost:8000/v1/\n"
        "    api_key: sk-secret\n"
    )
    settings = load_settings(config)
    assert settings.port == 9000
    assert settings.default_parallelism == 4
    assert settings.embedded_model is False
    assert settings.models == [
        ModelEntry(model_id="my-model", base_url="http://localhost:8000/v1", api_key="sk-secret")
    ]


def test_json_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "server.json"
    config.write_text(json.dumps({"host": "0.0.0.0", "hf_endpoint": "http://hub.local"}))
    settings = load_settings(config)
    assert settings.host == "0.0.0.0"
    assert settings.hf_endpoint == "http://hub.local"


def test_relative_folders_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "server.yaml"
    config.parent.mkdir()
    config.write_text("data_dir: state\ndata_roots: [datasets, /abs/elsewhere]\n")
    settings = load_settings(config)
    assert settings.data_dir == (tmp_path / "conf" / "state").resolve()
    assert settings.data_roots == [(tmp_path / "conf" / "datasets").resolve(), Path("/abs/elsewhere")]
    assert settings.db_url == f"sqlite:///{(tmp_path / 'conf' / 'state').resolve() / 'evalstack.db'}"


def test_environment_overrides_the_file_and_overrides_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("db_url: sqlite:///from-file.db\nport: 1111\n")
    monkeypatch.setenv("EVALSTACK_DB_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("EVALSTACK_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local")
    settings = load_settings(config, port=2222, host=None)
    assert settings.db_url == "sqlite:///from-env.db"
    assert settings.data_dir == (tmp_path / "home").resolve()
    assert settings.hf_endpoint == "http://mirror.local"
    assert settings.port == 2222
    assert settings.host == "127.0.0.1"
    assert load_settings(config, db_url="postgresql://db/x").db_url == "postgresql://db/x"


def test_nvidia_evaluator_url_adds_the_nvidia_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_EVALUATOR_URL", "http://nemo:7331")
    settings = load_settings()
    assert settings.providers == [
        ProviderEntry(provider_id="local", provider_type="inline::local"),
        ProviderEntry(
            provider_id="nvidia", provider_type="remote::nvidia", config={"evaluator_url": "http://nemo:7331"}
        ),
    ]


def test_providers_listed_in_the_file_win_over_nvidia_evaluator_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_EVALUATOR_URL", "http://nemo:7331")
    config = tmp_path / "server.yaml"
    config.write_text("providers:\n  - {provider_id: only, provider_type: 'inline::local'}\n")
    assert [p.provider_id for p in load_settings(config).providers] == ["only"]


def test_unknown_top_level_key_names_the_accepted_keys(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("prot: 9000\n")
    with pytest.raises(InvalidInputError) as err:
        load_settings(config)
    message = err.value.message
    assert "'prot'" in message
    assert str(config) in message
    for key in Settings.model_fields:
        assert key in message


def test_unknown_key_in_a_model_entry_names_the_place_and_accepted_keys(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("models:\n  - {model_id: m, base_url: 'http://x/v1', apikey: k}\n")
    with pytest.raises(InvalidInputError) as err:
        load_settings(config)
    message = err.value.message
    assert "models.0" in message and "'apikey'" in message
    assert "model_id, base_url, provider_model_id, api_key" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: 70000\n", "port"),
        ("port: eighty\n", "port"),
        ("default_parallelism: 0\n", "default_parallelism"),
        ("models:\n  - {model_id: m, base_url: 'localhost:8000'}\n", "http:// or https://"),
        ("providers:\n  - {provider_id: p, provider_type: 'remote::vllm'}\n", "inline::local"),
        (
            "models:\n  - {model_id: m, base_url: 'http://a/v1'}\n  - {model_id: m, base_url: 'http://b/v1'}\n",
            "model_id listed more than once: m",
        ),
        ("- a list\n", "must hold a mapping"),
        ("port: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_values_are_reported_clearly(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(text)
    with pytest.raises(InvalidInputError) as err:
        load_settings(config)
    assert expected in err.value.message


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("")
    assert load_settings(config, data_dir=str(tmp_path)).port == 8321


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="accepted keys"):
        load_settings(colour="red")


def test_every_setting_is_documented() -> None:
    for model in (Settings, ModelEntry, ProviderEntry, LocalExecutorSettings, RayExecutorSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"


def test_the_executor_is_local_unless_ray_is_asked_for(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).executor == LocalExecutorSettings()
    assert Settings(data_dir=tmp_path, executor="ray").executor == RayExecutorSettings()
    config = tmp_path / "server.yaml"
    config.write_text("executor: {type: ray, address: 'ray://head:10001', shard_size: 250, max_actors: 4}\n")
    ray = load_settings(config, data_dir=str(tmp_path)).executor
    assert ray == RayExecutorSettings(address="ray://head:10001", shard_size=250, max_actors=4)


def test_executor_flag_keeps_the_files_settings_of_that_executor_and_replaces_another(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("executor: {type: ray, shard_size: 50}\n")
    kept = load_settings(config, data_dir=str(tmp_path), executor="ray").executor
    assert kept == RayExecutorSettings(shard_size=50)
    assert load_settings(config, data_dir=str(tmp_path), executor="local").executor == LocalExecutorSettings()
    config.write_text("executor: local\n")
    assert load_settings(config, data_dir=str(tmp_path), executor="ray").executor == RayExecutorSettings()


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ("spark", "does not match any of the expected tags: 'local', 'ray'"),
        ({"type": "ray", "shards": 3}, "unknown key 'shards'; accepted keys: type, address, shard_size"),
        ({"type": "ray", "shard_size": 0}, "greater than or equal to 1"),
    ],
)
def test_a_bad_executor_says_what_is_accepted(tmp_path: Path, executor: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_settings(None, data_dir=str(tmp_path), executor=executor)
