"""Alembic's entry point for this history: every revision runs on the connection the
caller passed (:func:`veil.migrations.run_environment`)."""

from alembic import context

from veil.migrations import run_environment

run_environment(context)
