"""The shipped systemd unit: it verifies, and it asks for what the daemon relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edge-node.service"
INSTALLED_AT = "/opt/edge-node/bin/edge-node"


def unit_settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit's [Service] section, repeated keys kept in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


class TestSystemdUnit:
    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
    def test_systemd_analyze_verify_passes(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` finds nothing to report in the unit, with its ExecStart
        pointing where this checkout's edge-node is installed (verify checks that it exists)."""
        installed = Path(sys.executable).with_name("edge-node")
        unit = tmp_path / UNIT.name
        unit.write_text(UNIT.read_text().replace(INSTALLED_AT, str(installed)))
        done = subprocess.run(
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, "")

    def test_the_unit_asks_for_notify_watchdog_sandbox_and_credentials(self) -> None:
        """Type=notify with a watchdog, restart on failure, a state directory for a dedicated
        user, a strict read-only system, no privileges or capabilities, and the secrets as
        credentials: the things the daemon and docs/systemd.md count on."""
        settings = unit_settings()
        wanted = {
            "Type": "notify",
            "Restart": "on-failure",
            "User": "edge-node",
            "StateDirectory": "edge-node",
            "ProtectSystem": "strict",
            "NoNewPrivileges": "yes",
            "CapabilityBoundingSet": "",
            "NotifyAccess": "main",
        }
        assert {key: settings.get(key, [None])[0] for key in wanted} == wanted
        assert settings["WatchdogSec"][0].endswith("s")
        credentials = {value.split(":", 1)[0] for value in settings["LoadCredential"]}
        assert {"stripe-api-key", "webhook-secret", "jwt-hs256"} <= credentials
        assert settings["ExecStart"][0].startswith(INSTALLED_AT + " ")
