"""Secret files: read at start, re-read when changed or on reload, old value kept on failure."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge_node.config import load_config
from edge_node.errors import ConfigError
from edge_node.secrets import SecretFile, SecretFiles

SECRET = "sk_test_first_0123456789"
ROTATED = "sk_test_second_9876543210"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secret_path(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    return path


class TestStart:
    def test_the_secret_is_the_file_without_surrounding_whitespace(self, secret_path: Path) -> None:
        """`SecretFile(path).value()` is the file's text, trailing newline dropped."""
        assert SecretFile(secret_path).value() == SECRET

    @pytest.mark.parametrize("problem", ["missing", "empty", "directory", "binary"])
    def test_an_unusable_file_at_start_is_a_config_error(
        self, tmp_path: Path, problem: str
    ) -> None:
        """At start a missing, empty, non-file or non-UTF-8 secret is a ConfigError naming the
        setting and the path, so the node refuses to start rather than run without it."""
        path = tmp_path / "secret"
        if problem == "empty":
            path.write_text("\n")
        elif problem == "directory":
            path.mkdir()
        elif problem == "binary":
            path.write_bytes(b"\xff\xfe")
        with pytest.raises(ConfigError) as raised:
            SecretFile(path, name="stripe.api_key_file")
        message = str(raised.value)
        assert message.startswith("stripe.api_key_file: ")
        assert str(path) in message

    def test_an_empty_file_may_mean_no_secret(self, tmp_path: Path) -> None:
        """With allow_empty an empty file is the empty secret (an optional secret unset)."""
        path = tmp_path / "previous"
        path.write_text("")
        assert SecretFile(path, allow_empty=True).value() == ""

    def test_the_secret_is_never_in_its_repr(self, secret_path: Path) -> None:
        """Printing or logging the object shows the path, never the secret."""
        assert SECRET not in repr(SecretFile(secret_path))


class TestChanges:
    def test_a_changed_file_is_read_after_the_check_interval(self, secret_path: Path) -> None:
        """A rewritten file is noticed at the first use after the check interval, not before:
        checks cost one stat() at most once per interval."""
        clock = Clock()
        secret = SecretFile(secret_path, check_interval=1.0, clock=clock)
        secret_path.write_text(ROTATED)
        clock.now += 0.5
        assert secret.value() == SECRET
        clock.now += 0.6
        assert secret.value() == ROTATED

    def test_a_change_keeping_size_is_noticed_by_mtime(self, secret_path: Path) -> None:
        """A secret of the same length written in place is noticed (mtime and ctime move)."""
        clock = Clock()
        secret = SecretFile(secret_path, check_interval=0, clock=clock)
        same_length = SECRET.replace("first", "third")
        secret_path.write_text(same_length + "\n")
        stat = secret_path.stat()
        os.utime(secret_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert secret.value() == same_length

    def test_without_checks_only_reload_reads_the_file(self, secret_path: Path) -> None:
        """check_interval None (secrets.check_interval_seconds = 0): only reload() re-reads."""
        clock = Clock()
        secret = SecretFile(secret_path, check_interval=None, clock=clock)
        secret_path.write_text(ROTATED)
        clock.now += 3600
        assert secret.value() == SECRET
        assert secret.reload()
        assert secret.value() == ROTATED

    def test_a_vanished_file_keeps_the_secret_and_logs_once(
        self, secret_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A file gone at a check keeps the old secret and logs one error (not one per use)
        that names the file but not the secret; the file's return is picked up."""
        clock = Clock()
        secret = SecretFile(secret_path, name="webhooks.secret_file", check_interval=0, clock=clock)
        secret_path.unlink()
        with caplog.at_level(logging.INFO, logger="edge_node.secrets"):
            for _ in range(5):
                clock.now += 1
                assert secret.value() == SECRET
            assert secret.reload() is False
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "webhooks.secret_file" in errors[0].getMessage()
        assert SECRET not in caplog.text
        secret_path.write_text(ROTATED)
        clock.now += 1
        assert secret.value() == ROTATED
        assert ROTATED not in caplog.text

    def test_an_emptied_file_keeps_the_secret(self, secret_path: Path) -> None:
        """A file truncated mid-rotation is not taken for an empty secret."""
        secret = SecretFile(secret_path)
        secret_path.write_text("")
        assert secret.reload() is False
        assert secret.value() == SECRET


class TestSecretFiles:
    def test_one_reload_rereads_every_file(self, tmp_path: Path) -> None:
        """SecretFiles.reload() (the daemon's SIGHUP) re-reads all secrets it opened, and
        opening one path twice gives the same object."""
        files = SecretFiles(check_interval=None)
        paths = [tmp_path / "a", tmp_path / "b"]
        for path in paths:
            path.write_text("old-" + path.name)
        opened = [files.open(path) for path in paths]
        assert files.open(paths[0]) is opened[0]
        for path in paths:
            path.write_text("new-" + path.name)
        assert files.reload()
        assert [s.value() for s in opened] == ["new-a", "new-b"]
        paths[1].unlink()
        assert files.reload() is False
        assert opened[1].value() == "new-b"


class TestSystemdCredentials:
    def test_a_credential_path_is_expanded(self) -> None:
        """`$CREDENTIALS_DIRECTORY/<name>` becomes the directory systemd gave this run."""
        config = load_config(
            environ={
                "CREDENTIALS_DIRECTORY": "/run/credentials/edge-node.service",
                "EDGE_NODE_WEBHOOKS_SECRET_FILE": "$CREDENTIALS_DIRECTORY/stripe-whsec",
            }
        )
        assert config.webhooks.secret_file == "/run/credentials/edge-node.service/stripe-whsec"

    def test_a_credential_path_outside_systemd_is_a_config_error(self) -> None:
        """Without CREDENTIALS_DIRECTORY the setting cannot be resolved: say so at start."""
        with pytest.raises(ConfigError, match=r"webhooks\.previous_secret_file names a systemd"):
            load_config(
                environ={"EDGE_NODE_WEBHOOKS_PREVIOUS_SECRET_FILE": "$CREDENTIALS_DIRECTORY/old"}
            )
