"""docs/configuration.md is generated from the configuration schema and cannot drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge_node.config import env_name, iter_settings
from edge_node.config.doc import DOC_PATH, REGENERATE, render


class TestConfigurationDoc:
    def test_committed_page_matches_the_schema(self) -> None:
        """The committed docs/configuration.md is exactly what the schema renders to now."""
        assert DOC_PATH.read_text() == render(), (
            f"docs/configuration.md differs from edge_node/config/__init__.py: regenerate it with"
            f" `.venv/bin/{REGENERATE}` and commit the result"
        )

    def test_every_setting_has_a_row_with_its_environment_variable_and_doc(self) -> None:
        """Each setting's dotted key, environment variable and doc text are in its row."""
        rows = {line.split(" | ")[0]: line for line in render().splitlines() if line[:3] == "| `"}
        for dotted, field in iter_settings():
            row = rows[f"| `{dotted}`"]
            assert f"`{env_name(dotted)}`" in row
            assert field.metadata["doc"].replace("|", "\\|") in row

    def test_bounds_and_defaults_come_from_the_schema(self) -> None:
        """A bounded setting shows its default and both bounds as the schema declares them."""
        row = next(line for line in render().splitlines() if line.startswith("| `server.port`"))
        assert "| integer | `8080` | 0 to 65535 | `EDGE_NODE_SERVER_PORT` |" in row

    def test_check_mode_fails_on_a_stale_page(self, tmp_path: Path) -> None:
        """`--check` exits 0 for the committed page and 1, naming the command, for a stale one."""
        stale = tmp_path / "configuration.md"
        stale.write_text(render().replace("`8080`", "`8081`"))
        command = [sys.executable, "-m", "edge_node.config.doc", "--check"]
        fresh = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert fresh.returncode == 0, fresh.stderr
        done = subprocess.run(
            [*command, "--output", str(stale)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert REGENERATE in done.stderr
