"""Configuration: defaults, TOML, environment overrides and operator-actionable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.config import Config, env_name, iter_settings, load_config
from edge_node.errors import ConfigError
from edge_node.usage.operations import OPERATIONS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge-node.toml"
    path.write_text(text)
    return path


class TestDefaults:
    def test_embedded_defaults_need_no_file(self) -> None:
        """With no file and no environment the node runs standalone on 127.0.0.1:8080 in ./var."""
        config = load_config(environ={})
        assert (config.server.host, config.server.port, config.data_dir) == (
            "127.0.0.1",
            8080,
            "./var",
        )
        assert config.rate_limit.per_minute == 1000
        assert config.node_id

    def test_every_setting_has_documentation_and_an_environment_name(self) -> None:
        """Each leaf setting documents itself and maps to one EDGE_NODE_* variable."""
        settings = dict(iter_settings())
        assert "rate_limit.per_minute" in settings
        assert env_name("rate_limit.per_minute") == "EDGE_NODE_RATE_LIMIT_PER_MINUTE"
        assert all(f.metadata["doc"] for f in settings.values())


class TestSources:
    def test_file_then_environment_then_flags(self, tmp_path: Path) -> None:
        """The environment overrides the file and explicit overrides beat both."""
        path = write(
            tmp_path, "[server]\nport = 9000\nhost = '0.0.0.0'\n[rate_limit]\nper_minute = 50\n"
        )
        config = load_config(
            path, environ={"EDGE_NODE_SERVER_PORT": "9100"}, overrides={"server.host": "127.0.0.2"}
        )
        assert (config.server.port, config.server.host, config.rate_limit.per_minute) == (
            9100,
            "127.0.0.2",
            50,
        )

    def test_environment_reaches_every_kind_of_setting(self) -> None:
        """Integers, floats, choices, strings and lists of tables all come from the environment."""
        config = load_config(
            environ={
                "EDGE_NODE_DATA_DIR": "/srv/edge",
                "EDGE_NODE_SERVER_SHUTDOWN_GRACE_SECONDS": "2.5",
                "EDGE_NODE_STORAGE_SYNCHRONOUS": "full",
                "EDGE_NODE_AUTH_JWT_KEYS": '[{"algorithm": "RS256", "file": "/k.pem", "kid": "a"}]',
            }
        )
        assert config.data_dir == "/srv/edge"
        assert config.server.shutdown_grace_seconds == 2.5
        assert config.storage.synchronous == "full"
        assert config.auth.jwt.keys[0].algorithm == "RS256"
        assert isinstance(config, Config)


class TestListsOfStrings:
    def test_from_the_file_and_from_a_json_environment_variable(self, tmp_path: Path) -> None:
        """A list of strings (central.dsns) comes from a TOML array or a JSON array in the
        environment, which wins; absent, it is empty (a standalone node)."""
        path = write(tmp_path, '[central]\ndsns = ["postgresql://a/db", "postgresql://b/db"]\n')
        assert load_config(path, environ={}).central.dsns == (
            "postgresql://a/db",
            "postgresql://b/db",
        )
        environ = {"EDGE_NODE_CENTRAL_DSNS": '["postgresql://c/db"]'}
        assert load_config(path, environ=environ).central.dsns == ("postgresql://c/db",)
        assert load_config(environ={}).central.dsns == ()

    @pytest.mark.parametrize(
        ("text", "environ", "message"),
        [
            ("[central]\ndsns = 'postgresql://a/db'\n", {}, "central.dsns must be a list"),
            ("[central]\ndsns = [5432]\n", {}, "central.dsns[0] must be a string, got 5432"),
            ("", {"EDGE_NODE_CENTRAL_DSNS": "[true]"}, "central.dsns[0] must be a string"),
            ("", {"EDGE_NODE_CENTRAL_DSNS": "postgresql://a"}, "must be a JSON array"),
        ],
    )
    def test_items_must_be_strings(
        self, tmp_path: Path, text: str, environ: dict[str, str], message: str
    ) -> None:
        """A list setting that is not a list, or holds a non-string, names the key and item."""
        with pytest.raises(ConfigError) as raised:
            load_config(write(tmp_path, text), environ=environ)
        assert message in str(raised.value)


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "environ", "message"),
        [
            (
                "[rate_limit]\nper_minute = -3\n",
                {},
                "rate_limit.per_minute must be at least 1, got -3",
            ),
            ("[server]\nprot = 1\n", {}, "unknown setting server.prot (did you mean server.port?)"),
            ("[server]\nport = '8080'\n", {}, "server.port must be an integer, got '8080'"),
            ("[server]\nport = 70000\n", {}, "server.port must be at most 65535"),
            ("", {"EDGE_NODE_SERVER_PORT": "abc"}, "server.port must be an integer, got 'abc'"),
            (
                "[storage]\nsynchronous = 'off'\n",
                {},
                "storage.synchronous must be one of 'normal', 'full'",
            ),
            (
                "[[auth.jwt.keys]]\nalgorithm = 'none'\n",
                {},
                "auth.jwt.keys[0].algorithm must be one of",
            ),
            ("server = 3\n", {}, "server must be a table"),
            ("node_id = 'has space'\n", {}, "node_id must be 1-63 letters"),
            ("[server\n", {}, "is not valid TOML"),
            (
                "",
                {"EDGE_NODE_AUTH_JWT_KEYS": "not json"},
                "EDGE_NODE_AUTH_JWT_KEYS must be a JSON array",
            ),
        ],
    )
    def test_invalid_values_name_the_key(
        self, tmp_path: Path, text: str, environ: dict[str, str], message: str
    ) -> None:
        """A bad value fails at start with a message naming the key and what is wrong."""
        with pytest.raises(ConfigError) as raised:
            load_config(write(tmp_path, text), environ=environ)
        assert message in str(raised.value)

    def test_missing_file_is_reported(self, tmp_path: Path) -> None:
        """A configuration file that does not exist is an error, not silently the defaults."""
        with pytest.raises(ConfigError, match="does not exist"):
            load_config(tmp_path / "absent.toml", environ={})


class TestMeterUnits:
    def test_each_operation_of_the_table_is_a_documented_setting(self) -> None:
        """[meter.units] has one setting per operation of the table, in its order, named by
        the operation, defaulting to its units and documented with its name and what it is."""
        settings = {
            dotted.removeprefix("meter.units."): field
            for dotted, field in iter_settings()
            if dotted.startswith("meter.units.")
        }
        assert list(settings) == [operation.setting for operation in OPERATIONS]
        for operation in OPERATIONS:
            field = settings[operation.setting]
            assert field.default == operation.default_units
            assert f"`{operation.name}`, {operation.what}" in field.metadata["doc"]

    def test_each_operation_reads_its_units_from_the_file_or_the_environment(
        self, tmp_path: Path
    ) -> None:
        """units(operation name) gives the value set for that operation, from TOML or from its
        EDGE_NODE_METER_UNITS_* variable, and the default for the others."""
        for number, operation in enumerate(OPERATIONS, start=2):
            path = write(tmp_path, f"[meter.units]\n{operation.setting} = {number}\n")
            from_file = load_config(path, environ={}).meter.units
            variable = env_name(f"meter.units.{operation.setting}")
            from_env = load_config(environ={variable: str(number)}).meter.units
            for other in OPERATIONS:
                expected = number if other is operation else other.default_units
                assert from_file.units(other.name) == from_env.units(other.name) == expected

    def test_negative_units_are_refused(self) -> None:
        """Units are at least 0, with a message naming the setting."""
        with pytest.raises(ConfigError, match=r"meter\.units\.score_read"):
            load_config(environ={"EDGE_NODE_METER_UNITS_SCORE_READ": "-1"})


class TestExampleFile:
    def test_example_documents_every_setting_with_its_default(self) -> None:
        """config/edge-node.example.toml loads, names every setting, and shows the defaults."""
        example = Path(__file__).resolve().parents[2] / "config" / "edge-node.example.toml"
        loaded = load_config(example, environ={})
        defaults = load_config(environ={})
        assert loaded == defaults
        text = example.read_text()
        for dotted, _ in iter_settings():
            assert f"\n{dotted.rsplit('.', 1)[-1]} = " in text, dotted
