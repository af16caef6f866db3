"""Alembic migrations of the read model; run by `referrals migrate`."""
