"""Replicate's HTTP API (``/replicate/v1``): models, versions, predictions and trainings on
Pixelmint's catalog, custom models and jobs (``service.py``), with Replicate's errors
(``errors.py``), for the official ``replicate`` SDK with ``base_url="http://host/replicate"``."""
