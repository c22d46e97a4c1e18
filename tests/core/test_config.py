"""Configuration: TOML, env overrides, validation errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
from virtwire.config import load_settings
from virtwire.errors import ConfigError

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "virtwire.toml"
    path.write_text(text)
    return path


def test_defaults_generate_a_dev_secret_once(tmp_path: Path) -> None:
    env = {"VIRTWIRE_STATE_DIR": str(tmp_path)}
    first = load_settings(environ=env)
    second = load_settings(environ=env)
    assert first.dev_secret and first.resolved_secret == second.resolved_secret
    assert first.server.host == "127.0.0.1" and first.server.port == 3000
    assert (tmp_path / "dev-secret").stat().st_mode & 0o777 == 0o600


def test_file_and_env_override(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nport = 4000\nallowed_origins = ["https://a.example"]\n'
        f'[auth]\nsecret = "{SECRET}"\n',
    )
    settings = load_settings(path, environ={"VIRTWIRE_SERVER__PORT": "4001"})
    assert settings.server.port == 4001
    assert settings.server.allowed_origins == ["https://a.example"]
    assert "VIRTWIRE_SERVER__PORT" in settings.source
    assert not settings.dev_secret


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, f'[auth]\nsecret = "{SECRET}"\n[server]\nport = 4100\n')
    assert load_settings(environ={"VIRTWIRE_CONFIG": str(path)}).server.port == 4100


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'[server]\nprot = 1\n[auth]\nsecret = "{SECRET}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value) and "server.prot" in str(info.value)


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, f'[sever]\nport = 1\n[auth]\nsecret = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="unknown key 'sever'"):
        load_settings(path, environ={})


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, f'[server]\nport = "x"\n[auth]\nsecret = "{SECRET}"\n')
    with pytest.raises(ConfigError, match=r"server\.port.*Expected `int`"):
        load_settings(path, environ={})


def test_secret_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_FOR_TEST", SECRET)
    path = write(tmp_path, '[auth]\nsecret = "env:MY_SECRET_FOR_TEST"\n')
    assert load_settings(path, environ={}).resolved_secret == SECRET
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    path = write(tmp_path, f'[auth]\nsecret = "file:{secret_file}"\n')
    assert load_settings(path, environ={}).resolved_secret == SECRET
    path = write(tmp_path, '[auth]\nsecret = "env:NOT_SET_ANYWHERE_42"\n')
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE_42"):
        load_settings(path, environ={})


def test_config_without_auth_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1234\n")
    with pytest.raises(ConfigError, match="no \\[auth\\] secret"):
        load_settings(path, environ={})


def test_algorithm_families_cannot_mix(tmp_path: Path) -> None:
    key = tmp_path / "pub.pem"
    key.write_text("x")
    path = write(tmp_path, f'[auth]\nalgorithms = ["HS256", "RS256"]\npublic_key_file = "{key}"\n')
    with pytest.raises(ConfigError, match="mixes"):
        load_settings(path, environ={})
    path = write(tmp_path, f'[auth]\nalgorithms = ["none"]\nsecret = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="unsupported"):
        load_settings(path, environ={})


def test_plugin_sections_and_enabled(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[auth]\nsecret = "{SECRET}"\n[plugins]\nenabled = ["example"]\n'
        '[plugins.example]\ngreeting = "Hi"\n',
    )
    settings = load_settings(path, environ={"VIRTWIRE_PLUGINS__EXAMPLE__GREETING": "Hey"})
    assert settings.enabled_plugins == ["example"]
    assert settings.plugin_sections == {"example": {"greeting": "Hey"}}


def test_bad_env_name() -> None:
    with pytest.raises(ConfigError, match="VIRTWIRE_PORT"):
        load_settings(data={"auth": {"secret": SECRET}}, environ={"VIRTWIRE_PORT": "1"})


def test_locale_checked() -> None:
    with pytest.raises(ConfigError, match="locale"):
        load_settings(data={"auth": {"secret": SECRET}, "server": {"locale": "xx"}}, environ={})


def test_hmac_secrets_must_be_as_long_as_the_hash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings(write(tmp_path, '[auth]\nsecret = "sixteen-chars-xx"\n'), environ={})
    long_enough = "x" * 32
    assert load_settings(write(tmp_path, f'[auth]\nsecret = "{long_enough}"\n'), environ={})
    with pytest.raises(ConfigError, match="at least 64"):
        load_settings(
            write(tmp_path, f'[auth]\nsecret = "{long_enough}"\nalgorithms = ["HS512"]\n'),
            environ={},
        )
