"""`keras-maskrcnn serve`: an exported SavedModel behind TF Serving's REST API, plus `:detect`
for apps (pasted masks in one round trip) and a browser page (docs/serving.md).

Modules: `model` loads the SavedModel and runs its signatures; `batching` joins concurrent
requests into one call; `tf_serving_api` speaks TF Serving's JSON (paths, predict bodies,
status, metadata, errors); `detect` builds `:detect` answers with the encodings of `masks`;
`metrics` keeps Prometheus counters; `app` is the Starlette app; `server` runs it under
uvicorn with graceful shutdown. Starlette and uvicorn come with the `serve` extra; nothing
here is imported by the rest of the package.
"""
