"""humanlm: a next-token prediction game that logs human guesses beside a base model's logits.

The package root imports nothing, so any module can be imported on its own without pulling in
Flask; the application factory is `webapp.app.create_app` and the version is `webapp.version`.
"""
