"""A FastAPI service that sends celeriac tasks and awaits their results on its event loop.

``tasks`` holds the app and the tasks (what the worker imports); ``api`` the web service. Run
from ``examples/``, each in its own terminal (README.md has the Redis variant)::

    celeriac -A fastapi_service.tasks worker -l info
    uvicorn fastapi_service.api:api
"""
