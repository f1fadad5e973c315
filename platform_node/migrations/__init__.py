"""The platform's schema revisions (Alembic; see :mod:`veil.migrations`)."""
