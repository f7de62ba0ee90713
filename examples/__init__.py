"""Examples: bwasync inside web services. Run them from the repository's root as modules
(``python -m examples.aiohttp_app``, ``uvicorn --factory examples.fastapi_app:app_from_env``)."""
