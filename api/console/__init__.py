"""The operator console (docs/contract.md §11), served by `api` under `/console`.

`routes.setup(app)` mounts it (api/app.py calls it). Modules: `session` (signed cookie, CSRF),
`guard` (sign-in, the check every page goes through), `queries` (reads), `spans` and `picture`
(the pure history → picture), `pages` (search, customer, failed work), `overview` (the live
overview). Templates in `templates/`, the few static files in `static/`; no build step, no CDN.
"""
