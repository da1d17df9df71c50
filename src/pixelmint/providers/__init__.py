"""Image-generation backends behind one interface (``base.py``).

- ``procedural`` (always) and ``diffusers`` (optional extra, a local pipeline folder) render in
  process: ``Provider.generate(request, *, progress)``.
- ``fal``, ``replicate`` and ``openai`` (any OpenAI-compatible images endpoint) are
  ``RemoteProvider``s: ``submit`` → ``status`` / signed webhook (``verify_webhook``) →
  ``result``; ``generate`` chains them with polling; ``submit_training`` / ``training_result`` /
  ``train`` for LoRA trainings (fal, Replicate). Registered by ``registry.Providers.from_settings``
  only when their credentials are set; ``Providers.remote(name)`` tells the two kinds apart.

Every failure is a ``ProviderError`` with a stable ``code`` and ``retryable``; webhook checks raise
``WebhookVerificationError`` (a ``PixelmintError`` with the HTTP status to answer). Protocols:
``../shared/reference/protocols.md``; tests run the official SDKs against local fake servers
(``tests/providers/``).
"""
