"""The web console for admins (``iris web``; docs/web.md).

Nothing heavy is imported here: ``bots.settings`` reads ``bots.web.config``, and Starlette,
Jinja2 and uvicorn load only when the console is served.
"""
