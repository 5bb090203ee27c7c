"""JSON log lines: one object per line, extra fields kept, the level honoured, secrets masked."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from edge_node.logs import CHATTY_LOGGERS, REQUEST_ID, configure_logging, mask_secrets


@contextlib.contextmanager
def json_logs(level: str) -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the root logger is put back as it was afterwards."""
    root = logging.getLogger()
    handlers, previous_level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging(level, buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(previous_level)
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.captureWarnings(False)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    with json_logs("info") as buffer:
        yield buffer


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestJsonLines:
    def test_each_record_is_one_json_object_with_its_fields(self, stream: io.StringIO) -> None:
        """A record, even with a newline in its message, is one line of JSON holding time,
        level, logger, message, the `extra=` fields and the current request id."""
        token = REQUEST_ID.set("req-1")
        try:
            logging.getLogger("edge_node.test").warning(
                "two\nlines %d", 2, extra={"tenant_id": "t-1"}
            )
        finally:
            REQUEST_ID.reset(token)
        (line,) = lines(stream)
        assert line["level"] == "warning"
        assert line["logger"] == "edge_node.test"
        assert line["message"] == "two\nlines 2"
        assert (line["tenant_id"], line["request_id"]) == ("t-1", "req-1")
        assert str(line["time"]).endswith("+00:00")

    def test_an_exception_is_kept_in_the_same_line(self, stream: io.StringIO) -> None:
        """log.exception puts the traceback in `exception`, still on one line."""
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("edge_node.test").exception("failed")
        (line,) = lines(stream)
        assert "ValueError: boom" in str(line["exception"])
        assert "request_id" not in line

    def test_the_stripe_sdks_call_lines_are_written_only_at_debug(
        self, stream: io.StringIO
    ) -> None:
        """At info the SDK's per-call info lines are dropped, its warnings kept."""
        logging.getLogger("stripe").info("Request to Stripe api")
        logging.getLogger("stripe").warning("retrying")
        assert [line["message"] for line in lines(stream)] == ["retrying"]

    def test_records_below_the_level_are_dropped(self, stream: io.StringIO) -> None:
        """At level info a debug record writes nothing; configuring again does not duplicate."""
        configure_logging("info", stream)
        logging.getLogger("edge_node.test").debug("hidden")
        logging.getLogger("edge_node.test").info("shown")
        assert [line["message"] for line in lines(stream)] == ["shown"]


class TestMasking:
    @pytest.mark.parametrize(
        ("text", "masked"),
        [
            ("key enk_0123456789abcdef_Zx9-secretpart", "key enk_0123456789abcdef_<redacted>"),
            ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJ4In0.c2ln", "Bearer <redacted>"),
            ("secret whsec_abc123XYZ", "secret <redacted>"),
            ("stripe sk_test_51Habc and rk_live_9", "stripe <redacted> and <redacted>"),
            ("postgresql://edge:hunter2@db/central", "postgresql://edge:<redacted>@db/central"),
            ("tenant 8e0c1d2a ok", "tenant 8e0c1d2a ok"),
        ],
    )
    def test_credential_shapes_are_masked(self, text: str, masked: str) -> None:
        """API key secrets, JWTs, webhook secrets, Stripe keys and DSN passwords are masked;
        ordinary text is not."""
        assert mask_secrets(text) == masked

    def test_a_logged_secret_is_masked_in_the_line(self, stream: io.StringIO) -> None:
        """Even a secret passed by mistake as an argument or an extra field is not written."""
        logging.getLogger("edge_node.test").error(
            "oops %s", "whsec_leaked0123", extra={"key": "sk_test_leaked456"}
        )
        text = stream.getvalue()
        assert "leaked" not in text
        assert len(lines(stream)) == 1
