"""Ids, references and fingerprints derived from a referral's natural key."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from models import identity
from tests.conftest import sample_details

REFERENCE = re.compile(r"^RT-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$")


class TestReferralId:
    """One id per force and police reference, whatever the spacing or case."""

    def test_normalised(self) -> None:
        a = identity.referral_id("Northamptonshire Police", "NP-1")
        assert a == identity.referral_id("  northamptonshire   POLICE ", "np-1")
        assert a != identity.referral_id("Northamptonshire Police", "NP-2")
        assert a != identity.referral_id("Cumbria Constabulary", "NP-1")
        assert re.fullmatch(r"[0-9a-f]{32}", a)
        assert identity.workflow_id(a) == f"referral-{a}"

    def test_key_parts_cannot_run_together(self) -> None:
        assert identity.referral_id("ab", "c") != identity.referral_id("a", "bc")


class TestReference:
    """Fixed width, so no reference is a prefix of another."""

    @settings(max_examples=300)
    @given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
    def test_fixed_width(self, force: str, police_reference: str) -> None:
        rid = identity.referral_id(force, police_reference)
        assert REFERENCE.match(identity.reference_for(rid))

    def test_distinct_for_many_referrals(self) -> None:
        refs = {identity.reference_for(identity.referral_id("F", f"R-{n}")) for n in range(20_000)}
        assert len(refs) == 20_000


class TestFingerprint:
    """The same content gives the same fingerprint; any change gives another."""

    def test_content_sensitive(self) -> None:
        base = identity.fingerprint(sample_details())
        assert base == identity.fingerprint(sample_details())
        assert base != identity.fingerprint(sample_details(risk="red"))
        assert base != identity.fingerprint(sample_details(summary="something else"))
