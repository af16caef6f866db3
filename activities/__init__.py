"""Temporal activities: every side effect of a referral's workflow."""
