"""Log lines never carry a child's or referrer's personal data."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

# Run in a fresh interpreter, configured exactly as the services configure logging.
SCRIPT = """
import logging, structlog, logs
logs.configure("INFO", json=True)
structlog.get_logger("t").info(
    "referral.received",
    reference="RT-ABCDE-FGHJK",
    children=[{"given_name": "Zebedee", "family_name": "Quixotic", "date_of_birth": "2015-03-01"}],
    payload={"referrer": {"name": "PC A", "phone": "01604 000000"}, "risk": "red"},
    summary="father known for drug supply",
    token="rt_secret",
)
logging.getLogger("third.party").warning("boom", extra={"family_name": "Quixotic"})
"""


def test_personal_fields_masked_at_any_depth() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in run.stderr.strip().splitlines()]
    assert [line["event"] for line in lines] == ["referral.received", "boom"]
    for secret in ("Zebedee", "Quixotic", "2015-03-01", "01604", "drug supply", "rt_secret"):
        assert secret not in run.stderr
    first = lines[0]
    assert first["reference"] == "RT-ABCDE-FGHJK", "non-personal fields are kept"
    assert first["payload"] == {"referrer": "[redacted]", "risk": "red"}
    assert first["children"] == "[redacted]"
