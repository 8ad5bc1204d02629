"""Plumbing every process needs: settings, the database and its migrations, logging, Redis locks,
Celery configuration."""
