"""The app-facing API (docs/contract.md §10): `python -m api`, the Procfile's `api:` line.

See `api/app.py` for how the app is put together and how the operator console mounts itself.
"""
