"""bandit.settings as pure functions: environment variables and flags into one frozen object,
errors that name the setting and its bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bandit.settings import Settings, SettingsError


def test_environment_variables_then_flags() -> None:
    settings = Settings.from_env({"BANDIT_PORT": "9000", "BANDIT_REFRESH_INTERVAL_S": "0.5",
                                  "BANDIT_REQUIRE_DECISION_IDS": "yes",
                                  "BANDIT_API_KEYS_FILE": "/etc/keys",
                                  "BANDIT_CORS_ORIGINS": "https://a.example, https://b.example",
                                  "BANDIT_MAX_CONNECTIONS": "100"}, port=9100, host=None)
    assert settings.port == 9100  # the flag wins
    assert settings.host == "127.0.0.1"  # a flag left out keeps the default
    assert settings.refresh_interval_s == 0.5 and settings.require_decision_ids is True
    assert settings.api_keys_file == Path("/etc/keys") and settings.max_connections == 100
    assert settings.cors_origin_list == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(("environment", "message"), [
    ({"BANDIT_PORT": "eighty"}, "BANDIT_PORT: 'eighty' is not a valid value"),
    ({"BANDIT_PORT": "70000"}, "port: 70000 is not a valid value"),
    ({"BANDIT_REQUIRE_DECISION_IDS": "maybe"}, "is not true or false"),
    ({"BANDIT_REFRESH_INTERVAL_S": "nan"}, "refresh_interval_s: nan"),
    ({"BANDIT_MAX_STALE_S": "1"}, "max_stale_s: 1.0"),
    ({"BANDIT_REDIS_URL": "memcached://h:1"}, "redis_url: 'memcached://h:1' is not a redis://"),
    ({"BANDIT_CORS_ORIGINS": "evil.example"}, "cors_origins: 'evil.example'"),
    ({"BANDIT_KEY_PREFIX": "a{b"}, "key_prefix"),
    ({"BANDIT_MAX_CONNECTIONS": "0"}, "max_connections: 0"),
    # A retention over 64 bits started, then every stats answer was a 500.
    ({"BANDIT_LOG_MAX_RECORDS": "99999999999999999999"},
     "log_max_records: 99999999999999999999 is not a valid value (allowed: from 1 to 10^12)"),
    ({"BANDIT_LOG_MAX_AGE_S": "1e300"}, "log_max_age_s: 1e+300 is not a valid value"),
    ({"BANDIT_LOG_BUFFER_RECORDS": "10"},
     "log_buffer_records: 10 is not a valid value (allowed: from log_flush_records (1000)"),
    ({"BANDIT_LOG_FLUSH_INTERVAL_S": "0"}, "log_flush_interval_s: 0.0"),
    # Webhook URLs no request could be sent to stop the service at start, saying why, without
    # showing their path (often the secret); these started and failed every check before.
    ({"BANDIT_ALERT_WEBHOOK_URLS": "http://[::1,https://ok.example/x"},
     "BANDIT_ALERT_WEBHOOK_URLS: 'http://[::1' is not a usable http(s) URL: Invalid IPv6 URL"),
    ({"BANDIT_ALERT_WEBHOOK_URLS": "http://127.0.0.1:99999/T0/secret"},
     "'http://127.0.0.1:99999/...' is not a usable http(s) URL: Port out of range"),
    ({"BANDIT_ALERT_WEBHOOK_URLS": "javascript:alert(1)"}, "the scheme must be http or https"),
    ({"BANDIT_ALERT_WEBHOOK_URLS": "http://"}, "'http://' is not a usable http(s) URL: it names"),
    ({"BANDIT_PUBLIC_URL": "https://dash board"}, "BANDIT_PUBLIC_URL: 'https://dash board'"),
])
def test_a_bad_value_names_the_setting(environment: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(environment)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert settings.with_(port=1).port == 1 and settings.port == 8080
