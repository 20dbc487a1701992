"""Server configuration: TOML file, command-line values on top, secrets kept hashed."""

from __future__ import annotations

import pytest

from skyshard.service import config
from skyshard.service.errors import ConfigError

TOML = """
catalog = "/data/cat"
host = "0.0.0.0"
mysql_port = 14040
database = "LSST"

[users]
alice = "secret"
bob = "*{bob_hash}"

[tokens]
carol = "tok-carol"

[limits]
timeout_s = 5
max_rows = 10
"""


def test_file_then_command_line(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(TOML.format(bob_hash=config.password_hash("hunter2").upper()))
    cfg = config.load(path, http_port=18080, users=["dave:pw"], tokens=["tok-anon"],
                      limits={"max_rows": 20})
    assert (cfg.host, cfg.mysql_port, cfg.http_port) == ("0.0.0.0", 14040, 18080)
    assert str(cfg.catalog) == "/data/cat" and cfg.database == "LSST"
    assert cfg.limits.timeout_s == 5.0 and cfg.limits.max_rows == 20
    assert cfg.limits.max_concurrent == config.Limits().max_concurrent
    c = cfg.credentials
    assert c.check_password("alice", "secret") and not c.check_password("alice", "x")
    assert c.check_password("bob", "hunter2") and c.check_password("dave", "pw")
    assert c.user_of_token("tok-carol") == "carol" and c.user_of_token("tok-anon") == "token"
    assert c.user_of_token("nope") is None and not c.allow_anonymous


def test_secrets_are_never_described_nor_kept_in_clear(tmp_path):
    cfg = config.load(None, catalog=tmp_path, users=["alice:s3cr3t-pw"],
                      tokens=["bob:t0k3n-value"])
    text = cfg.describe() + repr(cfg)
    assert "s3cr3t-pw" not in text and "t0k3n-value" not in text
    assert "alice" in cfg.describe() and "1 token" in cfg.describe()


def test_authentication_is_required_unless_anonymous(tmp_path):
    with pytest.raises(ConfigError, match="--allow-anonymous"):
        config.load(None, catalog=tmp_path)
    assert config.load(None, catalog=tmp_path, allow_anonymous=True).credentials.allow_anonymous


@pytest.mark.parametrize("text, message", [
    ("catalog = 'x'\nport = 1\n", "unknown setting"),
    ("catalog = 'x'\nallow_anonymous = true\n[limits]\nmax_rowz = 1\n", "max_rowz"),
    ("catalog = 'x'\nallow_anonymous = true\n[limits]\nmax_rows = 'many'\n", "limits"),
    ("catalog = \n", "serve.toml"),
    ("allow_anonymous = true\n", "no catalog"),
    ("catalog = 'x'\nallow_anonymous = true\n[limits]\nresident_share = 1.5\n",
     "resident_share must be between 0"),
    ("catalog = 'x'\nallow_anonymous = true\n[limits]\nscan_threads = -2\n",
     "scan_threads must be 0"),
    ("catalog = 'x'\nallow_anonymous = true\n[limits]\nshared_scans = 'no'\n",
     "shared_scans must be true or false, not 'no'"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "serve.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(path)


def test_bad_command_line_values(tmp_path):
    with pytest.raises(ConfigError, match="NAME:PASSWORD"):
        config.load(None, catalog=tmp_path, users=["alice"])


def test_shared_scans_let_more_scans_run_at_once(tmp_path):
    def limits(**given):
        return config.load(None, catalog=tmp_path, allow_anonymous=True, limits=given).limits

    assert limits().max_scans == 2 and not limits().shared_scans
    assert limits(shared_scans=True).max_scans == config.SHARED_MAX_SCANS
    assert limits(shared_scans=True, max_scans=3).max_scans == 3
