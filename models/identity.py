"""Identifiers derived from a referral's natural key, so retries land on one workflow.

The id is a hash of the force and the police reference: it holds no personal data, so it
may appear in workflow ids, URLs and logs. The human-facing reference is cut from the same
hash, in Crockford base32 (no I, L, O, U), fixed width so that no reference is a prefix of
another.
"""

from __future__ import annotations

import hashlib
import json

from models.payloads import ReferralDetails

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def normalise(text: str) -> str:
    """Whitespace collapsed and case folded: how forces and references are compared."""
    return " ".join(text.split()).casefold()


def referral_key(force: str, police_reference: str) -> bytes:
    """SHA-256 of the normalised (force, police reference) pair."""
    raw = f"{normalise(force)}\x00{normalise(police_reference)}".encode()
    return hashlib.sha256(raw).digest()


def referral_id(force: str, police_reference: str) -> str:
    """The referral's id: 32 hex characters of the key."""
    return referral_key(force, police_reference).hex()[:32]


def workflow_id(referral_id_: str) -> str:
    """The Temporal workflow id of a referral."""
    return f"referral-{referral_id_}"


def reference_for(referral_id_: str) -> str:
    """Human-facing reference, e.g. RT-7K3F9-QX2MA (50 bits of the id)."""
    number = int(referral_id_[:13], 16) >> 2  # 52 bits -> 50 bits
    chars = []
    for _ in range(10):
        chars.append(_CROCKFORD[number & 31])
        number >>= 5
    text = "".join(reversed(chars))
    return f"RT-{text[:5]}-{text[5:]}"


def fingerprint(details: ReferralDetails) -> str:
    """Hash of the submitted content, to tell a duplicate from a conflicting reuse of a key."""
    canonical = json.dumps(details.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
