"""The provider's schema revisions (Alembic; see :mod:`veil.migrations`)."""
