"""Business rules shared by the HTTP API (`api/`) and the Celery workers (`workers/`)."""
