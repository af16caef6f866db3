"""Signed acknowledgement links: bound to one referral and hand-off, and expiring."""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from models.enums import Team

ACK_LINK_MAX_AGE_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class AckClaim:
    """What a valid acknowledgement link stands for."""

    referral_id: str
    handoff_seq: int
    team: Team


class AckLinkError(Exception):
    """The link is forged, malformed or expired; `expired` tells which."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class AckLinks:
    """Makes and checks the links put in emails."""

    def __init__(self, secret: str, public_url: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="referral-ack-link")
        self.public_url = public_url.rstrip("/")

    def token(self, referral_id: str, handoff_seq: int, team: Team) -> str:
        """A signed token for one hand-off."""
        return self._serializer.dumps([referral_id, handoff_seq, team.value])

    def ack_url(self, referral_id: str, handoff_seq: int, team: Team) -> str:
        """The full acknowledgement link."""
        return f"{self.public_url}/ack/{self.token(referral_id, handoff_seq, team)}"

    def referral_url(self, referral_id: str) -> str:
        """The referral's page."""
        return f"{self.public_url}/referrals/{referral_id}"

    def check(self, token: str, max_age: int = ACK_LINK_MAX_AGE_SECONDS) -> AckClaim:
        """The claim in a token, or AckLinkError."""
        try:
            referral_id, handoff_seq, team = self._serializer.loads(token, max_age=max_age)
            return AckClaim(str(referral_id), int(handoff_seq), Team(team))
        except SignatureExpired:
            raise AckLinkError("this link has expired", expired=True) from None
        except (BadSignature, ValueError, TypeError):
            raise AckLinkError("this link is not valid") from None
