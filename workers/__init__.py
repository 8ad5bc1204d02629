"""Celery worker and beat: thin translation of messages into calls on `shared/`."""
