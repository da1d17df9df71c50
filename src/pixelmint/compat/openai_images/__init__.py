"""The OpenAI Images API at ``/openai/v1``, for the official ``openai`` SDK unmodified
(``OpenAI(base_url="http://host/openai/v1", api_key=<Pixelmint API key>)``).

- ``POST /openai/v1/images/generations`` submits through the native flow
  (``flows/generation.submit_generation``: same pricing, free generations, reservation, plan
  concurrency, queue) and waits for the images, as OpenAI's answers with them.
- ``GET /openai/v1/models`` and ``GET /openai/v1/models/{id}``: the catalog and the team's ready
  custom models, by their compat names (``compat/names.py``).
- Errors in OpenAI's envelope, rendered in one place: ``errors.OpenAIRoute``.

Wire format: ``../shared/reference/protocols.md`` §3 (openai/openai-openapi ``openapi.yaml``:
``CreateImageRequest``, ``ImagesResponse``, ``Error``, ``ListModelsResponse``).
"""
